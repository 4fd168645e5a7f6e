"""The live training display on the main process: where the schedule is, how fast, how well."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from nsgan.train.quality import KIND as QUALITY_KIND
from nsgan.train.quality import summary as quality_summary


class TrainingDisplay:
    """A rich progress bar over images seen, its line showing resolution, α, kimg, img/s and losses.

    Off (a no-op) on other ranks or when disabled. On a terminal it redraws live; elsewhere (CI,
    log files) it prints one plain line per metrics row so logs stay readable.
    """

    def __init__(self, total_images: int, enabled: bool = True, start: int = 0, label: str = "train"):
        self.enabled = enabled
        self.total = total_images
        self.progress = None
        self.live = enabled and sys.stdout.isatty()
        self.last_plain = 0.0
        self.label = label
        self.quality = ""  # the last sample-quality summary, shown on the live line
        if not enabled:
            return
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False,
            )
            self.task = self.progress.add_task(label, total=total_images, completed=start, info="starting…")
            self.progress.start()

    def advance(self, images_seen: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=images_seen)

    def update(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        losses = " ".join(f"{k.replace('loss_', '')}={row[k]:.3f}" for k in row if k.startswith("loss_"))
        remaining = max(self.total - row["images_seen"], 0)
        eta = remaining / row["img_s"] if row.get("img_s") else float("nan")
        alpha = f" α={row['alpha']:.2f}" if "alpha" in row else ""  # the comparator's rows have no fade-in
        info = (f"{row['resolution']}px{alpha} kimg {row['kimg']:.1f}/{self.total / 1000:.0f} "
                f"{row.get('img_s') or 0:.0f} img/s {losses}")
        if row.get("skipped_normal") or row.get("skipped_abnormal"):
            info += f" skipped={row.get('skipped_normal', 0)}+{row.get('skipped_abnormal', 0)}"
        if self.progress is not None:
            self.progress.update(self.task, completed=row["images_seen"], info=info + self.quality)
        elif time.monotonic() - self.last_plain > 5.0:
            self.last_plain = time.monotonic()
            print(f"[{self.label}] {info} eta {eta:.0f}s", flush=True)

    def measured(self, row: dict[str, Any]) -> None:
        """A measured row (sample quality): one line now, and its summary on the live line until the next."""
        if not self.enabled or row.get("kind") != QUALITY_KIND:
            return
        self.quality = " " + quality_summary(row)
        line = f"[{self.label}] sample quality at kimg {row['kimg']:g} ({row['resolution']}px, {row.get('at', '')}):{self.quality}"
        if self.progress is not None:
            self.progress.console.print(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

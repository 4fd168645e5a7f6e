"""The scoring progress bar: tiles done of an image, with the rate, on the main process only."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TileProgress:
    """Context for one image's bar; yields an object with `advance(n)` (or None when there is no bar)."""

    def __init__(self, label: str, total: int, enabled: bool):
        self.label, self.total, self.enabled = label, total, enabled
        self._prog: Progress | None = None

    def __enter__(self):
        if not self.enabled:
            return None
        prog = self._prog = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tiles"),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
        )
        task = prog.add_task(self.label, total=self.total, rate="")
        prog.start()
        return _Bar(prog, task)

    def __exit__(self, *exc):
        if self._prog is not None:
            self._prog.stop()


class _Bar:
    def __init__(self, prog: Progress, task):
        self.prog, self.task = prog, task

    def advance(self, n: int) -> None:
        self.prog.advance(self.task, n)
        speed = self.prog.tasks[0].speed
        self.prog.update(self.task, rate=f"{speed:.1f} tiles/s" if speed else "")

"""The loop every training phase runs through: the GAN, the encoder, the comparator, and any phase added later.

A phase says what one step does and what its state holds (`Phase`, in the manner of stylegan2-ada's
phase list and Lightning's `training_step`); `run_phase` owns everything around the steps, once:

  * progress (images seen over all processes, steps, training seconds), which the states save;
  * the metric window: one row of `metrics.jsonl` every `log_every` steps, the phase's own fields
    then the per-key means of its stats, rounded to ROW_DIGITS; the same row to the trackers and the
    live display; on resume the rows logged after the state resumed from are dropped first;
  * a resumable state every `checkpoint_kimg` and at the end;
  * rows a phase measured at its edges (`measured`: the GAN's sample quality), each with its `kind`, to
    metrics.jsonl, the trackers and the display as they come;
  * divergence: every stat of a step must be finite, else EXIT_RUNTIME naming the phase's learning rate;
  * Ctrl-C (one process): stop after the step under way, with a saved state, so a resume is exact;
  * the rank digest: every rank hashes the networks it trained; different hashes are an error.

Files are written by the main process only (metrics, grids, states through the phase).
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate.utils import gather_object

from nsgan.common.atomic import atomic_write_text
from nsgan.common.errors import EXIT_RUNTIME, NsganError
from nsgan.train import tracking
from nsgan.train.common import weights_digest
from nsgan.train.config import TrainConfig
from nsgan.train.display import TrainingDisplay
from nsgan.train.layout import RunLayout

ROW_DIGITS = 6  # window means in metrics rows
RATE_DIGITS = 2  # img_s


@dataclass
class Progress:
    """Where a phase stands; saved in its states, so a resumed phase continues the same count."""

    images_seen: int = 0  # over all processes
    step: int = 0
    seconds: float = 0.0  # training wall time so far (for the ETA and the summary)


@dataclass(frozen=True)
class PhaseInfo:
    """How the runner names and paces a phase."""

    label: str  # the trackers' run (RUN/tb/<label>) and the word errors use
    log_every: int  # steps between metrics rows
    checkpoint_kimg: float  # kimg between periodic states
    lr_key: str  # the config key a divergence message tells the user to lower
    display: str = ""  # the live display's label ("" = label)


class Phase(Protocol):
    """What a phase gives the runner. `FixedLengthPhase` supplies the boundary hooks of a phase that runs to `total`."""

    info: PhaseInfo
    cfg: TrainConfig
    acc: Any  # the Accelerator: ranks, trackers, barriers
    layout: RunLayout  # the phase's own run folder
    progress: Progress
    resumed: bool  # continues a saved state (its metrics rows after that state are dropped)
    total: int  # images (over all processes) at which the phase ends: the display's goal

    @property
    def batch(self) -> int:
        """Per-process batch of the next step (read after `next_step`)."""

    def starting(self) -> None:
        """Once, after the trackers open: what a phase shows or writes at its start (all processes call it)."""

    def next_step(self) -> bool:
        """Before each step and once after the last: decisions at the phase's edges; False when it is done."""

    def step(self) -> dict[str, float]:
        """One optimisation step on this process; returns its stats (floats) for the window."""

    def metrics_row(self, img_s: float) -> dict[str, Any]:
        """The row's own fields (images seen, kimg, step, stage, ...), before the window means."""

    def save_checkpoint(self) -> None:
        """A resumable state at the current progress (a collective: every process calls it)."""

    def saved_periodic(self) -> None:
        """After a periodic state (not the final one): e.g. a sample grid at that point."""

    def trained(self) -> list[torch.nn.Module]:
        """The networks this phase trains, whose weights must end equal on every rank."""

    def measured(self) -> list[dict[str, Any]]:
        """Rows measured since last asked (after `next_step` and `saved_periodic`), each with a `kind` and `images_seen`."""


class FixedLengthPhase:
    """A phase that trains to `total` images and shows its progress as grids named `<grid_prefix>-<kimg>kimg.png`
    at the start and at every periodic state (the encoder, the comparator). A subclass calls `bind` first and
    provides `grid_prefix`, `save_grid(name)` and the rest of `Phase`."""

    grid_prefix: str

    def bind(self, cfg: TrainConfig, section: str, run_dir: str | Path, accelerator: Any, resume: bool) -> None:
        """What every such phase holds, paced by its config section (`kimg`, `batch`, `lr`, `log_every`, `checkpoint_kimg`)."""
        keys = getattr(cfg, section)
        self.cfg, self.acc, self.run_dir, self.resumed = cfg, accelerator, Path(run_dir), resume
        self.layout = RunLayout(self.run_dir)
        self.info = PhaseInfo(section, keys.log_every, keys.checkpoint_kimg or cfg.train.checkpoint_kimg, f"{section}.lr")
        self.device = accelerator.device
        self.rank, self.world, self.is_main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
        self.progress = Progress()
        self.total = int(round(keys.kimg * 1000))
        self.batch = keys.batch

    def starting(self) -> None:
        if self.acc.is_main_process and self.progress.images_seen == 0:
            self.save_grid(f"{self.grid_prefix}-000000kimg.png")

    def next_step(self) -> bool:
        return self.progress.images_seen < self.total

    def saved_periodic(self) -> None:
        if self.acc.is_main_process:
            self.save_grid(f"{self.grid_prefix}-{self.progress.images_seen // 1000:06d}kimg.png")

    def measured(self) -> list[dict[str, Any]]:
        return []  # nothing measured besides the steps' stats


class StopAtStepBoundary:
    """A first Ctrl-C asks the runner to stop after the current step (which then saves a state); a second stops at once.

    Saving from inside a step would store a stream already advanced and D already updated but G,
    its EMA and `images_seen` not: a resumed run would then differ from an uninterrupted one. Only
    for one process: with several, each would see the signal at a different step.
    """

    def __init__(self, enabled: bool):
        self.requested = False
        self._previous = None
        # A SIGINT the launcher ignores (a background job, nohup) stays ignored.
        if enabled and threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("nsgan train: stopping after this step (Ctrl-C again to stop at once, without saving)", file=sys.stderr)

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class MetricWindow:
    """The stats since the last metrics row: per-key means, so a stat some steps lack (lazy R1's "r1",
    a comparator batch without a defect) is the mean over the steps that have it."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.started, self.images, self.sums, self.counts = time.perf_counter(), 0, {}, {}

    def add(self, stats: dict[str, float], images: int) -> None:
        self.images += images
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.counts[k] = self.counts.get(k, 0) + 1

    def rate(self) -> float:
        """Images per second over the window."""
        return round(self.images / max(time.perf_counter() - self.started, 1e-9), RATE_DIGITS)

    def means(self) -> dict[str, float]:
        return {k: round(v / self.counts[k], ROW_DIGITS) for k, v in self.sums.items()}


def checkpoint_interval(kimg: float) -> int:
    """Images between periodic states (at least one)."""
    return max(1, int(round(kimg * 1000)))


def truncate_metrics(path: Path, images_seen: int) -> None:
    """Drop metric lines logged after the state we resume from (that progress was lost)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("images_seen", 0) <= images_seen:
                kept.append(line)
        except ValueError:
            continue
    atomic_write_text(path, "".join(l + "\n" for l in kept))


def check_finite(phase: Phase, stats: dict[str, float]) -> None:
    """Every stat of a step must be finite: NaN or inf means the phase diverged (EXIT_RUNTIME)."""
    bad = [k for k, v in stats.items() if not math.isfinite(float(v))]
    if bad:
        raise NsganError(f"{phase.info.label} training diverged at kimg {phase.progress.images_seen / 1000:.1f} "
                         f"(non-finite {', '.join(bad)}: {stats}); lower {phase.info.lr_key} or resume from the last state",
                         EXIT_RUNTIME)


def ranks_in_sync(phase: Phase) -> list[str]:
    """Every rank's digest of the networks the phase trained (a collective); differing ones are an error."""
    mine = weights_digest(phase.trained())
    digests = gather_object([mine]) if phase.acc.num_processes > 1 else [mine]
    if len(set(digests)) != 1:
        raise NsganError(f"ranks ended with different {phase.info.label} weights ({len(set(digests))} distinct digests): "
                         "the processes lost sync", EXIT_RUNTIME)
    return digests


def run_phase(phase: Phase, stop: StopAtStepBoundary | None = None) -> list[str]:
    """Train `phase` from its progress to its end, then save its final state; returns every rank's digest.

    `stop` is the caller's Ctrl-C handler when it spans several phases (`nsgan train`); without one the
    runner installs its own for this phase (when the run has one process).
    """
    own = stop is None
    if own:
        stop = StopAtStepBoundary(enabled=phase.acc.num_processes == 1)
    try:
        _steps(phase, stop)
        phase.save_checkpoint()
        return ranks_in_sync(phase)
    finally:
        if own:
            stop.close()


def _steps(phase: Phase, stop: StopAtStepBoundary) -> None:
    acc, st, info = phase.acc, phase.progress, phase.info
    main, world = acc.is_main_process, acc.num_processes
    if main:
        phase.layout.samples.mkdir(parents=True, exist_ok=True)
        if phase.resumed:
            truncate_metrics(phase.layout.metrics, st.images_seen)
    every = checkpoint_interval(info.checkpoint_kimg)
    next_state = (st.images_seen // every + 1) * every
    display = TrainingDisplay(phase.total, enabled=main and phase.cfg.train.display, start=st.images_seen,
                              label=info.display or info.label)
    metrics = open(phase.layout.metrics, "a") if main else None
    window = MetricWindow()
    try:
        tracking.start(acc, info.label, phase.cfg.to_dict(), step=st.images_seen)  # in <run folder>/tb/<label>
        phase.starting()

        def write_measured() -> None:
            for row in phase.measured():
                if metrics:
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                tracking.log_measured(acc, row, row["images_seen"])
                display.measured(row)

        while True:
            more = phase.next_step()
            write_measured()
            if not more:
                break
            images = phase.batch * world
            t0 = time.perf_counter()
            stats = phase.step()
            st.seconds += time.perf_counter() - t0
            st.images_seen += images
            st.step += 1
            window.add(stats, images)
            check_finite(phase, stats)
            if st.step % info.log_every == 0:
                row = {**phase.metrics_row(window.rate()), **window.means()}
                if metrics:
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                tracking.log_scalars(acc, row, st.images_seen)
                display.update(row)
                window.reset()
            else:
                display.advance(st.images_seen)
            if next_state <= st.images_seen < phase.total:  # the end's state follows the loop
                phase.save_checkpoint()
                phase.saved_periodic()
                write_measured()
                next_state += every
            if stop.requested:  # Ctrl-C during the step just finished: keep it, at a step boundary
                phase.save_checkpoint()
                raise KeyboardInterrupt
    finally:
        display.close()
        if metrics:
            metrics.close()

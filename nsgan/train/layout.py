"""The run folder's layout, named once: the trainer writes it, the CLI, the demo and the experiment scripts read it.

    RUN/config.yaml  run.json  metrics.jsonl  model.safetensors (+ README.md, the model card)
    RUN/samples/     sample grids        RUN/checkpoints/  resumable states      RUN/tb/  trackers
    RUN/encoder/     the encoder phase's own run (same layout: metrics, samples, checkpoints)
    RUN/comparator/  the comparator phase's own run
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.yaml"
SUMMARY = "run.json"
METRICS = "metrics.jsonl"
MODEL = "model.safetensors"
SAMPLES = "samples"
CHECKPOINTS = "checkpoints"
LATEST = "latest.json"  # inside CHECKPOINTS: names the newest complete state
TRACKERS = "tb"
ENCODER_RUN = "encoder"
COMPARATOR_RUN = "comparator"


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run folder (a training run, or a phase's own run under it)."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def model(self) -> Path:
        return self.root / MODEL

    @property
    def samples(self) -> Path:
        return self.root / SAMPLES

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def latest(self) -> Path:
        return self.checkpoints / LATEST

    @property
    def trackers(self) -> Path:
        return self.root / TRACKERS

    @property
    def encoder(self) -> "RunLayout":
        return RunLayout(self.root / ENCODER_RUN)

    @property
    def comparator(self) -> "RunLayout":
        return RunLayout(self.root / COMPARATOR_RUN)

    def resumable(self) -> bool:
        """True when a complete state exists to --resume from."""
        return self.latest.is_file()

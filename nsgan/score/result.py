"""ScoreResult: what scoring one image gives (public as nsgan.ScoreResult)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nsgan.score.choices import Verdict
from nsgan.score.regions import Region


@dataclass
class ScoreResult:
    """One scored image. `map` is the full-resolution map when scored in memory, else None (see map_path)."""

    score: float  # image score, by ScoreOptions.image_score
    verdict: Verdict  # anomalous, normal or uncalibrated (a str enum: compares equal to those strings)
    map: np.ndarray | None
    regions: list[Region]
    thresholds: dict[str, Any]  # postprocess.Thresholds.to_dict(): the report's "thresholds"
    shape: tuple[int, int]
    tile_scores: np.ndarray  # (rows, cols): the AnoGAN tile loss; mean |x − G(z)| where D was skipped (encoder mode, map score); C's tile max for a C that reads no G(E(x))
    map_stats: dict[str, float]
    map_path: Path | None = None
    overlay_path: Path | None = None
    report_path: Path | None = None

    def report(self, source: str = "<array>") -> dict:
        return {
            "image": source,
            "shape": list(self.shape),
            "score": self.score,
            "verdict": self.verdict,
            "thresholds": self.thresholds,
            "map": {**self.map_stats, "file": self.map_path.name if self.map_path else None},
            "tiles": {"rows": int(self.tile_scores.shape[0]), "cols": int(self.tile_scores.shape[1])},
            "regions_bbox_format": "x0, y0, x1, y1 in image pixels, end exclusive",
            "regions": [r.to_dict() for r in self.regions],
        }

"""Post-processing, in one place: an image's map and tile scores -> thresholds, regions, image score, verdict.

As anomalib's PostProcessor: the thresholds come with the model (`nsgan calibrate` stores them in the
model file, a `Calibration`), so a model file scores the same anywhere; where none is stored, the
pixel threshold is made from the image's own map and the verdict says `uncalibrated`. Thresholds
hold only for the settings they were calibrated with; `calibration_mismatch` says what differs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from nsgan.score.alarms import AlarmRate, alarm_sentence
from nsgan.score.choices import ImageScore, Inversion, Residual, TestTimeAugment, ThresholdSource, Verdict
from nsgan.score.options import ScoreOptions
from nsgan.score.regions import Region, find_regions
from nsgan.score.result import ScoreResult

UNCALIBRATED_K = 4.0  # without a pixel threshold, regions are drawn above mean + K·std of the map


@dataclass(frozen=True)
class Calibration:
    """The thresholds entry of a model file, as `nsgan calibrate` writes it (nsgan/evaluate/calibrate.py).

    image/pixel are what scoring applies; search, map and stride the settings they hold for; the rest
    says how they were made (shown on the model card). Fields are in the order the entry is written;
    None fields are left out of `to_dict`, and keys this version does not know are kept in `extra`.
    """

    image: float | None = None
    image_method: str | None = None
    pixel: float | None = None
    pixel_method: str | None = None
    n_normal: int | None = None
    image_f1: float | None = None
    n_abnormal: int | None = None
    pixel_f1: float | None = None
    search: dict[str, Any] | None = None  # SearchConfig.to_dict() of the calibration's scoring
    map: dict[str, Any] | None = None  # PostProcessor.map_settings() of the calibration's scoring
    stride: int | None = None
    alarm: AlarmRate | None = None  # the false-alarm rate the pixel (region) threshold was chosen for, if any
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, entry: dict[str, Any] | None) -> "Calibration":
        known = {f.name for f in fields(cls)} - {"extra"}
        entry = dict(entry or {})
        if isinstance(entry.get("alarm"), dict):
            entry["alarm"] = AlarmRate.from_dict(entry["alarm"])
        return cls(**{k: v for k, v in entry.items() if k in known}, extra={k: v for k, v in entry.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The entry as stored in the model file's metadata (JSON)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra" and getattr(self, f.name) is not None}
        if self.alarm is not None:
            out["alarm"] = self.alarm.to_dict()
        return {**out, **self.extra}


@dataclass(frozen=True)
class Thresholds:
    """The thresholds applied to one image, and where each came from (the report's "thresholds")."""

    image: float | None  # None: no calibrated image threshold, so no verdict
    pixel: float
    pixel_source: str  # a ThresholdSource, or the uncalibrated rule in words
    image_source: ThresholdSource
    warning: str | None = None  # the calibration was made with other settings
    alarms: str = ""  # what the boxes mean: alarms at a stated rate, or not alarms (nsgan/score/alarms.py)

    def to_dict(self) -> dict[str, Any]:
        out = {"image": self.image, "pixel": self.pixel, "pixel_source": self.pixel_source, "image_source": self.image_source,
               "alarms": self.alarms}
        if self.warning:
            out["warning"] = self.warning
        return out


class PostProcessor:
    """Decides, for a scorer's resolved options, stride and the model's calibration, what a map means."""

    def __init__(self, options: ScoreOptions, stride: int, calibration: Calibration, comparator_digest: str | None = None):
        self.options, self.stride, self.calibration = options, stride, calibration
        self.comparator_digest = comparator_digest  # the C whose map this is: thresholds made with another do not hold

    def map_settings(self) -> dict[str, Any]:
        """What the map and the image score depend on besides the search (recorded with thresholds)."""
        o = self.options
        settings = {"residual": o.residual, "map_sigma": o.map_sigma, "image_score": o.image_score}
        if o.residual == Residual.COMPARATOR:
            settings["comparator_digest"] = self.comparator_digest
        if o.tta != TestTimeAugment.NONE:  # absent when none, so entries calibrated before the option still match
            settings["tta"] = o.tta
        return settings

    def calibration_mismatch(self) -> str | None:
        """What differs between the model's calibration and these scoring settings (None: nothing, or uncalibrated)."""
        cal, problems = self.calibration, []
        # an entry from before the inversion modes names none: it was made with the search
        if cal.search and {"mode": Inversion.SEARCH, **cal.search} != self.options.search.to_dict():
            problems.append("other search settings")
        if cal.map and cal.map != self.map_settings():
            problems.append("other map settings (residual, map_sigma, image_score, tta)")
        if cal.stride is not None and int(cal.stride) != self.stride:
            problems.append(f"stride {int(cal.stride)}, scoring uses stride {self.stride}")
        if cal.alarm is not None and int(cal.alarm.min_region_area) != self.options.min_region_area:
            problems.append(f"min_region_area {int(cal.alarm.min_region_area)}, scoring uses {self.options.min_region_area}")
        return "thresholds were calibrated with " + " and ".join(problems) if problems else None

    def thresholds(self, stats: dict[str, float]) -> Thresholds:
        """The image and pixel thresholds for a map with these stats: given, else calibrated, else from the map."""
        cal = self.calibration
        if self.options.pixel_threshold is not None:
            pixel, pixel_source = float(self.options.pixel_threshold), ThresholdSource.GIVEN
        elif cal.pixel is not None:
            pixel, pixel_source = float(cal.pixel), ThresholdSource.CALIBRATED
        else:
            pixel = stats["mean"] + UNCALIBRATED_K * stats["std"]
            pixel_source = f"{ThresholdSource.UNCALIBRATED}: map mean + {UNCALIBRATED_K:g}·std of this image"
        image_source = ThresholdSource.CALIBRATED if cal.image is not None else ThresholdSource.UNCALIBRATED
        source = pixel_source if pixel_source in (ThresholdSource.GIVEN, ThresholdSource.CALIBRATED) else ThresholdSource.UNCALIBRATED
        mismatch = self.calibration_mismatch()
        alarms = alarm_sentence(cal.alarm, source)
        if mismatch and source == ThresholdSource.CALIBRATED and cal.alarm is not None:
            alarms = f"boxes are not alarms at the calibrated rate: {mismatch}"
        return Thresholds(cal.image, pixel, pixel_source, image_source, mismatch, alarms)

    def image_score(self, tile_scores: np.ndarray, stats: dict[str, float]) -> float:
        """The image's score by the (resolved) rule, from its map stats (assembly.MapStats.as_dict) or tile scores."""
        if self.options.image_score == ImageScore.MAP_MAX:
            return float(stats["max"])
        if self.options.image_score == ImageScore.TOP_K_MEAN:
            return float(stats["top_k_mean"])
        return float(tile_scores.max())

    @staticmethod
    def verdict(score: float, th: Thresholds) -> Verdict:
        if th.image is None:
            return Verdict.UNCALIBRATED
        return Verdict.ANOMALOUS if score > float(th.image) else Verdict.NORMAL

    def regions(self, blocks: Iterable[tuple[int, np.ndarray]], th: Thresholds) -> list[Region]:
        """Regions above the pixel threshold from the map's (first row, rows) blocks, top to bottom."""
        return find_regions(blocks, th.pixel, self.options.min_region_area)

    def conclude(self, tile_scores: np.ndarray, st: dict[str, float], shape: tuple[int, int],
                 amap: np.ndarray | None = None) -> tuple[ScoreResult, Thresholds]:
        """The result of one image from its tile scores and map stats (assembly.MapStats.as_dict); its regions now
        when the map is in memory (`amap`), else left to the caller, who reads the map back from its file
        (`regions`, with the thresholds returned here)."""
        th = self.thresholds(st)
        regions = self.regions([(0, amap)], th) if amap is not None else []
        score = self.image_score(tile_scores, st)
        return ScoreResult(score, self.verdict(score, th), amap, regions, th.to_dict(), shape, tile_scores, st), th

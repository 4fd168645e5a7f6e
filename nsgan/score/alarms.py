"""What the boxes on a map mean, in words: alarms at a stated false-alarm rate, or not alarms at all.

A box is an alarm only when its threshold was chosen for a false-alarm rate on held-out normal images
(`nsgan calibrate --false-regions-per-mp R` / `--flagged-share S`, nsgan/evaluate/alarm_rate.py); the
rate is stated as the one-sided upper confidence bound the held-out set showed. Every other box (an
uncalibrated model, a quantile threshold, a threshold given on the command line) marks where the map
is high and says so, so nobody reads a brick wall covered in boxes as 37 defects. The report, the
HTML page and the model card all take their sentence from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from nsgan.common.errors import ModelError


@dataclass(frozen=True)
class AlarmRate:
    """The false-alarm rate a calibrated region threshold was chosen for, and what the held-out normals showed."""

    confidence: float  # of the one-sided upper bounds
    min_region_area: int  # regions smaller than this are not drawn, so not counted: the rate holds for this area
    n_images: int  # held-out normal images
    megapixels: float  # their total area
    false_regions: int  # regions on them at the chosen threshold
    flagged_images: int  # of them with at least one region
    regions_bound: float  # upper bound on false regions per MP
    flagged_bound: float  # upper bound on the share of good images flagged
    target_regions_per_mp: float | None = None
    target_flagged_share: float | None = None

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> "AlarmRate":
        """From a model file's thresholds.alarm; one that is incomplete or not numbers is a broken model file."""
        known = {f.name for f in fields(cls)}
        try:
            alarm = cls(**{k: v for k, v in entry.items() if k in known})
        except TypeError:
            raise ModelError(f"model metadata thresholds.alarm lacks {sorted(known - set(entry))}: "
                             "calibrate again with nsgan calibrate") from None
        bad = [f.name for f in fields(cls) if not isinstance(getattr(alarm, f.name), (int, float, type(None)))
               or isinstance(getattr(alarm, f.name), bool)]
        if bad:
            raise ModelError(f"model metadata thresholds.alarm: {', '.join(bad)} not a number: calibrate again with nsgan calibrate")
        return alarm

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        """E.g. '≤ 0.1 false regions per MP at 95% confidence (0 in 31.5 MP of 40 held-out normal images; …)'."""
        seen, conf = f"{self.n_images} held-out normal images", _pct(self.confidence)
        parts = []
        if self.target_regions_per_mp is not None:
            parts.append(f"≤ {self.target_regions_per_mp:g} false regions per MP at {conf} confidence ({self.false_regions} in "
                         f"{self.megapixels:.3g} MP of {seen}; upper bound {self.regions_bound:.3g} per MP)")
        if self.target_flagged_share is not None:
            parts.append(f"≤ {_pct(self.target_flagged_share)} of good images flagged at {conf} confidence ({self.flagged_images} "
                         f"of {seen}; upper bound {_pct(self.flagged_bound)})")
        return f"{' and '.join(parts)}, counting regions of ≥ {self.min_region_area} px"


def _pct(x: float) -> str:
    return f"{100 * x:.3g}%"


ALARMS = "boxes are alarms: "
NOT_ALARMS_UNCALIBRATED = ("boxes are not alarms: the model is not calibrated, so each box only marks where this image's "
                           "own map is highest; `nsgan calibrate --false-regions-per-mp R` sets a threshold at a stated rate")
NOT_ALARMS_NO_RATE = ("boxes are not alarms at a stated rate: the pixel threshold was calibrated without a false-alarm "
                      "target; `nsgan calibrate --false-regions-per-mp R` states one")
NOT_ALARMS_GIVEN = "boxes are not alarms at a stated rate: the pixel threshold was given (--pixel-threshold)"


def alarm_sentence(alarm: AlarmRate | None, pixel_source: str) -> str:
    """The one line that says what this image's boxes mean (its `pixel_source`: given, calibrated, or the uncalibrated rule)."""
    if pixel_source == "given":
        return NOT_ALARMS_GIVEN
    if pixel_source != "calibrated":
        return NOT_ALARMS_UNCALIBRATED
    return ALARMS + alarm.describe() if alarm is not None else NOT_ALARMS_NO_RATE

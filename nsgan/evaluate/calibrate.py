"""`nsgan calibrate`: image and pixel thresholds from held-out images, stored inside the model file.

From normal images only: image threshold = max(mean + k·std of their scores, the highest of them),
so no held-out normal image is flagged; pixel threshold = a high quantile (0.999) of their map
values. With abnormal images the image threshold is the one that maximises F1 over both sets,
and with defect masks the pixel threshold maximises pixel-level F1. The search settings used are
stored with the thresholds, since scores depend on them; scoring warns when they differ.

With a false-alarm target (false regions per MP and/or the share of good images flagged) the pixel
threshold, the one regions are cut at, is instead the least one whose one-sided upper confidence bound
on the normal images meets it (nsgan/evaluate/alarm_rate.py), and the rate is stored with it, so the
report, page and card can call the boxes alarms at that rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from nsgan.common.errors import ConfigError, DataError, TargetError
from nsgan.data.imageio import IMAGE_SUFFIXES, MASK_SUFFIX, read_image
from nsgan.evaluate.alarm_rate import Unreachable, choose_region_threshold, images_short
from nsgan.score.alarms import AlarmRate
from nsgan.score.postprocess import Calibration
from nsgan.score.scorer import Scorer

SAMPLES_PER_IMAGE = 200_000  # map values kept per normal image for the pixel quantile


def best_f1_threshold(neg: np.ndarray, pos: np.ndarray, candidates: np.ndarray | None = None) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of `value > threshold` with pos as positives, neg as negatives."""
    neg, pos = np.sort(np.asarray(neg, np.float64)), np.sort(np.asarray(pos, np.float64))
    if candidates is None:
        v = np.unique(np.concatenate([neg, pos]))
        candidates = np.concatenate([[v[0] - 1e-6], (v[:-1] + v[1:]) / 2]) if len(v) > 1 else v - 1e-6
    tp = len(pos) - np.searchsorted(pos, candidates, side="right")
    fp = len(neg) - np.searchsorted(neg, candidates, side="right")
    fn = len(pos) - tp
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    k = int(np.argmax(f1))
    return float(candidates[k]), float(f1[k])


def mask_for(image: Path, abnormal_root: Path, mask_root: Path) -> Path:
    """MVTec layout: masks/<same sub-folder>/<stem>_mask.png, or the same stem."""
    rel = image.relative_to(abnormal_root).parent
    for name in (f"{image.stem}{MASK_SUFFIX}", image.stem):
        for suffix in IMAGE_SUFFIXES:
            p = mask_root / rel / f"{name}{suffix}"
            if p.is_file():
                return p
    raise DataError(f"{image}: no mask in {mask_root / rel} (looked for {image.stem}{MASK_SUFFIX}.* and {image.stem}.*)")


@dataclass(frozen=True)
class AlarmTarget:
    """A stated false-alarm rate for the regions: per MP of normal image and/or share of good images flagged."""

    confidence: float = 0.95
    regions_per_mp: float | None = None
    flagged_share: float | None = None

    def __post_init__(self):
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"--confidence: {self.confidence:g} is not in (0, 1); use e.g. 0.95")
        if self.regions_per_mp is not None and not (math.isfinite(self.regions_per_mp) and self.regions_per_mp > 0):
            raise ConfigError(f"--false-regions-per-mp: {self.regions_per_mp:g} is not a positive rate; use e.g. 0.1")
        if self.flagged_share is not None and not 0.0 < self.flagged_share < 1.0:
            raise ConfigError(f"--flagged-share: {self.flagged_share:g} is not in (0, 1); use e.g. 0.05")
        if self.regions_per_mp is None and self.flagged_share is None:
            raise ConfigError("an alarm target needs --false-regions-per-mp or --flagged-share")


def calibrate(scorer: Scorer, normal: list[Path], abnormal: list[Path] | None = None,
              masks: list[Path] | None = None, k: float = 3.0, pixel_quantile: float = 0.999,
              target: AlarmTarget | None = None) -> dict:
    """Score the held-out sets and return the thresholds entry to store with the model (Calibration.to_dict()).

    With a `target` the normal maps are kept in memory (4 bytes a pixel) for the region threshold's scan."""
    if not normal:
        raise DataError("calibration needs at least one normal image")
    if target is not None and target.flagged_share is not None:  # known before scoring: say it before the wait
        early = images_short(len(normal), target.flagged_share, target.confidence)
        if early:
            raise TargetError(f"cannot show {early} at {target.confidence:g} confidence")
    n_scores, n_pixels, maps = [], [], []
    for r in scorer.score_all(normal):  # small images share search batches
        n_scores.append(r.score)
        flat = r.map.ravel()
        n_pixels.append(flat[:: max(1, flat.size // SAMPLES_PER_IMAGE)])
        if target is not None:
            maps.append(r.map)
    n_scores_a, n_pix = np.array(n_scores), np.concatenate(n_pixels)
    cal = Calibration(
        image=float(max(n_scores_a.mean() + k * n_scores_a.std(), n_scores_a.max())),
        image_method=f"max(mean + {k:g}·std, max) of {len(normal)} normal image scores",
        pixel=float(np.quantile(n_pix, pixel_quantile)),
        pixel_method=f"{pixel_quantile:g} quantile of normal map values",
        n_normal=len(normal),
    )
    if abnormal:
        cal = _with_abnormal(cal, scorer, abnormal, masks, n_scores_a, n_pix)
    if target is not None:
        cal = _at_alarm_rate(cal, maps, scorer.options.min_region_area, target)
    return replace(cal, search=scorer.options.search.to_dict(), map=scorer.map_settings(), stride=scorer.stride).to_dict()


def _with_abnormal(cal: Calibration, scorer: Scorer, abnormal: list[Path], masks: list[Path] | None,
                   n_scores: np.ndarray, n_pix: np.ndarray) -> Calibration:
    """The image threshold by best F1 over both sets; with masks, the pixel threshold by best pixel F1 too."""
    a_scores, pos_pix, neg_pix = [], [], [n_pix]
    for i, (p, r) in enumerate(zip(abnormal, scorer.score_all(abnormal))):
        a_scores.append(r.score)
        if masks:
            m = read_image(masks[i])[:, :, 0] > 0.5
            if m.shape != r.map.shape:
                raise DataError(f"{masks[i]}: mask is {m.shape[1]}×{m.shape[0]}, image {p} is {r.shape[1]}×{r.shape[0]}")
            pos_pix.append(r.map[m])
            neg_pix.append(r.map[~m])
    image, image_f1 = best_f1_threshold(n_scores, np.array(a_scores))
    cal = replace(cal, image=image, image_f1=image_f1, n_abnormal=len(abnormal),
                  image_method=f"best F1 over {len(n_scores)} normal and {len(abnormal)} abnormal images")
    if masks:
        pos, neg = np.concatenate(pos_pix), np.concatenate(neg_pix)
        cands = np.unique(np.quantile(np.concatenate([pos, neg[:: max(1, neg.size // 1_000_000)]]), np.linspace(0, 1, 1025)))
        pixel, pixel_f1 = best_f1_threshold(neg, pos, cands)
        cal = replace(cal, pixel=pixel, pixel_f1=pixel_f1, pixel_method="best pixel F1 over the masks")
    return cal


def _at_alarm_rate(cal: Calibration, maps: list[np.ndarray], min_area: int, target: AlarmTarget) -> Calibration:
    """The pixel threshold regions are cut at, chosen for the target's rate on the normal maps (replaces F1 or quantile)."""
    choice = choose_region_threshold(maps, min_area, target.confidence, target.regions_per_mp, target.flagged_share)
    if isinstance(choice, Unreachable):
        raise TargetError(choice.message)
    alarm = AlarmRate(confidence=target.confidence, min_region_area=min_area, n_images=choice.n_images,
                      megapixels=round(choice.megapixels, 6), false_regions=choice.false_regions,
                      flagged_images=choice.flagged_images, regions_bound=choice.regions_bound,
                      flagged_bound=choice.flagged_bound, target_regions_per_mp=target.regions_per_mp,
                      target_flagged_share=target.flagged_share)
    return replace(cal, pixel=choice.threshold, pixel_f1=None, alarm=alarm,
                   pixel_method=f"least region threshold at the false-alarm target on {choice.n_images} normal images")

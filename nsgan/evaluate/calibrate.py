"""`nsgan calibrate`: image and pixel thresholds from held-out images, stored inside the model file.

From normal images only: image threshold = max(mean + k·std of their scores, the highest of them),
so no held-out normal image is flagged; pixel threshold = a high quantile (0.999) of their map
values. With abnormal images the image threshold is the one that maximises F1 over both sets,
and with defect masks the pixel threshold maximises pixel-level F1. The search settings used are
stored with the thresholds, since scores depend on them; scoring warns when they differ.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from nsgan.common.errors import DataError
from nsgan.data.imageio import IMAGE_SUFFIXES, MASK_SUFFIX, read_image
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


def calibrate(scorer: Scorer, normal: list[Path], abnormal: list[Path] | None = None,
              masks: list[Path] | None = None, k: float = 3.0, pixel_quantile: float = 0.999) -> dict:
    """Score the held-out sets and return the thresholds entry to store with the model (Calibration.to_dict())."""
    if not normal:
        raise DataError("calibration needs at least one normal image")
    n_scores, n_pixels = [], []
    for r in scorer.score_all(normal):  # small images share search batches
        n_scores.append(r.score)
        flat = r.map.ravel()
        n_pixels.append(flat[:: max(1, flat.size // SAMPLES_PER_IMAGE)])
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

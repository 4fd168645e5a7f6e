"""False-alarm rates with one-sided upper confidence bounds, and the region threshold that meets a stated one.

A threshold that produced 0 false regions on a few held-out normal images has not shown that its
rate is 0: it has shown, at a stated confidence, that the rate is below an upper bound that falls
as the held-out set grows. So `nsgan calibrate --false-regions-per-mp R` / `--flagged-share S`
choose the least region threshold whose *upper bound*, not whose observed rate, is within the target:

- false regions per megapixel: regions on normal images are counted as a Poisson process over the
  area scored; the exact (Garwood) one-sided upper bound on its mean for k events is the gamma
  quantile Γ⁻¹(c; k + 1) (= χ²_c(2k + 2) / 2), divided by the megapixels seen;
- the share of good images flagged (with at least one region): k flagged of n is binomial; the exact
  Clopper–Pearson one-sided upper bound is the beta quantile B⁻¹(c; k + 1, n − k) (1 when k = n).

Both are exact (they never undercover), so with 0 events they are -ln(1 − c) / MP and
1 − (1 − c)^(1/n): the least area and number of images that can show a target at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from nsgan.score.regions import drawn_labels

MAX_CANDIDATES = 4096  # region thresholds tried: all distinct map values when fewer, else upper-tail quantiles


def poisson_upper(count: int, confidence: float) -> float:
    """One-sided upper bound on a Poisson mean after `count` events (exact, Garwood 1936)."""
    return float(stats.gamma.ppf(confidence, count + 1))


def clopper_pearson_upper(count: int, n: int, confidence: float) -> float:
    """One-sided upper bound on a binomial proportion after `count` of `n` (exact, Clopper & Pearson 1934)."""
    if count >= n:
        return 1.0
    return float(stats.beta.ppf(confidence, count + 1, n - count))


def regions_per_mp_upper(count: int, megapixels: float, confidence: float) -> float:
    """Upper bound on false regions per megapixel after `count` regions in `megapixels` of normal images."""
    return poisson_upper(count, confidence) / megapixels


def megapixels_needed(rate: float, confidence: float) -> float:
    """The least normal area (MP) whose bound with 0 false regions is within `rate` per MP."""
    return poisson_upper(0, confidence) / rate


def images_needed(share: float, confidence: float) -> int:
    """The least number of normal images whose bound with 0 flagged is within `share`."""
    return math.ceil(math.log(1.0 - confidence) / math.log(1.0 - share)) if share < 1 else 1


def images_short(n: int, share: float, confidence: float) -> str | None:
    """What is missing when n images cannot show `share` even with none flagged (None: they can)."""
    if clopper_pearson_upper(0, n, confidence) <= share:
        return None
    return (f"≤ {share:g} of good images flagged needs ≥ {images_needed(share, confidence)} "
            f"held-out normal images even with 0 flagged (have {n})")


@dataclass(frozen=True)
class AlarmChoice:
    """The chosen region threshold and what it showed on the held-out normal images."""

    threshold: float
    false_regions: int
    flagged_images: int
    n_images: int
    megapixels: float
    regions_bound: float  # upper bound on false regions per MP at the confidence
    flagged_bound: float  # upper bound on the share of good images with a region


@dataclass(frozen=True)
class Unreachable:
    """No threshold meets the target on this set, even with no region at all: what would be needed."""

    message: str


def candidate_thresholds(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Thresholds to try, descending: every distinct map value (exact) when few, else a dense upper-tail grid.

    Regions are `map > t`, so the count is constant on [v_k, v_{k+1}) between distinct values v: with
    all of them as candidates the least threshold found is the least there is. The top one is the highest
    value of all, where no pixel is above and no region exists."""
    pooled = np.concatenate([m.ravel() for m in maps]).astype(np.float32, copy=False)  # 4 bytes a pixel, once
    values = np.unique(pooled)
    if values.size > MAX_CANDIDATES:
        tail = 1.0 - np.logspace(-7, 0, MAX_CANDIDATES - len(maps))  # 1 − 1e-7 … 0: denser near the top
        values = np.unique(np.concatenate([np.quantile(pooled, np.clip(tail, 0, 1)), [m.max() for m in maps]]))
    return values[::-1]


def count_regions(amap: np.ndarray, threshold: float, min_area: int) -> int:
    """len(find_regions([(0, amap)], threshold, min_area)), without the boxes and peaks: the scan calls it often."""
    if amap.max() <= threshold:
        return 0
    return len(drawn_labels(amap, threshold, min_area)[1])


def count_alarms(maps: Sequence[np.ndarray], threshold: float, min_area: int) -> tuple[int, int]:
    """(regions, images with at least one region) of `map > threshold`, as scoring draws them."""
    regions = [count_regions(m, threshold, min_area) for m in maps]
    return sum(regions), sum(1 for r in regions if r)


def choose_region_threshold(maps: Sequence[np.ndarray], min_area: int, confidence: float,
                            regions_per_mp: float | None = None, flagged_share: float | None = None) -> AlarmChoice | Unreachable:
    """The least candidate threshold at which, and at every higher candidate, each given target's upper bound holds.

    Candidates are tried from the top down and the scan stops at the first that fails. That order is what
    keeps the confidence although many thresholds are tried: it is fixed-sequence testing (each "the rate
    at t exceeds the target" rejected at level 1 − confidence, in an order fixed in advance, stopping at the
    first not rejected), whose chance of any false rejection stays ≤ 1 − confidence (as in Learn-then-Test,
    Angelopoulos et al. 2021). It also skips a lucky dip lower down: region counts need not fall
    monotonically as the threshold rises (a region can split)."""
    if not maps:
        raise ValueError("no normal maps")
    n = len(maps)
    mp = sum(m.size for m in maps) / 1e6
    needs = []
    if regions_per_mp is not None and regions_per_mp_upper(0, mp, confidence) > regions_per_mp:
        needs.append(f"≤ {regions_per_mp:g} false regions per MP needs ≥ {megapixels_needed(regions_per_mp, confidence):.3g} MP "
                     f"of held-out normal images even with 0 regions (have {mp:.3g} MP)")
    if flagged_share is not None and images_short(n, flagged_share, confidence):
        needs.append(images_short(n, flagged_share, confidence))
    if needs:
        return Unreachable(f"cannot show {' and '.join(needs)} at {confidence:g} confidence")
    best = None
    for t in candidate_thresholds(maps):
        k, flagged = count_alarms(maps, float(t), min_area)
        rb, fb = regions_per_mp_upper(k, mp, confidence), clopper_pearson_upper(flagged, n, confidence)
        if (regions_per_mp is not None and rb > regions_per_mp) or (flagged_share is not None and fb > flagged_share):
            break
        best = AlarmChoice(float(t), k, flagged, n, mp, rb, fb)
    assert best is not None  # the top candidate has no region, and 0 events met the targets above
    return best

"""The no-learning floor: local contrast |x − GaussianBlur(x)|, scored like a model's map.

A detector earns its keep only by beating what needs no training. Thin, low-contrast
micro-defects differ from their surroundings, so the distance of each pixel from a Gaussian blur
of its neighbourhood already marks many of them; this module computes that map and the image score
from it, with the same shapes and conventions as a model's residual map (numpy float32 (H, W) in
image units), so `tools/experiments/baseline_contrast.py` can run it through `nsgan evaluate`'s metrics::

    floor = LocalContrast(blur_sigma=2.0, map_sigma=1.0)
    m = floor.map(image)          # (H, W) float32
    s = floor.score(m)            # max of the map (or a high quantile)

The map is the channel mean of |x − G_blur * x|, optionally smoothed again by a Gaussian of
`map_sigma` (0: no smoothing), which trades the sharpest peaks for fewer isolated false ones.
Borders are mirrored (scipy's "reflect"), so an image's edge is not a defect.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum

import numpy as np
from scipy.ndimage import gaussian_filter

from nsgan.common.errors import ConfigError

DEFAULT_BLUR_SIGMA = 2.0  # a 1-3 px scratch sits well inside the blur's reach; fixed before any measurement
DEFAULT_MAP_SIGMA = 1.0
DEFAULT_QUANTILE = 0.999


class ScoreRule(str, Enum):
    """How one image score comes from a map: its maximum, or a high quantile (robust to one hot pixel)."""

    MAX = "max"
    QUANTILE = "quantile"


def local_contrast_map(image: np.ndarray, blur_sigma: float = DEFAULT_BLUR_SIGMA,
                       map_sigma: float = DEFAULT_MAP_SIGMA) -> np.ndarray:
    """Mean over channels of |x − GaussianBlur(x, blur_sigma)|, then a Gaussian of `map_sigma` (0: none).

    `image`: (H, W, C) or (H, W) float in [0, 1]. Returns (H, W) float32.
    """
    _check_sigmas(blur_sigma, map_sigma)
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3:
        raise ConfigError(f"local contrast: expected an (H, W, C) image, got shape {x.shape}")
    blurred = gaussian_filter(x, sigma=(blur_sigma, blur_sigma, 0), mode="reflect")  # no blur across channels
    m = np.abs(x - blurred).mean(axis=2)
    if map_sigma > 0:
        m = gaussian_filter(m, sigma=map_sigma, mode="reflect")
    return m.astype(np.float32, copy=False)


def image_score(score_map: np.ndarray, rule: ScoreRule | str = ScoreRule.MAX,
                quantile: float = DEFAULT_QUANTILE) -> float:
    """One image score from a map: its max, or its `quantile` (0 < q <= 1) with rule "quantile"."""
    rule = _rule(rule)
    m = np.asarray(score_map)
    if rule is ScoreRule.MAX:
        return float(m.max())
    _check_quantile(quantile)
    return float(np.quantile(m, quantile))


@dataclass(frozen=True)
class LocalContrast:
    """One setting of the floor: the map's two sigmas and the image-score rule."""

    blur_sigma: float = DEFAULT_BLUR_SIGMA
    map_sigma: float = DEFAULT_MAP_SIGMA
    rule: ScoreRule = ScoreRule.MAX
    quantile: float = DEFAULT_QUANTILE

    def __post_init__(self):
        _check_sigmas(self.blur_sigma, self.map_sigma)
        object.__setattr__(self, "rule", _rule(self.rule))
        if self.rule is ScoreRule.QUANTILE:
            _check_quantile(self.quantile)

    def map(self, image: np.ndarray) -> np.ndarray:
        return local_contrast_map(image, self.blur_sigma, self.map_sigma)

    def score(self, score_map: np.ndarray) -> float:
        return image_score(score_map, self.rule, self.quantile)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rule"] = self.rule.value
        if self.rule is not ScoreRule.QUANTILE:
            del d["quantile"]
        return d


def _rule(rule) -> ScoreRule:
    try:
        return ScoreRule(rule)
    except ValueError:
        raise ConfigError(f"score rule: {rule!r}; choose from {', '.join(r.value for r in ScoreRule)}") from None


def _check_sigmas(blur_sigma: float, map_sigma: float) -> None:
    if not blur_sigma > 0:
        raise ConfigError(f"blur sigma must be > 0, got {blur_sigma}")
    if not map_sigma >= 0:
        raise ConfigError(f"map sigma must be >= 0 (0: no smoothing), got {map_sigma}")


def _check_quantile(q: float) -> None:
    if not 0 < q <= 1:
        raise ConfigError(f"quantile must be in (0, 1], got {q}")

"""Every choice scoring offers, named once: inversion modes, precisions, residuals, image scores, test-time views, verdicts,
backends and where a threshold came from.

Each is a str-valued enum, so a member equals, prints, hashes and serialises (JSON, argparse, reports)
exactly as its value: `Residual.DETAIL == "detail"`, `f"{Residual.DETAIL}"` is `detail`. User input is
turned into members once, where options are made (`Choice.parse`); past that point the code compares
members, never spelled-out strings.
"""

from __future__ import annotations

from enum import Enum

from nsgan.common.errors import ConfigError


class Choice(str, Enum):
    """A str-valued enum whose str(), format() and repr() are its value's (Python 3.10 has no StrEnum); repr too,
    so messages and option records that quote a choice read as they did when choices were plain strings."""

    __str__ = str.__str__
    __format__ = str.__format__
    __repr__ = str.__repr__

    @classmethod
    def values(cls, *, auto: bool = True) -> tuple[str, ...]:
        """The values in declaration order; `auto=False` leaves out AUTO, the choice that is resolved away."""
        return tuple(m.value for m in cls if auto or m.value != AUTO)

    @classmethod
    def parse(cls, value, key: str, *, listed: bool = False):
        """The member `value` names; ConfigError "<key>: invalid value 'x'" (with the choices when `listed`)."""
        try:
            return cls(value)
        except ValueError:
            listing = f" (one of {', '.join(cls.values())})" if listed else ""
            raise ConfigError(f"{key}: invalid value {value!r}{listing}") from None


AUTO = "auto"  # the value of every AUTO member: resolved for the model at hand (options.resolve_options)


class Inversion(Choice):
    """How a tile's latent z is found (nsgan/score/search.py)."""

    AUTO = AUTO  # the encoder when the model has one, else the search
    SEARCH = "search"  # AnoGAN's latent search from random starts
    ENCODER = "encoder"  # f-AnoGAN: z = E(x), one pass
    REFINE = "refine"  # E(x) as the one start, then a short search


class Precision(Choice):
    FP32 = "fp32"
    BF16 = "bf16"


class Residual(Choice):
    """The per-tile map (nsgan/score/maps.py tile_residual)."""

    AUTO = AUTO  # options.AUTO_WITH_COMPARATOR for a model with C, else options.AUTO_WITHOUT_COMPARATOR
    PIXEL = "pixel"  # |x − G(z)|
    DETAIL = "detail"  # the same with its local mean taken out
    COMPARATOR = "comparator"  # sigmoid(C(x, G(z))): only for a model that holds C


class ImageScore(Choice):
    """How one image score comes from an image's map and tiles (postprocess.PostProcessor.image_score)."""

    AUTO = AUTO  # options.resolve_image_score: top_k_mean for C's map (measured, docs/comparator.md), else map_max
    MAP_MAX = "map_max"  # the max of the (smoothed) map
    TOP_K_MEAN = "top_k_mean"  # the mean of the map's assembly.TOP_K highest values: one false peak cannot topple it
    TILE = "tile"  # the highest tile loss (AnoGAN's)


class TestTimeAugment(Choice):
    """Which flips and 90° turns of each tile are scored and averaged, each map turned back first (nsgan/score/views.py)."""

    AUTO = AUTO  # the views the model's thresholds were calibrated with (options.resolve_tta), else none
    NONE = "none"  # the tile as cut: one pass
    FLIP = "flip"  # identity, left-right, up-down and both (a 180° turn): 4 passes
    D4 = "d4"  # those four and each transposed, i.e. all 8 flips × 90° turns: 8 passes


class Verdict(Choice):
    ANOMALOUS = "anomalous"
    NORMAL = "normal"
    UNCALIBRATED = "uncalibrated"  # the model holds no image threshold


class Backend(Choice):
    """Who makes the per-tile network call (nsgan/share/onnx_cache.py scorer_for)."""

    AUTO = AUTO  # ONNX Runtime where it pays and can run, else torch
    TORCH = "torch"
    ONNX = "onnx"


class ThresholdSource(Choice):
    """Where a threshold applied to an image came from (postprocess.Thresholds)."""

    GIVEN = "given"  # ScoreOptions.pixel_threshold (--pixel-threshold)
    CALIBRATED = "calibrated"  # stored in the model file by `nsgan calibrate`
    UNCALIBRATED = "uncalibrated"  # none stored: the pixel one is made from this image's map

"""ScoreOptions: how an image is cut, inverted and turned into a map and an image score (a frozen, validated record)."""

from __future__ import annotations

from dataclasses import dataclass, field

from nsgan.common.errors import ConfigError
from nsgan.score.maps import IMAGE_SCORES, RESIDUALS
from nsgan.score.search import AUTO, SearchConfig

# `--residual auto` (the default): AUTO_WITHOUT_COMPARATOR for a model without C; for a model with C,
# AUTO_WITH_COMPARATOR. Measured (docs/comparator.md, tests/test_comparator.py, tests/test_audit.py): a
# trained C's map beat the detail residual of the same model in every comparison made, so a model
# that carries a C is scored with it.
AUTO_WITHOUT_COMPARATOR = "detail"
AUTO_WITH_COMPARATOR = "comparator"
RESIDUAL_CHOICES = (AUTO, *RESIDUALS)


def resolve_residual(residual: str, has_comparator: bool) -> str:
    """`auto` -> the measured default for a model with or without a comparator; anything else as given."""
    if residual != AUTO:
        return residual
    return AUTO_WITH_COMPARATOR if has_comparator else AUTO_WITHOUT_COMPARATOR


def comparator_runs_alone(reference: str | None, options: "ScoreOptions") -> bool:
    """True when the map is a C whose reference is not G(E(x)) and the image score is the map's: scoring then needs
    neither E nor G (the torch scorer skips them; ONNX's graph would run them, so `auto` keeps such a model on torch)."""
    return (options.residual == "comparator" and reference not in (None, "reconstruction")
            and options.image_score != "tile")


@dataclass(frozen=True)
class ScoreOptions:
    """How an image is cut and searched; defaults follow DESIGN.md (overlap of half a tile)."""

    # None: a whole tile. Measured (README "Inversion"): half-tile overlap costs 4x the tiles for
    # +0.04 image / +0.002 pixel AUROC in encoder mode on the textures protocol.
    stride: int | None = None
    batch: int = 64  # tiles per search batch (the unit dealt to processes)
    batches_per_band: int = 4  # sets the band height; more batches per band keep more processes busy
    window_floor: float = 0.1
    overlay_max_side: int = 1024
    min_region_area: int = 4
    pixel_threshold: float | None = None  # overrides the model's calibrated one
    search: SearchConfig = field(default_factory=SearchConfig)
    # Map defaults chosen by measurement (README "Inversion"): the detail residual smoothed by σ = 1 px
    # gave the best pixel AUROC and AUPRO for every inversion mode on the textures protocol.
    # pixel: |x − G(z)|; detail: the residual's sharp part (maps.detail_residual); comparator: C's map (a model
    # with C); auto: resolve_residual (detail, or AUTO_WITH_COMPARATOR for a model with C). The Scorer resolves it.
    residual: str = AUTO
    map_sigma: float = 1.0  # Gaussian smoothing of the blended map, in pixels (0: none)
    image_score: str = "map_max"  # map_max: the max of the (smoothed) map; tile: the highest tile loss

    def __post_init__(self):
        for key, ok in {
            "stride": self.stride is None or self.stride >= 1,
            "batch": self.batch >= 1,
            "batches_per_band": self.batches_per_band >= 1,
            "window_floor": 0.0 < self.window_floor <= 1.0,
            "overlay_max_side": self.overlay_max_side >= 16,
            "min_region_area": self.min_region_area >= 1,
            "map_sigma": 0.0 <= self.map_sigma <= 64,
            "image_score": self.image_score in IMAGE_SCORES,
            "residual": self.residual in RESIDUAL_CHOICES,
        }.items():
            if not ok:
                raise ConfigError(f"{key}: invalid value {getattr(self, key)!r}")

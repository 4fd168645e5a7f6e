"""ScoreOptions: how an image is cut, inverted and turned into a map and an image score (a frozen, validated record),
and their resolution for one model: `auto` becomes the mode and residual that model is scored with."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from nsgan.common.errors import ConfigError, ModelError
from nsgan.score.choices import AUTO, ImageScore, Inversion, Residual, TestTimeAugment
from nsgan.score.search import SearchConfig

# `--residual auto` (the default): AUTO_WITHOUT_COMPARATOR for a model without C; for a model with C,
# AUTO_WITH_COMPARATOR. Measured (docs/comparator.md, tests/test_comparator.py, tests/test_audit.py): a
# trained C's map beat the detail residual of the same model in every comparison made, so a model
# that carries a C is scored with it.
AUTO_WITHOUT_COMPARATOR = Residual.DETAIL
AUTO_WITH_COMPARATOR = Residual.COMPARATOR
RESIDUAL_CHOICES = Residual.values()

# `--image-score auto` (the default): for C's map, the mean of its top-k values; measured on the visible-defect
# protocol (docs/comparator.md "Image score (issue 25)"), it beat the map max on every texture. The map max for
# every other map (the detail or pixel residual: not measured there).
AUTO_IMAGE_SCORE_WITH_COMPARATOR = ImageScore.TOP_K_MEAN
AUTO_IMAGE_SCORE_WITHOUT_COMPARATOR = ImageScore.MAP_MAX
IMAGE_SCORE_CHOICES = ImageScore.values()  # what --image-score accepts (auto too); maps.IMAGE_SCORES: the resolved ones


def resolve_residual(residual: Residual | str, has_comparator: bool) -> Residual:
    """`auto` -> the measured default for a model with or without a comparator; anything else as given."""
    if residual != AUTO:
        return Residual(residual)
    return AUTO_WITH_COMPARATOR if has_comparator else AUTO_WITHOUT_COMPARATOR


def resolve_image_score(image_score: ImageScore | str, residual: Residual | str) -> ImageScore:
    """`auto` -> the measured image score for this (resolved) residual: C's map or another; anything else as given."""
    if image_score != AUTO:
        return ImageScore(image_score)
    return AUTO_IMAGE_SCORE_WITH_COMPARATOR if residual == Residual.COMPARATOR else AUTO_IMAGE_SCORE_WITHOUT_COMPARATOR


def resolve_tta(tta: TestTimeAugment | str, calibrated: str | None, feed_forward: bool) -> TestTimeAugment:
    """`auto` -> the views the model's thresholds were made with (they hold only for that map), where the map is
    feed-forward (views cannot multiply a latent search); none for an uncalibrated model; anything else as given."""
    if tta != AUTO:
        return TestTimeAugment(tta)
    return TestTimeAugment(calibrated) if calibrated and feed_forward else TestTimeAugment.NONE


def comparator_runs_alone(reference: str | None, options: "ScoreOptions") -> bool:
    """True when the map is a C whose reference is not G(E(x)) and the image score is the map's: scoring then needs
    neither E nor G (the torch scorer skips them; ONNX's graph would run them, so `auto` keeps such a model on torch)."""
    return (options.residual == Residual.COMPARATOR and reference not in (None, "reconstruction")
            and options.image_score != ImageScore.TILE)


@dataclass(frozen=True)
class ScoreOptions:
    """How an image is cut and searched; by default whole tiles (no overlap), the measured map defaults below.

    `residual`, `image_score` and `tta` are held as their enums (nsgan/score/choices.py); strings are accepted.
    """

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
    # with C); auto: resolve_residual (detail, or AUTO_WITH_COMPARATOR for a model with C). resolve_options resolves it.
    residual: Residual = Residual.AUTO
    map_sigma: float = 1.0  # Gaussian smoothing of the blended map, in pixels (0: none)
    # map_max: the max of the (smoothed) map; top_k_mean: the mean of its top-k values; tile: the highest tile loss;
    # auto: resolve_image_score (top_k_mean for C's map, else map_max). resolve_options resolves it.
    image_score: ImageScore = ImageScore.AUTO
    # Each tile also scored flipped / turned, its map turned back, maps and tile scores averaged (nsgan/score/views.py);
    # auto: the views the thresholds were calibrated with, else none (d4 costs 8 passes, below the 0.5 MP/s floor:
    # docs/comparator.md), so only a model calibrated with views is scored with them by default.
    tta: TestTimeAugment = TestTimeAugment.AUTO

    def __post_init__(self):
        for key, ok in {
            "stride": self.stride is None or self.stride >= 1,
            "batch": self.batch >= 1,
            "batches_per_band": self.batches_per_band >= 1,
            "window_floor": 0.0 < self.window_floor <= 1.0,
            "overlay_max_side": self.overlay_max_side >= 16,
            "min_region_area": self.min_region_area >= 1,
            "map_sigma": 0.0 <= self.map_sigma <= 64,
        }.items():
            if not ok:
                raise ConfigError(f"{key}: invalid value {getattr(self, key)!r}")
        object.__setattr__(self, "image_score", ImageScore.parse(self.image_score, "image_score"))
        object.__setattr__(self, "residual", Residual.parse(self.residual, "residual"))
        object.__setattr__(self, "tta", TestTimeAugment.parse(self.tta, "tta", listed=True))


def resolve_options(options: ScoreOptions | None, *, name: str, has_encoder: bool, has_comparator: bool,
                    network: Any = None, calibrated_tta: str | None = None) -> ScoreOptions:
    """The concrete options a model is scored with: `auto` inversion, residual, image score and test-time views
    resolved, each checked against what the model (or the per-tile `network`, e.g. an ONNX export) can compute.
    `calibrated_tta`: the views the model's thresholds were calibrated with (their map settings' tta).

    ModelError when the model lacks what the options ask for (a comparator, an encoder); the network's
    own `check_options` says what it does not compute.
    """
    options = options or ScoreOptions()
    search = options.search.resolved(has_encoder or network is not None)
    if network is not None and options.residual == Residual.AUTO and isinstance(getattr(network, "meta", None), dict):
        options = replace(options, residual=network.meta.get("residual", AUTO))  # what the exported graph computes
    options = replace(options, residual=resolve_residual(options.residual, has_comparator))
    options = replace(options, image_score=resolve_image_score(options.image_score, options.residual))
    feed_forward = search.mode == Inversion.ENCODER or network is not None or options.residual == Residual.COMPARATOR
    options = replace(options, tta=resolve_tta(options.tta, calibrated_tta, feed_forward))
    if options.residual == Residual.COMPARATOR and not has_comparator:
        raise ModelError(f"{name}: holds no comparator, so --residual comparator cannot run; train one with "
                         f"`nsgan train-comparator --model {name} comparator.kimg=N` or score with --residual detail")
    if network is not None:
        network.check_options(replace(options, search=search))
    elif search.mode != Inversion.SEARCH and not has_encoder:
        raise ModelError(f"{name}: holds no encoder, so inversion mode '{search.mode}' cannot run; train one with "
                         f"`nsgan train-encoder --model {name} encoder.kimg=N` or score with --inversion search")
    return replace(options, search=search)

"""The search, tiling and map options that score, calibrate and evaluate share (thresholds hold only for the settings they were made with)."""

from __future__ import annotations

import argparse

from nsgan.score.assembly import TOP_K
from nsgan.score.choices import ImageScore, TestTimeAugment
from nsgan.score.options import IMAGE_SCORE_CHOICES, RESIDUAL_CHOICES, ScoreOptions
from nsgan.score.search import AUTO, MODES, PRECISIONS, SearchConfig


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by `score` and `calibrate` (thresholds only hold for the settings they were made with)."""
    d = SearchConfig()
    g = p.add_argument_group("inversion (how each tile's latent z is found)")
    g.add_argument("--inversion", choices=(AUTO, *MODES), default=AUTO,
                   help="search: AnoGAN's latent search; encoder: z = E(x), one pass; refine: E(x) then a short search; "
                        "auto (default): encoder when the model has one, else search")
    g.add_argument("--iterations", type=int, default=None,
                   help="search steps per start (default: 500 for search, 5 for refine)")
    g.add_argument("--lr", type=float, default=d.lr, help="Adam step size on z (default %(default)s)")
    g.add_argument("--lam", type=float, default=d.lam, help="weight of the feature loss (default %(default)s)")
    g.add_argument("--restarts", type=int, default=d.restarts, help="random starts per tile (default %(default)s)")
    g.add_argument("--patience", type=int, default=d.patience, help="early stop after this many steps without improvement")
    g.add_argument("--precision", choices=PRECISIONS, default=d.precision, help="search precision (default %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of the random starts (default %(default)s)")
    t = p.add_argument_group("tiling")
    t.add_argument("--stride", type=int, default=None, help="tile stride in pixels (default: the tile, no overlap; half a tile blends overlapping tiles at 4x the work)")
    t.add_argument("--batch", type=int, default=64, help="tiles searched together (default %(default)s)")
    dm = ScoreOptions()
    m = p.add_argument_group("map and image score")
    m.add_argument("--residual", choices=RESIDUAL_CHOICES, default=dm.residual,
                   help="pixel: |x − G(z)|; detail: its sharp part, the residual minus its local mean; comparator: the "
                        "learned map of the model's comparator C; auto (default): detail, or the comparator where that "
                        "is the measured default and the model holds one")
    m.add_argument("--map-sigma", type=float, default=dm.map_sigma, help="Gaussian smoothing of the map in pixels, 0 = none (default %(default)s)")
    # checked in options_from_args (ImageScore.parse), not by argparse: a bad value is one line naming the choices
    m.add_argument("--image-score", metavar="{" + ",".join(IMAGE_SCORE_CHOICES) + "}", default=dm.image_score,
                   help=f"map_max: max of the smoothed map; top_k_mean: mean of its {TOP_K} highest pixels (one false peak "
                        "cannot topple it); tile: highest tile loss; auto (default): top_k_mean for the comparator's "
                        "map, else map_max")
    m.add_argument("--tta", default=dm.tta, metavar="{" + ",".join(TestTimeAugment.values()) + "}",
                   help="test-time views averaged: auto (default): the views the model's thresholds were calibrated "
                        "with, else none; none: one pass; flip: the tile, mirrored left-right, up-down and both (4 "
                        "passes); d4: all 8 flips and 90° turns (8 passes). Each map is turned back before averaging; only "
                        "for feed-forward maps (the encoder, or a comparator that reads no reconstruction)")


def options_from_args(args: argparse.Namespace) -> ScoreOptions:
    """ScoreOptions from the arguments add_search_arguments defines (score, calibrate, evaluate)."""
    search = SearchConfig(mode=args.inversion, iterations=args.iterations, lr=args.lr, lam=args.lam, restarts=args.restarts,
                          patience=args.patience, precision=args.precision, seed=args.seed)
    return ScoreOptions(stride=args.stride, batch=args.batch, search=search, residual=args.residual, map_sigma=args.map_sigma,
                        image_score=ImageScore.parse(args.image_score, "--image-score", listed=True),
                        tta=TestTimeAugment.parse(getattr(args, "tta", ScoreOptions().tta), "--tta", listed=True),
                        pixel_threshold=getattr(args, "pixel_threshold", None))

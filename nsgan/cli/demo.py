"""`nsgan demo`: paint a dataset from a bundled photo, train, export, calibrate and score it."""

from __future__ import annotations

import argparse

from nsgan.common.errors import EXIT_OK
from nsgan.demo import DEFAULT_CONFIG, DEFAULT_FALSE_REGIONS_PER_MP, DEFAULT_HOLDOUT, DEFAULT_IMAGE_SIZE, run_demo


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for the demo's data, shards, run and scores")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="training config (default: configs/demo.yaml)")
    p.add_argument("--texture", default="brick", help="bundled texture photo: brick, grass or gravel")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")
    p.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="side of the full-size test image that is scored (above 128 px the photo's test part is mirror-tiled)")
    p.add_argument("--search-iterations", type=int, default=None,
                   help="search steps per tile for a model without an encoder (default: nsgan score's); "
                        "with an encoder the demo scores as nsgan score does by default, in one pass")
    p.add_argument("--holdout", type=int, default=DEFAULT_HOLDOUT,
                   help="held-out normal images (the test image's size) the region threshold is calibrated on (default %(default)s)")
    p.add_argument("--false-regions-per-mp", type=float, default=DEFAULT_FALSE_REGIONS_PER_MP, metavar="R",
                   help="false-alarm target of that calibration, at 95%% confidence, as nsgan calibrate's (default %(default)s)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="training config overrides, e.g. schedule.total_kimg=10")


def run(args: argparse.Namespace) -> int:
    run_demo(args.out, config=args.config, texture=args.texture, seed=args.seed, overwrite=args.overwrite,
             image_size=args.image_size, search_iterations=args.search_iterations, overrides=args.overrides,
             holdout=args.holdout, false_regions_per_mp=args.false_regions_per_mp)
    return EXIT_OK

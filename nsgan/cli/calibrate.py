"""`nsgan calibrate`: thresholds from held-out images, stored in the model file."""

from __future__ import annotations

import argparse
from pathlib import Path

from nsgan.cli.search_args import add_search_arguments, options_from_args
from nsgan.common.errors import ConfigError, DataError
from nsgan.data.imageio import list_images
from nsgan.evaluate.calibrate import AlarmTarget, calibrate, mask_for
from nsgan.models.model_file import update_metadata
from nsgan.score.alarms import alarm_sentence
from nsgan.score.postprocess import Calibration
from nsgan.score.scorer import Scorer
from nsgan.share.card import refresh_card


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="exported model (.safetensors); thresholds are written into it")
    p.add_argument("--normal", required=True, help="folder of held-out normal images")
    p.add_argument("--abnormal", help="folder of images with defects (image threshold by best F1)")
    p.add_argument("--masks", help="folder of defect masks for --abnormal (pixel threshold by best F1)")
    p.add_argument("--k", type=float, default=3.0, help="normal-only image threshold: mean + k·std (default %(default)s)")
    p.add_argument("--pixel-quantile", type=float, default=0.999, help="normal-only pixel threshold quantile (default %(default)s)")
    p.add_argument("--false-regions-per-mp", type=float, metavar="R",
                   help="region threshold at this false-alarm rate: the least whose upper confidence bound of false regions "
                        "per megapixel on the normal images is ≤ R (replaces the pixel quantile and F1)")
    p.add_argument("--flagged-share", type=float, metavar="S",
                   help="region threshold at which the upper confidence bound of the share of good images with a region is ≤ S")
    p.add_argument("--confidence", type=float, default=0.95, help="of the one-sided bounds above (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_search_arguments(p)


def run(args: argparse.Namespace) -> int:
    if args.masks and not args.abnormal:
        raise ConfigError("--masks needs --abnormal (the images the masks belong to)")
    if not 0.0 < args.pixel_quantile < 1.0:
        raise ConfigError(f"--pixel-quantile: {args.pixel_quantile} is not in (0, 1); use e.g. 0.999")
    wants_rate = args.false_regions_per_mp is not None or args.flagged_share is not None
    target = AlarmTarget(args.confidence, args.false_regions_per_mp, args.flagged_share) if wants_rate else None
    if not wants_rate and not 0.0 < args.confidence < 1.0:
        raise ConfigError(f"--confidence: {args.confidence:g} is not in (0, 1); use e.g. 0.95")
    normal = list_images(args.normal)
    if not normal:
        raise DataError(f"{args.normal}: no images in this folder")
    abnormal = list_images(args.abnormal) if args.abnormal else None
    masks = [mask_for(p, Path(args.abnormal), Path(args.masks)) for p in abnormal] if args.masks else None
    scorer = Scorer.from_file(args.model, options_from_args(args), progress=not args.no_progress)
    th = calibrate(scorer, normal, abnormal, masks, k=args.k, pixel_quantile=args.pixel_quantile, target=target)
    update_metadata(args.model, thresholds=th)
    refresh_card(args.model, "calibrate")
    print(f"{args.model}: image threshold {th['image']:.4g} ({th['image_method']}), "
          f"pixel threshold {th['pixel']:.4g} ({th['pixel_method']})")
    print(alarm_sentence(Calibration.from_dict(th).alarm, "calibrated"))
    return 0

"""`nsgan audit`: rank a training folder by the model's image score and list the suspects."""

from __future__ import annotations

import argparse

from nsgan.cli.search_args import add_search_arguments, options_from_args
from nsgan.common.atomic import removed_if_left_empty
from nsgan.evaluate.audit import CSV, SUSPECTS, audit
from nsgan.share.html_page import PAGE


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="exported model (.safetensors), a folder holding model.safetensors, "
                                                  "or a Hugging Face Hub repo id")
    p.add_argument("--data", required=True, help="the training images: a folder (searched recursively) or a shard "
                                                 "set's folder (its manifest names the images)")
    p.add_argument("--out", required=True, help="output folder: audit.csv, suspects.txt, index.html, masks/, audit.jsonl")
    p.add_argument("--top", type=float, default=None, metavar="PERCENT",
                   help="suspects = this share of the images, highest first (default: above the calibrated image "
                        "threshold; the top 5%% on an uncalibrated model)")
    p.add_argument("--overwrite", action="store_true", help="start again in an --out holding another audit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_search_arguments(p)


def run(args: argparse.Namespace) -> int:
    with removed_if_left_empty(args.out):
        result = audit(args.model, args.data, args.out, top=args.top, overwrite=args.overwrite,
                       progress=not args.no_progress, options=options_from_args(args))
    out = result.out
    print(f"audited {len(result.rows)} image(s) ({result.scored_now} scored now): {len(result.suspects)} suspect(s), "
          f"{result.rule}")
    for r in result.rows[:5]:
        print(f"  {r.score:.4g}  {r.path}")
    print(f"ranking: {out / CSV}\nsuspects: {out / SUSPECTS}  (nsgan shards ... --abnormal-list {out / SUSPECTS})\n"
          f"page: {out / PAGE}")
    return 0

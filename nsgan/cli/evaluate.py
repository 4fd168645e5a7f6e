"""`nsgan evaluate`: detection quality on an MVTec-style folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from nsgan.cli.search_args import add_search_arguments
from nsgan.cli.search_args import options_from_args as score_options
from nsgan.common.atomic import removed_if_left_empty
from nsgan.common.errors import NsganError
from nsgan.evaluate.evaluation import evaluate, summary_table
from nsgan.evaluate.metrics import DEFAULT_BINS
from nsgan.share.card import record_evaluation, refresh_card


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="exported model (model.safetensors)")
    p.add_argument("--data", required=True, help="category folder: test/good, test/<type>, ground_truth/<type>")
    p.add_argument("--out", required=True, help="folder for metrics.json, scores.csv, roc.png, cases.png, index.html")
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs in OUT")
    p.add_argument("--bins", type=int, default=DEFAULT_BINS, help="score bins of the pixel metrics")
    p.add_argument("--cases", type=int, default=2, help="best and worst cases of each label in cases.png")
    p.add_argument("--no-progress", action="store_true")
    add_search_arguments(p)  # the same inversion, tiling and map options as `nsgan score`


def run(args: argparse.Namespace) -> int:
    with removed_if_left_empty(args.out):
        metrics = evaluate(args.model, args.data, args.out, score_options(args), overwrite=args.overwrite,
                           bins=args.bins, n_cases=args.cases, progress=not args.no_progress)
    Console().print(summary_table(metrics))
    print(f"wrote {Path(args.out) / 'metrics.json'}, scores.csv, roc.png, cases.png, index.html")
    try:  # the headline figures travel with the model file, and its card shows them
        record_evaluation(args.model, metrics)
    except NsganError as err:
        print(f"nsgan evaluate: warning: figures not stored in the model file ({err}); {Path(args.out) / 'metrics.json'} "
              "holds them", file=sys.stderr)
        return 0
    refresh_card(args.model, "evaluate")
    print(f"figures stored in {args.model} and its model card")
    return 0

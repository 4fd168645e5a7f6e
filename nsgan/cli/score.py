"""`nsgan score` (and launch/score.py): score every input with a Scorer and compose the inspection page beside the reports."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from nsgan.cli.inputs import resolve_inputs
from nsgan.cli.search_args import add_search_arguments, options_from_args
from nsgan.common.atomic import removed_if_left_empty
from nsgan.common.errors import NsganError
from nsgan.common.outputs import check_outputs, ensure_writable, output_paths
from nsgan.score.choices import Backend
from nsgan.score.options import ScoreOptions
from nsgan.share.html_page import ScorePage, check_page
from nsgan.share.onnx_cache import BACKEND_ENV, BACKENDS, scorer_for
from nsgan.share.onnx_export import scorer_from_onnx


def configure_parser(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="exported model (.safetensors), a folder holding model.safetensors, "
                                       "or a Hugging Face Hub repo id (ORG/NAME; cached, or offline with HF_HUB_OFFLINE=1)")
    which.add_argument("--onnx", help="instead of --model: a file from `nsgan export-onnx` (encoder mode, ONNX Runtime on the CPU)")
    p.add_argument("--image", required=True, help="an image, a folder of images, or a .txt list of image paths")
    p.add_argument("--out", required=True, help="output folder for <name>.map.tif, .overlay.png and .json, and index.html")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--pixel-threshold", type=float, default=None, help="region threshold (default: the calibrated one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="per-tile network call: auto (default; $NSGAN_SCORE_BACKEND): ONNX Runtime on the CPU for a model with an "
                        "encoder when installed and the job is large enough, exported once into a cache; torch; onnx")
    add_search_arguments(p)


def run(args: argparse.Namespace, accelerator: Any = None) -> int:
    """Score every input; one process here, or many when launch/score.py passes an accelerator."""
    options = options_from_args(args)
    inputs = resolve_inputs(args.image)
    out_dir = Path(args.out)
    with removed_if_left_empty(out_dir):
        return _score_inputs(args, accelerator, options, inputs, out_dir)


def _score_inputs(args: argparse.Namespace, accelerator: Any, options: ScoreOptions, inputs: list[tuple[Path, str]], out_dir: Path) -> int:
    ensure_writable(out_dir)  # on every process, so all fail together rather than some waiting forever
    for path, stem in inputs:
        check_outputs(output_paths(out_dir, stem), args.overwrite)
    check_page(out_dir, args.overwrite)
    onnx_file = getattr(args, "onnx", None)
    if onnx_file:
        scorer = scorer_from_onnx(onnx_file, options, accelerator=accelerator, progress=not args.no_progress)
    else:
        backend = getattr(args, "backend", None) or os.environ.get(BACKEND_ENV) or Backend.AUTO
        scorer, note = scorer_for(args.model, options, backend, images=[p for p, _ in inputs], accelerator=accelerator,
                                  progress=not args.no_progress)
        if scorer.is_main:
            print(f"backend: {note}")
    mismatch = scorer.calibration_mismatch()
    if mismatch and scorer.is_main:
        print(f"nsgan score: warning: {scorer.name}: {mismatch}, so the verdicts are not to be trusted; "
              "score with the calibration's --stride and search options, or calibrate again", file=sys.stderr)
    # OUT/index.html covers every report in OUT (one row for a single image), rewritten as images
    # finish and at the end, also when the run stops early: the page never claims more than is done.
    page = ScorePage(out_dir, len(inputs)) if scorer.is_main else None
    megapixels = seconds = 0.0
    alarms = None  # what the boxes mean (the same for every image of one run): said once at the end
    try:
        for path, stem in inputs:
            r = scorer.score_to_files(path, out_dir, stem, overwrite=args.overwrite)
            t = scorer.timing or {}
            megapixels, seconds = megapixels + t.get("megapixels", 0.0), seconds + t.get("wall_s", 0.0)
            alarms = r.thresholds.get("alarms") or alarms
            if page is not None:
                top = f", top region at {r.regions[0].bbox}" if r.regions else ""
                print(f"{path}: score {r.score:.4g}, {r.verdict}, {len(r.regions)} region(s){top} -> {r.report_path}")
                print(f"    {r.shape[0]}×{r.shape[1]}, {_speed(t.get('megapixels', 0.0), t.get('wall_s', 0.0))}, {scorer.backend} on {scorer.device}")
                page.image_done()
    except BaseException as exc:
        if page is not None and page.done:  # nothing new in OUT: the page there (if any) still holds
            try:
                page.finish(stopped_by=exc)
            except (NsganError, OSError):  # e.g. the same full disk: the error that stopped the run is the one to say
                pass
        raise
    if page is not None:
        written = page.finish()
        if written is not None:
            print(f"page: {written}")
        if alarms:
            print(f"regions: {alarms}")
        print(f"{len(inputs)} image(s), {_speed(megapixels, seconds)}")
    return 0


def _speed(megapixels: float, seconds: float) -> str:
    return f"{megapixels:.2f} MP in {seconds:.1f} s: {megapixels / seconds if seconds > 0 else 0.0:.2f} MP/s"

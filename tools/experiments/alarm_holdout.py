"""Does a calibrated false-alarm rate hold on normal images it was not chosen on? (docs/alarms.md)

Splits a folder of normal images in two, several times at random: `nsgan calibrate
--false-regions-per-mp R [--flagged-share S]` on one part (`--calib-images`, default half), `nsgan
score` on the rest, and counts the regions and flagged images there. Prints one row per split, with
the rest's rate and its two-sided 95% interval, beside the target and the bound calibration stated.

    python tools/experiments/alarm_holdout.py --model M.safetensors --normal DIR --out runs/alarms \\
        --false-regions-per-mp 5 --flagged-share 0.1 --splits 8 --calib-images 100
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import stats

import nsgan
import nsgan.cli


def nsgan_main(argv: list[str]) -> int:
    """`nsgan ARGV` as a user runs it; its output shown only when it fails."""
    done = subprocess.run([sys.executable, "-m", "nsgan.cli", *argv], capture_output=True, text=True)
    if done.returncode:
        print(done.stdout + done.stderr, file=sys.stderr)
    return done.returncode


def poisson_interval(k: int, exposure: float) -> tuple[float, float]:
    """Two-sided exact 95% interval of a Poisson rate after k events in `exposure` (Garwood)."""
    lo = stats.gamma.ppf(0.025, k) if k else 0.0
    return lo / exposure, stats.gamma.ppf(0.975, k + 1) / exposure


def link_all(paths: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True)
    for p in paths:
        (folder / p.name).symlink_to(p.resolve())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--normal", required=True, help="folder of normal images, split in halves")
    ap.add_argument("--out", required=True)
    ap.add_argument("--false-regions-per-mp", type=float)
    ap.add_argument("--flagged-share", type=float)
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--calib-images", type=int, help="images to calibrate on (default: half); the rest check")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("score_args", nargs="*", help="after --: extra flags for calibrate and score (the same for both)")
    args = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the nsgan processes it starts
    nsgan.cli.set_process_defaults()
    images = nsgan.list_images(args.normal)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    targets = []
    if args.false_regions_per_mp is not None:
        targets += ["--false-regions-per-mp", str(args.false_regions_per_mp)]
    if args.flagged_share is not None:
        targets += ["--flagged-share", str(args.flagged_share)]
    rng = np.random.default_rng(args.seed)
    print("| split | threshold | calibration: regions / MP / images | bound per MP | bound flagged | "
          "held-out: regions / MP / images | regions per MP (95% interval) | flagged (95% interval) |")
    print("|---|---|---|---|---|---|---|---|")
    within = 0
    total_k = total_mp = total_flagged = total_n = 0
    for split in range(args.splits):
        order = rng.permutation(len(images))
        half = args.calib_images or len(images) // 2
        a, b = [images[i] for i in order[:half]], [images[i] for i in order[half:]]
        root = out / f"split{split}"
        link_all(a, root / "calib")
        link_all(b, root / "check")
        model = root / "model.safetensors"
        shutil.copy(args.model, model)
        code = nsgan_main(["calibrate", "--model", str(model), "--normal", str(root / "calib"), *targets,
                           "--confidence", str(args.confidence), "--no-progress", *args.score_args])
        if code:
            return code
        th = nsgan.read_metadata(model)["thresholds"]
        alarm = th["alarm"]
        code = nsgan_main(["score", "--model", str(model), "--image", str(root / "check"), "--out", str(root / "scores"),
                           "--no-progress", *args.score_args])
        if code:
            return code
        reports = [json.loads(p.read_text()) for p in sorted((root / "scores").glob("*.json"))]
        k = sum(len(r["regions"]) for r in reports)
        flagged = sum(1 for r in reports if r["regions"])
        mp = sum(r["shape"][0] * r["shape"][1] for r in reports) / 1e6
        total_k, total_mp, total_flagged, total_n = total_k + k, total_mp + mp, total_flagged + flagged, total_n + len(reports)
        lo, hi = poisson_interval(k, mp)
        flo, fhi = stats.binomtest(flagged, len(reports)).proportion_ci(0.95)
        within += (args.false_regions_per_mp is None or k / mp <= args.false_regions_per_mp) and \
                  (args.flagged_share is None or flagged / len(reports) <= args.flagged_share)
        print(f"| {split} | {th['pixel']:.4g} | {alarm['false_regions']} / {alarm['megapixels']:.3g} / {alarm['n_images']} | "
              f"{alarm['regions_bound']:.3g} | {alarm['flagged_bound']:.3g} | {k} / {mp:.3g} / {len(reports)} | "
              f"{k / mp:.3g} ({lo:.3g}–{hi:.3g}) | {flagged / len(reports):.3g} ({flo:.3g}–{fhi:.3g}) |", flush=True)
    lo, hi = poisson_interval(total_k, total_mp)
    flo, fhi = stats.binomtest(total_flagged, total_n).proportion_ci(0.95) if total_n else (0, 0)
    print(f"\n{within} of {args.splits} splits within every target on the held-out part; pooled held-out parts (they overlap "
          f"across splits): {total_k} regions in {total_mp:.3g} MP = {total_k / total_mp:.3g} per MP "
          f"(95% interval {lo:.3g}–{hi:.3g}); {total_flagged} of {total_n} images flagged = {total_flagged / total_n:.3g} "
          f"(95% interval {flo:.3g}–{fhi:.3g}); targets: {args.false_regions_per_mp} per MP, {args.flagged_share} flagged")
    return 0


if __name__ == "__main__":
    sys.exit(main())

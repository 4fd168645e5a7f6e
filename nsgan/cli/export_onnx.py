"""`nsgan export-onnx`: the feed-forward scoring path to ONNX, checked in ONNX Runtime."""

from __future__ import annotations

import argparse

from nsgan.score.choices import ImageScore
from nsgan.score.options import IMAGE_SCORE_CHOICES, RESIDUAL_CHOICES, ScoreOptions
from nsgan.score.search import SearchConfig
from nsgan.share.onnx_export import DEFAULT_OPSET, KIND_TILE, TOLERANCE, export_onnx


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="exported model (.safetensors)")
    p.add_argument("--out", required=True, help="ONNX file to write, e.g. m.onnx")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s, the lowest torch writes)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--residual", choices=RESIDUAL_CHOICES, default=ScoreOptions().residual,
                   help="per-tile map in the graph, as `nsgan score --residual`; comparator puts C in the graph "
                        "(default %(default)s: what `nsgan score` uses for this model)")
    p.add_argument("--image-score", metavar="{" + ",".join(IMAGE_SCORE_CHOICES) + "}", default=ScoreOptions().image_score,
                   help="as `nsgan score --image-score` (checked by export_onnx, one line): tile puts D in the graph for AnoGAN's tile loss; the others "
                        "are computed after blending (default %(default)s)")
    p.add_argument("--lam", type=float, default=SearchConfig().lam,
                   help="weight of the feature loss in the tile loss (with --image-score tile), as `nsgan score --lam` "
                        "(default %(default)s)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help="max abs difference allowed between ONNX Runtime and torch (default %(default)g)")


def run(args: argparse.Namespace) -> int:
    rep = export_onnx(args.model, args.out, opset=args.opset, overwrite=args.overwrite, residual=args.residual,
                      lam=args.lam, image_score=args.image_score, tolerance=args.tolerance)
    m = rep.meta
    r, c = m["resolution"], m["channels"]
    if rep.kind == KIND_TILE:
        score = "AnoGAN tile loss, D in the graph" if m["image_score"] == ImageScore.TILE else "mean |x - G(z)|"
        what = (f"tile scorer: tile (N, {c}, {r}, {r}) in [0, 1] -> E -> G -> reconstruction, {m['residual']} residual "
                f"(N, {r}, {r}), score (N,: {score}), z (N, {m['latent_dim']})")
    else:
        what = f"generator only: z (N, {m['latent_dim']}) -> image (N, {c}, {r}, {r}) in about [-1, 1]"
    print(f"{rep.path}: {what}; opset {rep.opset}, dynamic batch N, {rep.path.stat().st_size / 2**20:.1f} MiB, "
          f"{rep.seconds:.1f} s")
    for n, diffs in rep.max_abs_diff.items():
        parts = ", ".join(f"{k} {v:.2g}" for k, v in diffs.items())
        print(f"ONNX Runtime (CPU) vs torch, {n} random tile(s): max abs difference {max(diffs.values()):.2g} ({parts}); "
              f"tolerance {rep.tolerance:g}")
    if rep.kind == KIND_TILE:
        print(f"score with: nsgan score --onnx {rep.path} --image IMAGE --out DIR")
    else:
        print(f"note: {args.model} holds no encoder, so feed-forward scoring is not possible with this file; train one "
              f"with `nsgan train-encoder --model {args.model} encoder.kimg=N` and export again")
    return 0

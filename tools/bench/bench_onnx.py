"""ONNX Runtime vs torch: tiles/s of the feed-forward scoring call, side by side in one run.

    python tools/bench/bench_onnx.py --model runs/tex-demo/model.safetensors --threads 1
    python tools/bench/bench_onnx.py --model M --onnx m.onnx --threads 2 --batches 1,16,64 --rounds 7
    python tools/bench/bench_onnx.py            # no --model: an untrained 16-px model of the tests' recipe

The model needs an encoder (the ONNX file of a model without one holds G alone and scores nothing).
For each batch size both sides score the same image of `--tiles` random tiles in [0, 1] laid side by side
(stride = tile, `--batch` tiles per network call), as `nsgan score` does: torch through
`nsgan.Scorer.from_file` (encoder mode, fp32), ONNX Runtime (CPU provider) through
`nsgan.scorer_from_onnx`, both with `--threads` intra-op threads. The figure is tiles over the report's
`network` stage seconds (tiling, blending, smoothing and writing are the same code either way and are
not counted). Rounds alternate torch, ORT, torch, ORT, … so load from other processes hits both alike;
each side's figure is the median over the rounds, after one warm-up round.
Nothing here is a test; the ratio is the figure to trust on a busy machine, not the absolute rates.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nsgan.cli import set_process_defaults  # noqa: E402

set_process_defaults()  # before torch loads

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import torch  # noqa: E402

import nsgan  # noqa: E402


def tiny_model(folder: Path) -> Path:
    """The tests' fixture recipe (tests/conftest.py: model_file + gan_model_with_encoder): 16-px gray, untrained."""
    torch.manual_seed(0)
    g = nsgan.Generator(16, 1, latent_dim=16, fmap_base=64, fmap_max=16)
    d = nsgan.Discriminator(16, 1, fmap_base=64, fmap_max=16)
    path = nsgan.save_model(folder / "tiny.safetensors", g, d, {"config": {}, "images_seen": 0})
    torch.manual_seed(1)
    nsgan.add_encoder(path, nsgan.Encoder(16, 1, 16, fmap_base=64, fmap_max=16), {"images_seen": 0})
    return path


def tile_image(path: Path, n: int, tile: int, channels: int, seed: int) -> Path:
    """A PNG of n random tiles side by side: rows of up to 16 tiles."""
    cols = min(n, 16)
    rows = -(-n // cols)
    nsgan.write_png(path, np.random.default_rng(seed).random((rows * tile, cols * tile, channels), dtype=np.float32))
    return path


def network_rate(scorer, image: Path, out: Path) -> float:
    """Tiles/s of the scorer's network stage on `image`, scored to files as `nsgan score` does."""
    scorer.score_to_files(image, out, "bench", overwrite=True)
    tiles = scorer.timing["megapixels"] * 1e6 / scorer.tile ** 2  # stride = tile: the image is its tiles
    return tiles / scorer.timing["seconds"]["network"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="example: python tools/bench/bench_onnx.py --model runs/tex-demo/model.safetensors --threads 1")
    p.add_argument("--model", help="model.safetensors with an encoder (default: a tiny untrained one, the tests' recipe)")
    p.add_argument("--onnx", help="its `nsgan export-onnx` file (default: exported here into a temporary folder)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for both torch and ONNX Runtime (default 1)")
    p.add_argument("--batches", default="1,16,64", help="batch sizes, comma-separated (default %(default)s)")
    p.add_argument("--tiles", type=int, default=128, help="tiles per round and batch size (default %(default)s)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per side and batch size; median reported (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        tmp = Path(tmp)
        model = Path(a.model) if a.model else tiny_model(tmp)
        if "encoder" not in nsgan.read_metadata(model):
            p.error(f"{model}: holds no encoder; the ONNX tile scorer needs one (nsgan train-encoder)")
        onnx_path = Path(a.onnx) if a.onnx else tmp / "m.onnx"
        if not a.onnx:
            rep = nsgan.export_onnx(model, onnx_path)
            print(f"exported {onnx_path.name} in {rep.seconds:.1f} s; ORT vs torch max abs diff {rep.worst:.2g} at batch 1 and 5")
        batches = [int(b) for b in a.batches.split(",") if b.strip()]
        probe = nsgan.Scorer.from_file(model, device="cpu")
        r, c = probe.tile, probe.channels
        image = tile_image(tmp / "tiles.png", a.tiles, r, c, a.seed)
        sides = {}
        for b in batches:
            opts = nsgan.ScoreOptions(stride=r, batch=b, search=nsgan.SearchConfig(mode="encoder"))
            sides[b] = (nsgan.Scorer.from_file(model, opts, device="cpu"), nsgan.scorer_from_onnx(onnx_path, opts, threads=a.threads))
        t_res, o_res = (side.score(image) for side in sides[batches[0]])
        diff = max(float(np.abs(t_res.map - o_res.map).max()), float(np.abs(t_res.tile_scores - o_res.tile_scores).max()))
        load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
        print(f"model {model} ({r}-px, {c} channel(s)); {a.tiles} random tiles per round, {a.rounds} rounds, "
              f"{a.threads} thread(s) each; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; "
              f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at start; map/score max abs diff {diff:.2g}")
        print("| batch | torch tiles/s | ONNX Runtime tiles/s | ORT / torch |")
        print("|---|---|---|---|")
        for b in batches:
            t_rates, o_rates = [], []
            network_rate(sides[b][0], image, tmp / "torch"), network_rate(sides[b][1], image, tmp / "onnx")  # warm-up
            for _ in range(a.rounds):
                t_rates.append(network_rate(sides[b][0], image, tmp / "torch"))
                o_rates.append(network_rate(sides[b][1], image, tmp / "onnx"))
            t_med, o_med = statistics.median(t_rates), statistics.median(o_rates)
            print(f"| {b} | {t_med:.1f} | {o_med:.1f} | {o_med / t_med:.2f}× |", flush=True)
        load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
        print(f"load average {load[0]:.1f} at the end (above the thread count: the machine was shared)")
    return nsgan.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

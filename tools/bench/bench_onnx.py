"""ONNX Runtime vs torch: tiles/s of the feed-forward scoring call, side by side in one run.

    python tools/bench/bench_onnx.py --model runs/tex-demo/model.safetensors --threads 1
    python tools/bench/bench_onnx.py --model M --onnx m.onnx --threads 2 --batches 1,16,64 --rounds 7
    python tools/bench/bench_onnx.py            # no --model: an untrained 16-px model of the tests' recipe

The model needs an encoder (the ONNX file of a model without one holds G alone and scores nothing).
For each batch size both sides get the same random tiles in [0, 1] and make the Scorer's own per-tile
call (`Scorer._invert`: tiles in, residual maps and tile scores out as torch tensors): torch through
`Scorer.from_file` (encoder mode, fp32), ONNX Runtime (CPU provider) through `scorer_from_onnx`, both
with `--threads` intra-op threads. Rounds alternate torch, ORT, torch, ORT, … so load from other
processes hits both alike; each side's figure is the median tiles/s over the rounds, after one
warm-up round. Tiling, blending and smoothing are the same code either way and are not timed.
Nothing here is a test; the ratio is the figure to trust on a busy machine, not the absolute rates.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def tiny_model(folder: Path) -> Path:
    """The tests' fixture recipe (tests/conftest.py: model_file + gan_model_with_encoder): 16-px gray, untrained."""
    from nsgan.models.encoder import Encoder
    from nsgan.models.model_file import add_encoder, save_model
    from nsgan.models.networks import Discriminator, Generator

    torch.manual_seed(0)
    g = Generator(16, 1, latent_dim=16, fmap_base=64, fmap_max=16)
    d = Discriminator(16, 1, fmap_base=64, fmap_max=16)
    path = save_model(folder / "tiny.safetensors", g, d, {"config": {}, "images_seen": 0})
    torch.manual_seed(1)
    add_encoder(path, Encoder(16, 1, 16, fmap_base=64, fmap_max=16), {"images_seen": 0})
    return path


def rate(call, tiles: np.ndarray, batch: int) -> float:
    """Tiles/s of `call` over all tiles in batches of `batch` (one pass)."""
    ids = np.arange(len(tiles))
    t0 = time.perf_counter()
    for a in range(0, len(tiles), batch):
        call(tiles[a:a + batch], ids[a:a + batch])
    return len(tiles) / (time.perf_counter() - t0)


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

    import onnxruntime

    from nsgan.models.model_file import read_metadata
    from nsgan.share.onnx_export import export_onnx, scorer_from_onnx
    from nsgan.score.scorer import Scorer

    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        model = Path(a.model) if a.model else tiny_model(Path(tmp))
        if "encoder" not in read_metadata(model):
            p.error(f"{model}: holds no encoder; the ONNX tile scorer needs one (nsgan train-encoder)")
        onnx_path = Path(a.onnx) if a.onnx else Path(tmp) / "m.onnx"
        if not a.onnx:
            rep = export_onnx(model, onnx_path)
            print(f"exported {onnx_path.name} in {rep.seconds:.1f} s; ORT vs torch max abs diff {rep.worst:.2g} at batch 1 and 5")
        t_scorer = Scorer.from_file(model, device="cpu")
        o_scorer = scorer_from_onnx(onnx_path, threads=a.threads)
        r, c = t_scorer.tile, t_scorer.channels
        batches = [int(b) for b in a.batches.split(",") if b.strip()]
        tiles = np.random.default_rng(a.seed).random((a.tiles, c, r, r), dtype=np.float32)

        with torch.no_grad():
            tr, ts = t_scorer._invert(tiles[:8], range(8))
            orr, os_ = o_scorer._invert(tiles[:8], range(8))
        diff = max(float((tr - orr).abs().max()), float((ts - os_).abs().max()))
        load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
        print(f"model {model} ({r}-px, {c} channel(s)); {a.tiles} random tiles per round, {a.rounds} rounds, "
              f"{a.threads} thread(s) each; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; "
              f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at start; residual/score max abs diff {diff:.2g}")
        print("| batch | torch tiles/s | ONNX Runtime tiles/s | ORT / torch |")
        print("|---|---|---|---|")
        for b in batches:
            t_rates, o_rates = [], []
            with torch.no_grad():
                rate(t_scorer._invert, tiles, b), rate(o_scorer._invert, tiles, b)  # warm-up
                for _ in range(a.rounds):
                    t_rates.append(rate(t_scorer._invert, tiles, b))
                    o_rates.append(rate(o_scorer._invert, tiles, b))
            t_med, o_med = statistics.median(t_rates), statistics.median(o_rates)
            print(f"| {b} | {t_med:.1f} | {o_med:.1f} | {o_med / t_med:.2f}× |", flush=True)
        load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
        print(f"load average {load[0]:.1f} at the end (above the thread count: the machine was shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

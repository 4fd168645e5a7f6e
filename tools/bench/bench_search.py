"""Benchmark of scoring: the Scorer's batched latent search vs the naive one, achieved FLOP/s, megapixels/s, peak RSS by image size.

    python tools/bench/bench_search.py                 # all figures (a few minutes on 2 busy CPU cores)
    python tools/bench/bench_search.py --sizes 1024 4096 16384 --rss-only

Prints figures; asserts nothing (CI runs the tests, not this).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from nsgan.cli import set_process_defaults  # noqa: E402

set_process_defaults()  # before torch loads

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import nsgan  # noqa: E402


def build(res: int, latent: int, fmap_base: int, fmap_max: int):
    torch.manual_seed(0)
    g = nsgan.Generator(res, 1, latent_dim=latent, fmap_base=fmap_base, fmap_max=fmap_max).eval().requires_grad_(False)
    d = nsgan.Discriminator(res, 1, fmap_base=fmap_base, fmap_max=fmap_max).eval().requires_grad_(False)
    return g, d


def model_file(path: Path, g, d) -> Path:
    """The networks as a model file, so the product's Scorer loads them as it loads any model."""
    return nsgan.save_model(path, g, d, {"config": {}, "images_seen": 0})


def batched_rate(model: Path, tiles: torch.Tensor, cfg) -> float:
    """Tiles/s of the Scorer's batched search (its network stage) on an image of the tiles side by side."""
    n, res = tiles.shape[0], tiles.shape[-1]
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "tiles.png"
        row = ((tiles[:, 0] + 1) / 2).clamp(0, 1).permute(1, 0, 2).reshape(res, n * res)
        nsgan.write_png(image, row.numpy()[:, :, None])
        scorer = nsgan.Scorer.from_file(model, nsgan.ScoreOptions(stride=res, batch=n, search=cfg), device="cpu")
        scorer.score_to_files(image, Path(tmp) / "out", "bench")
        return n / scorer.timing["seconds"]["network"]


def naive_anogan(g, d, x: torch.Tensor, iterations: int, lr: float, lam: float) -> list[float]:
    """The textbook loop: one tile, one latent, torch.optim.Adam, every step."""
    scores = []
    for k in range(x.shape[0]):
        xi = x[k : k + 1]
        fx = d.features(xi)
        z = torch.randn(1, g.latent_dim, requires_grad=True)
        opt = torch.optim.Adam([z], lr=lr)
        for _ in range(iterations):
            gz = g(z)
            loss = (1 - lam) * (xi - gz).abs().mean() + lam * (fx - d.features(gz)).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        scores.append(float(loss.detach()))
    return scores


def search_flops(g, d, n: int) -> float:
    """FLOPs of one search step (G forward, D features forward, backward to z) for n latents."""
    z = torch.randn(n, g.latent_dim, requires_grad=True)
    with FlopCounterMode(display=False) as fc:
        gz = g(z)
        d.features(gz).abs().mean().backward()
    return float(fc.get_total_flops())


def matmul_flops_per_s(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


RSS_CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[4])
import nsgan
res = int(sys.argv[3])
opts = nsgan.ScoreOptions(stride=res, batch=256, search=nsgan.SearchConfig(iterations=1, restarts=1))
s = nsgan.Scorer.from_file(sys.argv[5], opts)
t = time.perf_counter()
r = s.score_to_files(sys.argv[1], sys.argv[2], "bench")
dt = time.perf_counter() - t
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": dt,
                  "tiles": int(r.tile_scores.size)}))
"""


def make_tiff(path: Path, side: int) -> None:
    t = min(256, side)
    rng = np.random.default_rng(0)
    block = rng.integers(100, 156, (t, t), dtype=np.uint8)
    tifffile.imwrite(path, (block for _ in range((side // t) ** 2)), shape=(side, side), dtype=np.uint8,
                     tile=(t, t), bigtiff=True)


def rss_by_size(sizes: list[int], res: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model = model_file(Path(tmp) / "cheap.safetensors", *build(res, 16, 64, 8))
        for side in sizes:
            img = Path(tmp) / f"{side}.tif"
            make_tiff(img, side)
            out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(img), str(Path(tmp) / f"o{side}"), str(res), str(REPO), str(model)],
                                 capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-2000:])
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            mp = side * side / 1e6
            print(f"  {side:>6}²: peak RSS {r['peak_rss_mb']:7.0f} MB, {r['tiles']} tiles, "
                  f"{mp / r['seconds']:.2f} MP/s (1 search step, stride = tile {res})")
            img.unlink()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--latent", type=int, default=64)
    p.add_argument("--fmap-base", type=int, default=256)
    p.add_argument("--fmap-max", type=int, default=32)
    p.add_argument("--tiles", type=int, default=128, help="tiles in the batched search")
    p.add_argument("--naive-tiles", type=int, default=4, help="tiles in the naive loop (rate extrapolates)")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--sizes", type=int, nargs="*", default=[1024, 4096, 16384])
    p.add_argument("--rss-res", type=int, default=64, help="tile of the cheap model used for the RSS runs")
    p.add_argument("--rss-only", action="store_true")
    a = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not a.rss_only:
        g, d = build(a.res, a.latent, a.fmap_base, a.fmap_max)
        with torch.no_grad():
            x = g(torch.randn(a.tiles, a.latent)).clamp(-1, 1)
        cfg = nsgan.SearchConfig(mode="search", iterations=a.iterations, restarts=1, patience=a.iterations + 1,
                                 precision=a.precision)
        with tempfile.TemporaryDirectory() as tmp:
            model = model_file(Path(tmp) / "bench.safetensors", g, d)
            batched_rate(model, x[:8], cfg)  # warm-up
            batched = batched_rate(model, x, cfg)
        t = time.perf_counter()
        naive_anogan(g, d, x[: a.naive_tiles], a.iterations, cfg.lr, cfg.lam)  # the textbook baseline the Scorer is measured against
        naive = a.naive_tiles / (time.perf_counter() - t)
        print(f"model: {a.res}px tiles, latent {a.latent}, fmap_base {a.fmap_base}, fmap_max {a.fmap_max}; "
              f"{a.iterations} steps, 1 start, no early stop, {a.precision}")
        print(f"batched search: {batched:.2f} tiles/s ({a.tiles} tiles at once); naive AnoGAN loop: {naive:.3f} tiles/s; "
              f"ratio {batched / naive:.1f}x")
        flops = search_flops(g, d, a.tiles) * a.iterations / (a.tiles / batched)
        mm = matmul_flops_per_s()
        print(f"search: {flops / 1e9:.2f} GFLOP/s achieved; fp32 matmul 2048²: {mm / 1e9:.2f} GFLOP/s; "
              f"fraction {flops / mm:.2f}")
    print("end to end, peak RSS by image size (cheap model so the pipeline, not the search, is measured):")
    rss_by_size(a.sizes, a.rss_res)
    return nsgan.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

"""Inversion benchmark: speed and detection quality of search, encoder and encoder + refine.

Prints three tables (nothing here is a test; figures are measured side by side in one run):

1. Speed — on one trained model and the same tiles: tiles/s and FLOPs per tile of the 20/100/500-step
   search (early stop off, 1 start; AnoGAN's 3 starts cost 3× the 500-step row: they are rows of the
   same batch), the encoder (one pass) and encoder + refine at 5/20 steps.
2. Quality — on protocol folders (tools/protocols, built as the noisy-normals experiment builds
   them), per inversion mode and image-score rule: image AUROC, pixel AUROC, AUPRO; plus the
   no-learning local-contrast floor on the same images. Maps are computed once per mode and smoothed
   afterwards (the same Gaussian as `--map-sigma`), so every rule is judged on the same maps.
3. Projection — FLOPs per 1024-px tile of configs/industrial-1024.yaml per mode × tiles of a
   32768² image at stride 1024 (scoring's default) and 512 ÷ (the FLOP fraction measured here × an H200's dense bf16 rate).

Models are trained (or reused) by the noisy-normals machinery with an encoder as their last phase:

    python tools/bench/bench_inversion.py --out runs/bench-inversion
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nsgan.cli import set_process_defaults  # noqa: E402

set_process_defaults()  # before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402
from flops import count_flops, matmul_rate  # tools/bench/flops.py (this folder is on sys.path when run as a script)  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

import nsgan  # noqa: E402
from tools.experiments import experiment_noisy as xp  # noqa: E402

H200_BF16_DENSE = 989e12  # FLOP/s, NVIDIA's dense (no sparsity) BF16 tensor-core figure for H100/H200 SXM

SPEED_MODES = [  # (label, mode, steps, starts)
    ("search 20", "search", 20, 1), ("search 100", "search", 100, 1), ("search 500", "search", 500, 1),
    ("encoder", "encoder", 0, 1), ("encoder, map score (no D)", "encoder-map", 0, 1),
    ("refine 5", "refine", 5, 1), ("refine 20", "refine", 20, 1),
]
QUALITY_MODES = [("search 20", "search", 20), ("search 100", "search", 100), ("encoder", "encoder", 0),
                 ("refine 5", "refine", 5), ("refine 20", "refine", 20)]
RULES = [("tile loss", "tile", 0.0), ("map max", "map_max", 0.0), ("map max σ1", "map_max", 1.0),
         ("map max σ2", "map_max", 2.0), ("map max σ4", "map_max", 4.0)]


def train_model(protocol: str, eps: float, out: Path, exp_cfg: dict, budget: float, encoder_kimg: float):
    """A γ = 0 model for (protocol, ε) with an encoder, via the noisy-normals experiment's own steps."""
    spec = dict(exp_cfg["protocols"][protocol])
    spec["train"] = {**spec.get("train", {}), "encoder.kimg": encoder_kimg}
    cfg = {**exp_cfg, "budget_kimg": budget}
    cell = xp.Cell(protocol, eps, "0")
    data = xp.build_data(cell, spec, out, int(cfg.get("seed", 0)))
    model, seconds = xp.train_cell(cell, spec, cfg, out)
    return data, model, spec, seconds


def _options(mode: str, steps: int, starts: int, spec: dict, exp_cfg: dict, batch: int = 128, residual: str = "pixel",
             stride: int | None = None, image_score: str = "map_max", patience: int | None = None):
    s = dict(exp_cfg["search"])
    s.update(mode=mode, iterations=steps if mode != "encoder" else None, restarts=starts)
    if patience is not None:
        s["patience"] = patience
    return nsgan.ScoreOptions(stride=stride or spec.get("score_stride"), batch=batch, search=nsgan.SearchConfig(**s),
                              residual=residual, image_score=image_score)


# ----------------------------------------------------------------------------- speed

def component_flops(G, D, E, resolution: int, channels: int) -> dict[str, int]:
    """FLOPs of one tile's pieces: D features of x, E(x), G + D features forward, and one search step."""
    x = torch.zeros(1, channels, resolution, resolution)
    z = torch.zeros(1, G.latent_dim, requires_grad=True)
    G.requires_grad_(False)
    D.requires_grad_(False)  # as in the search: gradients reach z only
    return {"dx": count_flops(lambda: D.features(x)), "e": count_flops(lambda: E(x)), "g": count_flops(lambda: G(z)),
            "gd": count_flops(lambda: D.features(G(z))), "step": count_flops(lambda: D.features(G(z)).sum().backward())}


def tile_flops(c: dict[str, int], mode: str, steps: int, starts: int) -> int:
    """FLOPs per tile of an inversion mode, from component_flops (every step taken: no early stop)."""
    if mode == "encoder":
        return c["dx"] + c["e"] + c["gd"]
    if mode == "encoder-map":  # the default scoring path: no tile loss, so no D
        return c["e"] + c["g"]
    if mode == "refine":
        return c["dx"] + c["e"] + steps * c["step"] + c["gd"]
    return c["dx"] + starts * (steps * c["step"] + c["gd"])




def tiles_image(data: Path, tile: int, n_tiles: int, path: Path) -> Path:
    """A PNG of n_tiles test tiles (grid tiles of the test images, repeated as needed) side by side."""
    tiles = []
    for it in nsgan.read_test_set(data)[0]:
        img = nsgan.read_image(it.path)
        tiles += [img[y:y + tile, x:x + tile] for y in range(0, img.shape[0] - tile + 1, tile)
                  for x in range(0, img.shape[1] - tile + 1, tile)]
    tiles = (tiles * (-(-n_tiles // len(tiles))))[:n_tiles]
    nsgan.write_png(path, np.concatenate(tiles, axis=1))
    return path


def speed_table(model: Path, data: Path, spec: dict, exp_cfg: dict, n_tiles: int) -> tuple[list[dict], float]:
    """tiles/s (the Scorer's network stage) and FLOPs/tile per mode on the same n_tiles test tiles; also the matmul
    FLOP/s for the fraction."""
    m = nsgan.load_model(model)
    comp = component_flops(m.generator, m.discriminator, m.encoder, m.resolution, m.channels)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-inversion-") as tmp:
        image = tiles_image(data, m.resolution, n_tiles, Path(tmp) / "tiles.png")
        for label, mode, steps, starts in SPEED_MODES:
            # every step counted (no early stop); the tile loss (D) only where the row asks for it
            opts = _options(mode.removesuffix("-map"), steps, starts, spec, exp_cfg, stride=m.resolution, patience=10**9,
                            image_score="map_max" if mode == "encoder-map" else "tile")
            scorer = nsgan.Scorer.from_file(model, opts)
            scorer.score_to_files(image, Path(tmp) / "out", "bench", overwrite=True)
            dt = scorer.timing["seconds"]["network"]
            flops = tile_flops(comp, mode, steps, starts)
            rows.append({"mode": label, "tiles_s": n_tiles / dt, "flops_tile": flops, "seconds": dt})
            print(f"  {label:32s} {n_tiles / dt:10.1f} tiles/s  {flops / 1e9:9.3f} GFLOP/tile", flush=True)
    return rows, matmul_rate()


# ----------------------------------------------------------------------------- quality

def _metrics(scores, labels, maps, masks) -> dict:
    out = {"image_auroc": nsgan.image_auroc(np.asarray(scores), np.asarray(labels))}
    if masks is not None:
        rng = nsgan.ScoreRange()
        for m in maps:
            rng.update(m)
        px = nsgan.PixelMetrics(rng.lo, rng.hi)
        for m, g in zip(maps, masks):
            px.update(m, g)
        out["pixel_auroc"], out["aupro"] = px.pixel_auroc(), px.aupro()
    return out


def quality_rows(model: Path, data: Path, spec: dict, exp_cfg: dict) -> list[dict]:
    items, use_masks = nsgan.read_test_set(data)
    images = [nsgan.read_image(it.path) for it in items]
    labels = [it.defective for it in items]
    masks = [nsgan.read_mask(it.mask, im.shape[:2]) for it, im in zip(items, images)] if use_masks else None
    rows = []
    for label, mode, steps in QUALITY_MODES:
        for residual in ("pixel", "detail"):
            scorer = nsgan.Scorer.from_file(model, _options(mode, steps, 1, spec, exp_cfg, residual=residual, image_score="tile"))
            t0 = time.perf_counter()
            results = list(scorer.score_all(images))
            dt = time.perf_counter() - t0
            for rule_label, rule, sigma in RULES:
                maps = [gaussian_filter(r.map.astype(np.float64), sigma, mode="reflect", truncate=4.0) if sigma else r.map
                        for r in results]
                scores = [float(r.tile_scores.max()) if rule == "tile" else float(m.max()) for r, m in zip(results, maps)]
                rows.append({"mode": label, "residual": residual, "rule": rule_label, "seconds": dt,
                             **_metrics(scores, labels, maps, masks)})
            print(f"  {label:10s} {residual:6s} {dt:6.1f} s  " + "  ".join(f"{r['rule']}: {_fmt(r)}" for r in rows[-len(RULES):]),
                  flush=True)
    rows.append(floor_row(images, labels, masks))
    return rows


def floor_row(images, labels, masks) -> dict:
    f = nsgan.LocalContrast()
    maps = [f.map(im) for im in images]
    return {"mode": "local-contrast floor", "residual": "-", "rule": f"map max (blur σ {f.blur_sigma:g}, map σ {f.map_sigma:g})",
            "seconds": 0.0, **_metrics([f.score(m) for m in maps], labels, maps, masks)}


def _fmt(r: dict) -> str:
    return "/".join(f"{r[k]:.3f}" for k in ("image_auroc", "pixel_auroc", "aupro") if k in r)


# ----------------------------------------------------------------------------- projection

def projection(matmul_fraction: float, config: Path, refine_steps=(5, 20), search_steps=(20, 500)) -> list[dict]:
    """Seconds per 32768² image on one H200 per mode, from FLOPs counted on the 1024-px networks (meta tensors)."""
    cfg = nsgan.load_config(config, ["data.normal=unused"])
    m = cfg.model
    with torch.device("meta"):
        G = nsgan.Generator(m.resolution, 3, m.latent_dim, m.fmap_base, m.fmap_max)
        D = nsgan.Discriminator(m.resolution, 3, m.fmap_base, m.fmap_max, m.mbstd_group)
        E = nsgan.Encoder(m.resolution, 3, m.latent_dim, m.fmap_base, m.fmap_max)
        c = component_flops(G, D, E, m.resolution, 3)
    rate = matmul_fraction * H200_BF16_DENSE
    per_tile = {"encoder, map score (default)": tile_flops(c, "encoder-map", 0, 1), "encoder + tile loss": tile_flops(c, "encoder", 0, 1)}
    for k in refine_steps:
        per_tile[f"refine {k}"] = tile_flops(c, "refine", k, 1)
    for k in search_steps:
        per_tile[f"search {k}"] = tile_flops(c, "search", k, 1)
    per_tile["search 500 × 3 starts"] = tile_flops(c, "search", 500, 3)
    rows = []
    for stride in (m.resolution, m.resolution // 2):  # scoring's default (no overlap), and half-tile overlap
        tiles = math.ceil(32768 / stride) ** 2 if stride == m.resolution else ((32768 - m.resolution) // stride + 1) ** 2
        rows += [{"mode": k, "stride": stride, "tflop_tile": v / 1e12, "tiles": tiles, "seconds": v * tiles / rate}
                 for k, v in per_tile.items()]
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "configs/experiments/noisy-cpu.yaml"), help="noisy-normals experiment config")
    p.add_argument("--out", default="runs/bench-inversion")
    p.add_argument("--protocols", default="textures,mnist")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--budget-kimg", type=float, default=None, help="GAN kimg per model (default: the config's)")
    p.add_argument("--encoder-kimg", type=float, default=10.0)
    p.add_argument("--speed-tiles", type=int, default=64)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-quality", action="store_true", help="speed and projection only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--industrial", default=str(REPO / "configs/industrial-1024.yaml"))
    p.add_argument("--model", help="measure this model (with an encoder) instead of training one; needs --data and one protocol")
    p.add_argument("--data", help="the protocol folder --model is measured on")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    exp_cfg = xp.load_experiment(a.config)
    budget = a.budget_kimg or float(exp_cfg["budget_kimg"])
    out = Path(a.out)
    report: dict = {"eps": a.eps, "budget_kimg": budget, "encoder_kimg": a.encoder_kimg, "protocols": {}}
    first = None
    for protocol in a.protocols.split(","):
        print(f"== {protocol} (ε = {a.eps}, {budget:g} kimg GAN + {a.encoder_kimg:g} kimg encoder)", flush=True)
        if a.model:
            data, model, spec, secs = Path(a.data), Path(a.model), dict(exp_cfg["protocols"][protocol]), 0.0
        else:
            data, model, spec, secs = train_model(protocol, a.eps, out, exp_cfg, budget, a.encoder_kimg)
        first = first or (model, data, spec)
        report["protocols"][protocol] = {"model": str(model), "train_seconds_now": secs,
                                         "quality": [] if a.skip_quality else quality_rows(model, data, spec, exp_cfg)}
    if not a.skip_speed and first:
        print("== speed (first protocol's model)", flush=True)
        rows, matmul = speed_table(first[0], first[1], first[2], exp_cfg, a.speed_tiles)
        report["speed"] = rows
        report["matmul_flops"] = matmul
        search_rate = next(r["flops_tile"] * r["tiles_s"] for r in rows if r["mode"] == "search 500")
        report["flop_fraction"] = search_rate / matmul
        print(f"  matmul {matmul / 1e9:.1f} GFLOP/s; 500-step search at {search_rate / 1e9:.1f} GFLOP/s = {search_rate / matmul:.2f} of it")
        enc = next(r for r in rows if r["mode"].startswith("encoder, map score"))
        for r in rows:
            print(f"  encoder (map score) / {r['mode']}: {enc['tiles_s'] / r['tiles_s']:.1f}×")
        print("== projection: 32768² image, 1024-px tiles at stride 1024 (the default) and 512, one H200 (bf16 dense × the fraction above)")
        report["projection"] = projection(report["flop_fraction"], Path(a.industrial))
        for r in report["projection"]:
            print(f"  {r['mode']:28s} stride {r['stride']:4d} {r['tflop_tile']:8.3f} TFLOP/tile × {r['tiles']:5d} tiles = {r['seconds']:9.1f} s")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_inversion.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'bench_inversion.json'}")
    return nsgan.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

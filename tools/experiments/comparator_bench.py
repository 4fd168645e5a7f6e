"""Does a learned comparator C beat the no-learning floor, and what does the GAN's reconstruction add? (issue 20)

Per texture (brick, grass, gravel: scikit-image's bundled photos) and seed, on the textures protocol (ε = 0.1,
test/<kind> for scratch, pit, crack and test/blob for a shape family the painter never draws), rows of
image AUROC / pixel AUROC / AUPRO, each also per defect kind:

- floor default / floor best: the local-contrast floor (nsgan.score.baselines) at its default and at the best
  setting of baseline_contrast's sweep per figure (picked on the test set: flatters the floor);
- detail: today's default map (encoder mode, detail residual of G(E(x)), σ 1, map max);
- C(x), C(x, blur x), C(x, G(E(x))): the product's Comparator (nsgan.models.comparator) trained with the
  product's ComparatorLoss on the same bank of examples, same seed and steps, differing only in reference;
- C held out: the same C trained with one painter kind (crack / pit / scratch for seeds 0 / 1 / 2) left out of
  the painted AND the labelled examples, and with the blob family left out: those kinds' figures are what
  generalisation is.

One GAN+E per texture (configs/demo.yaml widths, the `gan:` overrides; trained on the seed-0 folder, reused
by every seed and variant; GAN-seed variance is not measured here). One bank per (texture, seed): random
32-px crops of train/good (its hidden defects included, as in real life), a share painted by
nsgan.data.synthetic.SyntheticDefects (all kinds + blobs), a share of tiles of the labelled train/defect
images with their masks, the rest plain; G(E(x)) computed once for every example. Scoring goes through
nsgan.score.scorer.Scorer (its `network` hook: the same tiling, blending, smoothing and image score as
`nsgan score`) and the metrics are nsgan.evaluate.metrics' (the same as `nsgan evaluate`).

    python tools/experiments/comparator_bench.py --config configs/experiments/comparator-cpu.yaml --out runs/cmp

Stages are cached under OUT (data/, gan/, banks/, cells/<texture>-s<seed>/<row>.json); a rerun skips what
exists. `--only gan` trains the GANs alone; `--textures`/`--seeds` narrow the grid. Results: OUT/results.md|json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

FIGURES = ("image_auroc", "pixel_auroc", "aupro")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------ data and GAN

def data_dir(out: Path, texture: str, seed: int) -> Path:
    return out / "data" / f"{texture}-s{seed}"


def build_data(cfg: dict, out: Path, texture: str, seed: int) -> Path:
    from tools.protocols.textures import build_textures

    d = data_dir(out, texture, seed)
    if not (d / "protocol.json").is_file():
        build_textures(d, texture=texture, seed=seed, overwrite=True, **cfg["protocol"])
    return d


def train_gan(cfg: dict, out: Path, texture: str, code: Path) -> Path:
    """GAN + E for `texture` on its seed-0 folder (cached); trained by `nsgan train` in a subprocess."""
    from nsgan.data.shards import write_shards

    run = out / "gan" / texture
    model = run / "model.safetensors"
    if model.is_file():
        return model
    data = build_data(cfg, out, texture, 0)
    shards = out / "gan" / f"{texture}-shards"
    if not (shards / "manifest.json").is_file():
        write_shards(data / "train" / "good", None, None, tile=cfg["tile"], out=shards,
                     stride=cfg["shard_stride"], channels=1, seed=0, overwrite=True)
    ov = [f"data.normal={shards / 'normal'}", "data.abnormal=", f"run_dir={run}", "seed=0",
          f"model.resolution={cfg['tile']}"] + [f"{k}={v}" for k, v in cfg["gan"].items()]
    resume = ["--resume"] if (run / "checkpoints" / "latest.json").is_file() else []
    cmd = [sys.executable, "-m", "nsgan.cli", "train", "--config", str(code / "configs" / "demo.yaml"), *resume, *ov]
    log(f"GAN {texture}: {' '.join(cmd)}")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=code, env={**os.environ, "PYTHONPATH": str(code)})
    (run / "bench_seconds.json").write_text(json.dumps({"seconds": time.perf_counter() - t0}))
    return model


# ------------------------------------------------------------------------------ networks

def load_gan(model: Path):
    from nsgan.models.model_file import load_model

    m = load_model(model)
    return m


class Reconstructor:
    """G(E(x)) for tiles in [0, 1] -> reconstructions in [-1, 1], through the product's encoder pass; cached
    by tile content, so every row of a pair reuses the test tiles' reconstructions."""

    def __init__(self, m):
        from nsgan.score.search import LatentSearch, SearchConfig

        self.search = LatentSearch(m.generator, m.discriminator, SearchConfig(mode="encoder"), encoder=m.encoder)
        self.cache: dict[bytes, np.ndarray] = {}

    def __call__(self, tiles: np.ndarray, batch: int = 256) -> np.ndarray:
        import hashlib

        import torch

        keys = [hashlib.blake2b(t.tobytes(), digest_size=16).digest() for t in tiles]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        for a in range(0, len(todo), batch):
            idx = todo[a:a + batch]
            x = torch.from_numpy(np.ascontiguousarray(tiles[idx])) * 2 - 1
            rec = self.search.encoder_pass(x, tile_losses=False).reconstructions.numpy()
            for i, r in zip(idx, rec):
                self.cache[keys[i]] = r.astype(np.float32)
        return np.stack([self.cache[k] for k in keys]) if keys else np.zeros_like(tiles)


class MapNetwork:
    """The Scorer's `network` hook: tiles (N, C, T, T) in [0, 1] -> (maps (N, T, T), tile scores (N,))."""

    def __init__(self, kind: str, rec: Reconstructor | None = None, comparator=None, discriminator=None):
        self.kind, self.rec, self.C, self.D = kind, rec, comparator, discriminator

    def check_options(self, options) -> None:  # any map option: this network computes its own map
        return None

    def __call__(self, tiles: np.ndarray):
        import torch

        from nsgan.score.maps import tile_residual

        x = torch.from_numpy(np.ascontiguousarray(tiles)) * 2 - 1
        if self.kind == "d_logit":  # D's "fake" probability of the whole tile, spread over it (D has no patch head here)
            with torch.no_grad():
                p = torch.sigmoid(-self.D(x).float()).numpy()
            return np.broadcast_to(p[:, None, None], (len(p), *tiles.shape[2:])).astype(np.float32), p
        rec = torch.from_numpy(self.rec(tiles)) if self.rec is not None else None
        with torch.no_grad():
            if self.kind == "comparator":
                m = torch.sigmoid(self.C(x, rec))[:, 0]
            else:
                m = tile_residual(x, rec, self.kind)
        m = m.float().numpy()
        return m, m.reshape(len(m), -1).max(1)


# ------------------------------------------------------------------------------ measuring

def test_items(data: Path):
    from nsgan.evaluate.evaluation import check_items, collect

    items, use_masks = collect(data)
    check_items(items, 1)
    assert use_masks
    return items


def scorer_maps(items, network, tile: int, stride: int, map_sigma: float):
    from nsgan.score.options import ScoreOptions
    from nsgan.score.scorer import Scorer

    opts = ScoreOptions(stride=stride, batch=512, map_sigma=map_sigma)
    sc = Scorer(None, None, resolution=tile, channels=1, options=opts, network=network, name="bench")
    maps, scores = [], []
    for res in sc.score_all([it.path for it in items]):
        maps.append(res.map.astype(np.float32))
        scores.append(float(res.score))
    return maps, np.array(scores)


def floor_maps(items, floor):
    from nsgan.data.imageio import read_image

    maps = [floor.map(read_image(it.path)) for it in items]
    return maps, np.array([floor.score(m) for m in maps])


def figures(items, maps, scores) -> dict:
    """Image AUROC, pixel AUROC, AUPRO over all test images, and per kind (that kind's images + all good ones)."""
    from nsgan.evaluate.evaluation import GOOD, read_mask
    from nsgan.evaluate.metrics import PixelMetrics, image_auroc

    gts = [read_mask(it.mask, m.shape) for it, m in zip(items, maps)]
    labels = np.array([it.defective for it in items])
    lo = float(min(m.min() for m in maps))
    hi = float(max(m.max() for m in maps))

    def one(sel):
        pm = PixelMetrics(lo, hi if hi > lo else lo + 1e-6)
        for i in sel:
            pm.update(maps[i], gts[i], image_id=i)
        return {"image_auroc": float(image_auroc(scores[sel], labels[sel])), "pixel_auroc": float(pm.pixel_auroc()),
                "aupro": float(pm.aupro())}

    out = one(np.arange(len(items)))
    kinds = sorted({it.kind for it in items if it.kind != GOOD})
    good = [i for i, it in enumerate(items) if it.kind == GOOD]
    out["per_kind"] = {k: one(np.array(good + [i for i, it in enumerate(items) if it.kind == k])) for k in kinds}
    return out


# ------------------------------------------------------------------------------ the bank and C

def _crops(images: list[np.ndarray], n: int, tile: int, rng, masks=None):
    """n random tile crops (n, C, T, T) of the images (and of their masks), with the source index."""
    src = rng.integers(len(images), size=n)
    out = np.empty((n, images[0].shape[2], tile, tile), np.float32)
    mout = np.zeros((n, 1, tile, tile), bool)
    for j, i in enumerate(src):
        h, w = images[i].shape[:2]
        y, x = int(rng.integers(h - tile + 1)), int(rng.integers(w - tile + 1))
        out[j] = np.moveaxis(images[i][y:y + tile, x:x + tile], 2, 0)
        if masks is not None:
            mout[j, 0] = masks[i][y:y + tile, x:x + tile]
    return out, mout, src


def build_bank(cfg: dict, out: Path, texture: str, seed: int, data: Path, recon: Reconstructor) -> dict:
    """The pair's training examples (x, rec, target, tag), drawn once and cached as .npz."""
    from nsgan.data.imageio import MASK_SUFFIX, list_images, read_image
    from nsgan.data.synthetic import SyntheticDefects

    path = out / "banks" / f"{texture}-s{seed}{bank_tag(cfg)}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        bank = {k: z[k] for k in z.files}
        if not bool(bank["has_rec"]) and recon is not None:  # drawn before the GAN existed: add G(E(x))
            t0 = time.perf_counter()
            bank["rec"], bank["has_rec"] = recon(bank["x"]).astype(np.float32), np.array(True)
            np.savez(path, **bank)
            log(f"bank {texture}-s{seed}: G(E(x)) added in {time.perf_counter() - t0:.0f} s")
        return bank
    t0 = time.perf_counter()
    b, tile = cfg["bank"], cfg["tile"]
    rng = np.random.default_rng(1000 + seed)
    proto = json.loads((data / "protocol.json").read_text())
    normals = [read_image(p) for p in list_images(data / "train" / "good")]
    n = int(b["size"])
    n_paint, n_lab = int(round(b["paint_fraction"] * n)), int(round(b["labelled_fraction"] * n))
    x_norm, _, _ = _crops(normals, n - n_lab, tile, rng)
    painter = SyntheticDefects(bit_depth=8)
    painted, pmask, ptags = [], [], []
    for a in range(0, n_paint, 32):  # in training-sized batches: a blob's `swap` fill takes another tile of the batch
        o, m, t = painter.apply(x_norm[a:min(a + 32, n_paint)], rng)
        painted.append(o), pmask.append(m), ptags.extend(t)
    lab_kinds = {Path(e["path"]).stem: "+".join(e["kinds"]) for e in proto["labelled_train"]}
    lab_paths = list_images(data / "train" / "defect")
    lab_imgs = [read_image(p) for p in lab_paths]
    lab_masks = [read_image(data / "ground_truth_train" / "defect" / f"{p.stem}{MASK_SUFFIX}.png").max(axis=2) > 0.5
                 for p in lab_paths]
    x_lab, m_lab, src = _crops(lab_imgs, n_lab, tile, rng, lab_masks)
    x = np.concatenate([np.concatenate(painted), x_norm[n_paint:], x_lab])
    target = np.concatenate([np.concatenate(pmask), np.zeros((n - n_lab - n_paint, 1, tile, tile), bool), m_lab])
    tags = ptags + ["normal"] * (n - n_lab - n_paint) + ["labelled:" + lab_kinds[lab_paths[i].stem] for i in src]
    rec = recon(x) if recon is not None else np.zeros_like(x)
    bank = {"x": x.astype(np.float32), "rec": rec.astype(np.float32), "target": target, "tags": np.array(tags),
            "has_rec": np.array(recon is not None)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **bank)
    log(f"bank {texture}-s{seed}: {n} examples in {time.perf_counter() - t0:.0f} s")
    return bank


def keep_for(tags: np.ndarray, held_out: str | None) -> np.ndarray:
    """Bank rows a C holding out `held_out` (a painter kind, or 'blob') may train on."""
    if held_out is None:
        return np.ones(len(tags), bool)
    keep = []
    for t in tags:
        t = str(t)
        if held_out == "blob":
            keep.append(not t.startswith("blob"))
        elif t.startswith("labelled:"):
            keep.append(held_out not in t.split(":", 1)[1].split("+"))
        else:
            keep.append(t != held_out)
    return np.array(keep)


def train_comparator(cfg: dict, bank: dict, reference: str, seed: int, held_out: str | None = None):
    import torch

    from nsgan.models.comparator import Comparator, ComparatorSpec
    from nsgan.models.comparator_loss import ComparatorLoss

    c = cfg["comparator"]
    torch.manual_seed(seed)
    C = Comparator(ComparatorSpec(channels=1, reference=reference, width=int(c["width"])))
    loss_fn = ComparatorLoss(c.get("loss", "focal_dice"))
    opt = torch.optim.Adam(C.parameters(), lr=float(c["lr"]), betas=(0.9, 0.99))
    keep = np.nonzero(keep_for(bank["tags"], held_out))[0]
    x = torch.from_numpy(bank["x"][keep]) * 2 - 1
    rec = torch.from_numpy(bank["rec"][keep])
    tgt = torch.from_numpy(bank["target"][keep]).float()
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    stats = {}
    for step in range(int(c["steps"])):
        idx = torch.randint(len(keep), (int(c["batch"]),), generator=gen)
        logits = C(x[idx], rec[idx] if C.needs_reconstruction else None)
        loss, stats = loss_fn(logits, tgt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    C.eval().requires_grad_(False)
    return C, {"seconds": time.perf_counter() - t0, "examples": int(len(keep)), "final_loss": float(loss.detach()), **stats}


# ------------------------------------------------------------------------------ one (texture, seed)

def bank_tag(cfg: dict) -> str:
    """'' for the 2048-example bank the first tables used, '-bank<N>' for another size."""
    n = int(cfg["bank"]["size"])
    return "" if n == 2048 else f"-bank{n}"


def ctag(cfg: dict) -> str:
    """The C settings' folder name, so runs with other settings do not overwrite each other."""
    c = cfg["comparator"]
    return f"w{c['width']}-n{c['steps']}-b{c['batch']}-lr{c['lr']:g}-{c.get('loss', 'focal_dice')}{bank_tag(cfg)}"


def _row(path: Path, make):
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    r = make()
    r["seconds_total"] = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=1))
    return r


def run_pair(cfg: dict, out: Path, texture: str, seed: int, gan: bool = True) -> None:
    from tools.experiments.baseline_contrast import SWEEP_BLUR, SWEEP_MAP

    from nsgan.score.baselines import LocalContrast

    data = build_data(cfg, out, texture, seed)
    cells = out / "cells" / f"{texture}-s{seed}"
    items = test_items(data)
    tile, stride, sigma = cfg["tile"], cfg["score_stride"], float(cfg.get("map_sigma", 1.0))

    def floor_rows():
        rows = []
        for bs in SWEEP_BLUR:
            for ms in SWEEP_MAP:
                f = LocalContrast(bs, ms)
                rows.append({"blur_sigma": bs, "map_sigma": ms, **figures(items, *floor_maps(items, f))})
        return {"rows": rows}

    floor = _row(cells / "floor.json", floor_rows)
    log(f"{texture}-s{seed}: floor done")
    if not gan:
        recon = None
    else:
        recon = Reconstructor(load_gan(out / "gan" / texture / "model.safetensors"))

    def g_quality():
        from nsgan.data.imageio import list_images, read_image

        goods = [read_image(p) for p in list_images(data / "test" / "good")]
        t, _, _ = _crops(goods, 512, tile, np.random.default_rng(5))
        r = recon(t)
        import torch

        from nsgan.models.comparator import Comparator, ComparatorSpec

        x = torch.from_numpy(np.ascontiguousarray(t)) * 2 - 1  # what a blur of x would give as the reference
        blurred = Comparator(ComparatorSpec(channels=1, reference="blur")).blur(x).numpy()
        return {"mean_abs_err": float(np.abs((t * 2 - 1) - r).mean() / 2),
                "blur_mean_abs_err": float(np.abs((t * 2 - 1) - blurred).mean() / 2)}

    if recon is not None:
        gq = _row(cells / "g_quality.json", g_quality)
        _row(cells / "detail.json", lambda: figures(items, *scorer_maps(items, MapNetwork("detail", recon), tile, stride, sigma)))
        d_net = MapNetwork("d_logit", discriminator=recon.search.D.eval())
        _row(cells / "d_logit.json", lambda: figures(items, *scorer_maps(items, d_net, tile, stride, sigma)))
        log(f"{texture}-s{seed}: detail done (G mean |x - G(E(x))| {gq['mean_abs_err']:.3f})")
    bank = build_bank(cfg, out, texture, seed, data, recon)
    k_out = cfg["held_out"][seed] if seed in cfg["held_out"] else cfg["held_out"][seed % len(cfg["held_out"])]
    runs = [(ref, None) for ref in cfg["variants"]]
    which = cfg.get("held_out_which", "both")
    held = {"both": (k_out, "blob"), "kind": (k_out,), "blob": ("blob",), "none": ()}[which]
    runs += [(ref, h) for ref in cfg.get("held_out_refs", ["reconstruction"]) for h in held]
    for ref, held in runs:
        name = f"C-{ref}" + (f"-without-{held}" if held else "")

        def make(ref=ref, held=held):
            C, info = train_comparator(cfg, bank, ref, seed, held)
            net = MapNetwork("comparator", recon if C.needs_reconstruction else None, C)
            return {**figures(items, *scorer_maps(items, net, tile, stride, sigma)), "train": info,
                    "reference": ref, "held_out": held}

        r = _row(cells / ctag(cfg) / f"{name}.json", make)
        log(f"{texture}-s{seed}: {name}: image {r['image_auroc']:.3f} pixel {r['pixel_auroc']:.3f} "
            f"aupro {r['aupro']:.3f} ({r['train']['seconds']:.0f} s training)")


# ------------------------------------------------------------------------------ tables

ROWS = [("floor default", "floor:2:1"), ("floor best (per figure, on test)", "floor:best"),
        ("detail residual of G(E(x)) (today's default)", "detail"), ("D's tile logit (γ = 0 GAN)", "d_logit"),
        ("C(x)", "C-none"), ("C(x, blur x)", "C-blur"), ("C(x, G(E(x)))", "C-reconstruction")]
TARGETS = {"image_auroc": 0.90, "pixel_auroc": 0.95, "aupro": 0.85}


def load_cells(out: Path, texture: str, seed: int, tag: str) -> dict:
    cells = out / "cells" / f"{texture}-s{seed}"
    rows = {p.stem: json.loads(p.read_text()) for p in sorted([*cells.glob("*.json"), *(cells / tag).glob("*.json")])}
    if "floor" in rows:
        fl = rows.pop("floor")["rows"]
        for r in fl:
            rows[f"floor:{r['blur_sigma']:g}:{r['map_sigma']:g}"] = r
        rows["floor:best"] = {f: max(r[f] for r in fl) for f in FIGURES}
        best_px = max(fl, key=lambda r: r["pixel_auroc"])
        rows["floor:best"]["per_kind"] = best_px["per_kind"]
        rows["floor:best"]["setting"] = f"σ_blur {best_px['blur_sigma']:g}, σ_map {best_px['map_sigma']:g}"
    return rows


def _ms(vals) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    return f"{np.mean(vals):.3f}" + (f" ± {np.std(vals):.3f}" if len(vals) > 1 else "")


def write_results(cfg: dict, out: Path, textures, seeds) -> None:
    data = {t: {s: load_cells(out, t, s, ctag(cfg)) for s in seeds} for t in textures}
    lines = ["# Comparator benchmark", "", f"config: `{json.dumps(cfg)}`", "",
             "Mean ± sd over seeds " + ", ".join(map(str, seeds)) + " (image AUROC / pixel AUROC / AUPRO).", ""]
    lines += ["| row | " + " | ".join(f"{t} image | {t} pixel | {t} AUPRO" for t in textures) + " | mean image | mean pixel | mean AUPRO |",
              "|---|" + "---|" * (3 * len(textures) + 3)]
    summary = {}
    for label, key in ROWS:
        cols, allf = [], {f: [] for f in FIGURES}
        for t in textures:
            for f in FIGURES:
                v = [data[t][s][key][f] for s in seeds if key in data[t][s]]
                cols.append(_ms(v))
                if v:
                    allf[f].append(float(np.mean(v)))
                summary.setdefault(key, {}).setdefault(t, {})[f] = float(np.mean(v)) if v else None
        lines.append(f"| {label} | " + " | ".join(cols) + " | " + " | ".join(_ms(allf[f]) if allf[f] else "–" for f in FIGURES) + " |")
    lines += ["", "## Per seed", "", "G's and the blur's mean |x − reference| on 512 test/good crops, for scale (x in [0, 1]).", "",
              "| texture | seed | row | image | pixel | AUPRO |", "|---|---|---|---|---|---|"]
    for t in textures:
        for s in seeds:
            gq = data[t][s].get("g_quality", {})
            if gq.get("mean_abs_err") is not None:
                lines.append(f"| {t} | {s} | mean \\|x − G(E(x))\\| {gq['mean_abs_err']:.3f}, mean \\|x − blur x\\| "
                             f"{gq.get('blur_mean_abs_err', float('nan')):.3f} | | | |")
            for label, key in ROWS:
                r = data[t][s].get(key)
                if r:
                    lines.append(f"| {t} | {s} | {label} | " + " | ".join(f"{r[f]:.3f}" for f in FIGURES) + " |")
    kinds = ("scratch", "pit", "crack", "blob")
    lines += ["", "## Per kind (image AUROC / pixel AUROC / AUPRO on that kind's images + all good ones)", "",
              "| texture | seed | row | " + " | ".join(kinds) + " |", "|---|---|---|" + "---|" * len(kinds)]
    for t in textures:
        for s in seeds:
            for label, key in ROWS + [(k, k) for k in sorted(data[t][s]) if k.startswith("C-") and "-without-" in k]:
                r = data[t][s].get(key)
                if r and "per_kind" in r:
                    pk = r["per_kind"]
                    lines.append(f"| {t} | {s} | {label} | " + " | ".join(
                        " / ".join(f"{pk[k][f]:.3f}" for f in FIGURES) if k in pk else "–" for k in kinds) + " |")
    lines += ["", "## Per kind, mean over seeds (image AUROC / pixel AUROC / AUPRO)", "",
              "| texture | row | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
    for t in textures:
        for label, key in ROWS:
            cells = [data[t][s][key] for s in seeds if key in data[t][s] and "per_kind" in data[t][s][key]]
            if cells:
                lines.append(f"| {t} | {label} | " + " | ".join(
                    " / ".join(f"{np.mean([c['per_kind'][k][f] for c in cells if k in c['per_kind']]):.3f}" for f in FIGURES)
                    if any(k in c["per_kind"] for c in cells) else "–" for k in kinds) + " |")
    lines += ["", "## Held out: each kind's figures when C never saw it, beside C trained on it",
              "", "Per kind: image AUROC / pixel AUROC / AUPRO on that kind's test images + all good ones. "
              "'trained' = the C of the same reference trained on every kind; 'held out' = the C that never saw the kind "
              "(neither painted nor labelled); 'its trained kinds' = the held-out C's mean over the kinds it did see.", "",
              "| texture | seed | reference | held-out kind | trained: image / pixel / AUPRO | held out: image / pixel / AUPRO | held-out C on its trained kinds | pixel gap |",
              "|---|---|---|---|---|---|---|---|"]
    held_summary = []
    for t in textures:
        for s in seeds:
            rows = data[t][s]
            for key, r in rows.items():
                if not key.startswith("C-") or not r.get("held_out"):
                    continue
                held, ref = r["held_out"], r["reference"]
                kind = next(k for k in r["per_kind"] if (k == held))
                full = rows.get(f"C-{ref}", {}).get("per_kind", {}).get(kind)
                ho = r["per_kind"][kind]
                seen = [v for k, v in r["per_kind"].items() if k != kind]
                seen_m = {f: float(np.mean([v[f] for v in seen])) for f in FIGURES}
                gap = seen_m["pixel_auroc"] - ho["pixel_auroc"]
                held_summary.append({"texture": t, "seed": s, "reference": ref, "kind": kind, "trained": full,
                                     "held_out": ho, "seen_kinds": seen_m, "pixel_gap": gap})
                fmt = lambda d: " / ".join(f"{d[f]:.3f}" for f in FIGURES) if d else "–"  # noqa: E731
                lines.append(f"| {t} | {s} | {ref} | {kind} | {fmt(full)} | {fmt(ho)} | {fmt(seen_m)} | {gap:+.3f} |")
    lines += ["", "Held out minus trained, same kind and test images, mean over the held-out runs (image / pixel / AUPRO):", ""]
    for ref in sorted({h["reference"] for h in held_summary}):
        hs = [h for h in held_summary if h["reference"] == ref and h["trained"]]
        for fam, sel in (("painter kinds", lambda h: h["kind"] != "blob"), ("blob family", lambda h: h["kind"] == "blob")):
            v = [h for h in hs if sel(h)]
            if v:
                diffs = " / ".join(f"{np.mean([h['held_out'][f] - h['trained'][f] for h in v]):+.3f}" for f in FIGURES)
                worst = min(h["held_out"]["pixel_auroc"] - h["trained"]["pixel_auroc"] for h in v)
                lines.append(f"- {ref}, {fam} ({len(v)} runs): {diffs}; worst pixel {worst:+.3f}")
    lines += ["", "## Targets (mean over seeds; each also ≥ floor best + 0.05)", ""]
    for key in ("C-reconstruction", "C-blur", "C-none"):
        for t in textures:
            c, fb = summary.get(key, {}).get(t, {}), summary.get("floor:best", {}).get(t, {})
            if not c or c.get("pixel_auroc") is None:
                continue
            marks = []
            for f, tgt in TARGETS.items():
                ok = c[f] >= tgt and c[f] >= fb[f] + 0.05
                marks.append(f"{f} {c[f]:.3f} (target {tgt}, floor best {fb[f]:.3f}): {'met' if ok else 'missed'}")
            lines.append(f"- {key} {t}: " + "; ".join(marks))
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"summary": summary, "held_out": held_summary,
                                                  "cells": data}, indent=1, default=str))
    log(f"wrote {out / 'results.md'}")


# ------------------------------------------------------------------------------ CLI

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "configs" / "experiments" / "comparator-cpu.yaml"))
    p.add_argument("--out", required=True)
    p.add_argument("--only", choices=["gan", "all", "results"], default="all",
                   help="gan: train the GANs only; results: rewrite results.md|json from the finished cells only")
    p.add_argument("--textures", nargs="*")
    p.add_argument("--seeds", nargs="*", type=int)
    p.add_argument("--gan-code", default=str(REPO), help="checkout whose `nsgan train` trains the GANs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variants", nargs="*", help="C references to train on all kinds (default: the config's)")
    p.add_argument("--held-out-refs", nargs="*", help="C references trained with a kind held out (default: the config's)")
    p.add_argument("--width", type=int, help="C's width (default: the config's)")
    p.add_argument("--steps", type=int, help="C's training steps (default: the config's)")
    p.add_argument("--lr", type=float, help="C's learning rate (default: the config's)")
    p.add_argument("--loss", help="C's loss kind (default: the config's)")
    p.add_argument("--bank-size", type=int, help="examples in each (texture, seed) bank (default: the config's)")
    p.add_argument("--held-out", choices=["kind", "blob", "both", "none"], default="both",
                   help="which held-out runs to train: the seed's painter kind, the blob family, both or none")
    p.add_argument("--no-gan", action="store_true", help="rows that need no GAN only: floor, C(x), C(x, blur x)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    cfg = yaml.safe_load(Path(args.config).read_text())
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    if args.variants is not None:
        cfg["variants"] = args.variants
    if args.held_out_refs is not None:
        cfg["held_out_refs"] = args.held_out_refs
    if args.no_gan:
        cfg["variants"] = [v for v in cfg["variants"] if v != "reconstruction"]
        cfg["held_out_refs"] = [v for v in cfg.get("held_out_refs", []) if v != "reconstruction"]
    cfg["held_out_which"] = args.held_out
    if args.bank_size is not None:
        cfg["bank"]["size"] = args.bank_size
    for key in ("width", "steps", "lr", "loss"):
        if getattr(args, key) is not None:
            cfg["comparator"][key] = getattr(args, key)
    textures = args.textures or cfg["textures"]
    seeds = args.seeds if args.seeds is not None else cfg["seeds"]
    if args.only == "results":
        write_results(cfg, out, textures, seeds)
        return 0
    for t in textures if not args.no_gan else ():
        train_gan(cfg, out, t, Path(args.gan_code))
    if args.only == "gan":
        return 0
    for t in textures:
        for s in seeds:
            run_pair(cfg, out, t, s, gan=not args.no_gan)
    write_results(cfg, out, textures, seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

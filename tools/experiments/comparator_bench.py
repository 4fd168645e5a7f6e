"""Does the product's comparator C beat the no-learning floor, and what does the GAN's reconstruction add? (issues 20, 24)

Per texture (brick, grass, gravel: scikit-image's bundled photos) and seed, on the textures protocol (ε = 0.1,
test/<kind> for scratch, pit, crack and test/blob for a shape family the painter never draws), rows of
image AUROC / pixel AUROC / AUPRO, each also per defect kind:

- floor default / floor best: the local-contrast floor (nsgan.LocalContrast) at its default and at the best
  setting of baseline_contrast's sweep per figure (picked on the test set: flatters the floor);
- detail: the map of a model without C (encoder mode, detail residual of G(E(x)), σ 1, map max);
- C(x), C(x, blur x), C(x, G(E(x))): C as `nsgan train-comparator` trains it (the product's trainer, loss
  and data: painted defects, masked labelled tiles, multiple-instance bags), with the model's stored
  `comparator:` settings (configs/demo.yaml's, the product's defaults) and only comparator.reference changed;
- C held out: the same C trained with one painter kind (crack / pit / scratch for seeds 0 / 1 / 2) left out of
  comparator.kinds AND of the labelled images, and with the blob family left out (comparator.blob false):
  those kinds' figures are what generalisation is.

One GAN+E per texture (configs/demo.yaml widths, the `gan:` overrides, `nsgan train` on the seed-0 folder's
normal images, reused by every seed and variant; GAN-seed variance is not measured here). `--no-gan` trains
the short `short_gan:` GAN instead and runs only the rows that never read G (floor, C(x), C(x, blur x)): the
model file C is added to needs a G, but these rows' maps do not depend on it. Per (texture, seed) the
comparator reads that seed's shards (train/good plus the labelled train/defect images with their masks,
`nsgan shards`). Every row is scored by `nsgan.Scorer` (the same tiling, blending, smoothing and image score
as `nsgan score`) and measured with nsgan's metrics (the same as `nsgan evaluate`).

    python tools/experiments/comparator_bench.py --config configs/experiments/comparator-cpu.yaml --out runs/cmp

`--protocol visible` runs the same rows on the visible-defect protocol (tools/protocols/visible.py: defects a
person sees, made another way than the painter; the config's `visible_protocol:` settings), whose family `foreign`
never appears in train/defect: no held-out-kind runs are trained, and results.md adds the held-out family's figures
beside the trained families'. Its folders are named vis-<texture>[-s<seed>].

Stages are cached under OUT (data/, shards/, gan/, cells/<texture>-s<seed>/[<C settings>/]<row>.json); a
rerun skips what exists. `--only gan` trains the GANs alone; `--textures`/`--seeds` narrow the grid;
`--width/--steps/--lr/--loss` override the product's comparator settings; `--tta flip|d4` scores C's maps with
test-time views averaged (`nsgan score --tta`). Results: OUT/results.md|json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nsgan.cli import set_process_defaults  # noqa: E402

set_process_defaults()  # before torch loads (a busy CPU: spinning OpenMP waiters)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

import nsgan  # noqa: E402
from tools.experiments.audit_loop import audit_figures, contaminated  # noqa: E402
from tools.experiments.baseline_contrast import SWEEP_BLUR, SWEEP_MAP  # noqa: E402
from tools.protocols.textures import build_textures  # noqa: E402
from tools.protocols.visible import DEFAULT_HOLDOUT, build_visible  # noqa: E402

FIGURES = ("image_auroc", "pixel_auroc", "aupro")
DEMO_CONFIG = REPO / "configs" / "demo.yaml"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------ data, shards, GAN

def cell_name(cfg: dict, texture: str, seed: int | None = None) -> str:
    """The folder name of a (protocol, texture[, seed]): the textures protocol keeps its earlier names."""
    name = ("vis-" if cfg["protocol_name"] == "visible" else "") + texture
    if cfg.get("epsilon") is not None:  # --epsilon: the share of dirty normals, in the name when set
        name += f"-eps{cfg['epsilon']:g}"
    return name if seed is None else f"{name}-s{seed}"


def build_data(cfg: dict, out: Path, texture: str, seed: int) -> Path:
    d = out / "data" / cell_name(cfg, texture, seed)
    if not (d / "protocol.json").is_file():
        if cfg["protocol_name"] == "visible":
            build_visible(d, texture=texture, seed=seed, overwrite=True, **cfg["visible_protocol"])
        else:
            build_textures(d, texture=texture, seed=seed, overwrite=True, **cfg["protocol"])
    return d


def labelled_without(data: Path, kind: str, dest: Path) -> tuple[Path, Path]:
    """Copies of the labelled train/defect images (and masks) that hold no defect of `kind`."""
    images, masks = dest / "defect", dest / "masks"
    if not images.is_dir():
        proto = json.loads((data / "protocol.json").read_text())
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "defect").mkdir(parents=True)
        (tmp / "masks").mkdir()
        for entry in proto["labelled_train"]:
            if kind in entry["kinds"]:
                continue
            src = data / entry["path"]
            shutil.copy2(src, tmp / "defect" / src.name)
            mask = data / "ground_truth_train" / "defect" / f"{src.stem}{nsgan.MASK_SUFFIX}{src.suffix}"
            shutil.copy2(mask, tmp / "masks" / mask.name)
        tmp.rename(dest)
    return images, masks


def clean_normals(data: Path, dest: Path) -> Path:
    """A copy of train/good without its secretly defective images (protocol.json's contaminated_train): the
    clean-normals oracle's data, which no user has."""
    if not dest.is_dir():
        dirty = contaminated(data)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for p in sorted((data / "train" / "good").iterdir()):  # the protocol's train/good is flat
            if p.name not in dirty:
                shutil.copy2(p, tmp / p.name)
        tmp.rename(dest)
    return dest


def seed_shards(cfg: dict, out: Path, texture: str, seed: int, data: Path, held_out: str | None, clean: bool = False) -> Path:
    """The shards C trains on for (texture, seed): train/good (without its dirty images, for the oracle) plus the
    labelled images with masks (without those holding `held_out`, when it is a painter kind)."""
    kind = held_out if held_out in nsgan.DEFECT_KINDS else None
    shards = out / "shards" / (cell_name(cfg, texture, seed) + (f"-without-{kind}" if kind else "") + ("-clean" if clean else ""))
    if not (shards / "manifest.json").is_file():
        if kind:
            abnormal, masks = labelled_without(data, kind, out / "labelled" / f"{texture}-s{seed}-without-{kind}")
        else:
            abnormal, masks = data / "train" / "defect", data / "ground_truth_train" / "defect"
        good = clean_normals(data, out / "clean" / cell_name(cfg, texture, seed)) if clean else data / "train" / "good"
        nsgan.write_shards(nsgan.ShardSpec(good, abnormal_dir=abnormal, abnormal_masks_dir=masks,
                                           tile=cfg["tile"], out=shards, stride=cfg["shard_stride"], channels=1, seed=seed),
                           overwrite=True)
    return shards


def child_env(code: Path, threads: int) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": str(threads)}


def train_gan(cfg: dict, out: Path, texture: str, code: Path, threads: int, short: bool) -> Path:
    """GAN + E (or the short GAN) for `texture` on its seed-0 normal images, by `nsgan train` (cached)."""
    run = nsgan.RunLayout(out / ("gan-short" if short else "gan") / cell_name(cfg, texture))
    if run.model.is_file():
        return run.model
    data = build_data(cfg, out, texture, 0)
    shards = out / "gan" / f"{cell_name(cfg, texture)}-shards"
    if not (shards / "manifest.json").is_file():
        nsgan.write_shards(nsgan.ShardSpec(data / "train" / "good", tile=cfg["tile"], out=shards, stride=cfg["shard_stride"],
                                           channels=1, seed=0), overwrite=True)
    ov = [f"data.normal={shards / 'normal'}", "data.abnormal=", f"run_dir={run.root}", "seed=0",
          f"model.resolution={cfg['tile']}", "comparator.kimg=0"]
    ov += [f"{k}={v}" for k, v in cfg["short_gan" if short else "gan"].items()]
    resume = ["--resume"] if run.resumable() else []
    cmd = [sys.executable, "-m", "nsgan.cli", "train", "--config", str(code / "configs" / "demo.yaml"), *resume, *ov]
    log(f"GAN {texture}: {' '.join(cmd)}")
    subprocess.run(cmd, check=True, cwd=code, env=child_env(code, threads))
    return run.model


def train_c(cfg: dict, gan_model: Path, cell: Path, shards: Path, reference: str, seed: int, held_out: str | None,
            code: Path, threads: int) -> Path:
    """A copy of the GAN's model file with C added by `nsgan train-comparator` (the model's stored config plus
    the reference, the seed, this cell's shards, the held-out kind and the bench's overrides)."""
    run = nsgan.RunLayout(cell)
    if not run.comparator.resumable():
        shutil.rmtree(cell, ignore_errors=True)
        cell.mkdir(parents=True)
        shutil.copy2(gan_model, run.model)
    c = dict(cfg["comparator"])
    if "steps" in c:  # steps of the product's batch: kimg = steps × batch / 1000
        c["kimg"] = int(c.pop("steps")) * int(c.get("batch", nsgan.load_config(DEMO_CONFIG).comparator.batch)) / 1000
    c.setdefault("kimg", nsgan.load_config(DEMO_CONFIG).comparator.kimg)  # the GAN run trained no C (kimg 0)
    c["reference"] = reference
    if held_out == nsgan.BLOB_KIND:
        c["blob"] = "false"
    elif held_out:
        c["kinds"] = "[" + ",".join(k for k in nsgan.DEFECT_KINDS if k != held_out) + "]"
    ov = [f"data.normal={shards / 'normal'}", f"data.abnormal={shards / 'abnormal'}", f"seed={seed}"]
    ov += [f"comparator.{k}={v}" for k, v in c.items()]
    # --denoise: the robust C (issue 27), its fold comparators at the product's denoise_kimg; else none, spelled out, so
    # the rows stay the non-robust C whatever the product's default
    ov.append(f"comparator.denoise={'exclude' if cfg.get('denoise') else 'none'}")
    resume = ["--resume"] if run.comparator.resumable() else []
    cmd = [sys.executable, "-m", "nsgan.cli", "train-comparator", "--model", str(run.model), "--run-dir", str(run.comparator.root),
           *resume, *ov]
    subprocess.run(cmd, check=True, cwd=code, env=child_env(code, threads), stdout=subprocess.DEVNULL)
    return run.model


# ------------------------------------------------------------------------------ measuring

def test_items(data: Path):
    items, use_masks = nsgan.read_test_set(data)
    nsgan.check_test_set(items, 1)
    if not use_masks:
        raise nsgan.DataError(f"{data}: the bench needs pixel masks")
    return items


def model_maps(items, model: Path, cfg: dict, residual: str = "auto", map_sigma: float | None = None):
    """Maps and image scores of the test images from `nsgan.Scorer` at `nsgan score`'s inversion default (encoder mode).

    `--tta` (cfg["tta"]) applies to C's maps (residual auto) only: those rows are cached under ctag's folder, which
    names it; detail.json and g_quality.json are cached outside it, so they stay one pass and never mix."""
    sigma = float(cfg.get("map_sigma", 1.0)) if map_sigma is None else map_sigma
    tta = cfg.get("tta", "none") if residual == "auto" else "none"
    opts = nsgan.ScoreOptions(stride=cfg["score_stride"], batch=512, map_sigma=sigma, residual=residual, tta=tta)
    scorer = nsgan.Scorer.from_file(model, opts, progress=False)
    maps, scores, regions = [], [], []
    for res in scorer.score_all([it.path for it in items]):
        maps.append(res.map.astype(np.float32))
        scores.append(float(res.score))
        regions.append(res.regions)
    return maps, np.array(scores), regions


TOP_K = (16, 64)  # pixels: a micro-defect in a 128-px image covers ~40-160


def rule_scores(maps, regions) -> dict[str, np.ndarray]:
    """Image scores by each rule from the same maps (issue 25 item 3: one false peak should not topple the image
    score): the map max, the mean of the k highest map values, and the largest area × peak of the product's regions
    (those `nsgan score` draws: above the model's pixel threshold, here mean + 4·std of each image's map)."""
    out = {"map_max": np.array([float(m.max()) for m in maps])}  # from the map: the scorer's own score is the default rule
    out.update({f"top{k}_mean": np.array([float(np.partition(m.ravel(), -k)[-k:].mean()) for m in maps]) for k in TOP_K})
    out["region_area_x_peak"] = np.array([max((r.area * r.peak for r in rs), default=0.0) for rs in regions])
    return out


def floor_maps(items, floor):
    maps = [floor.map(nsgan.read_image(it.path)) for it in items]
    return maps, np.array([floor.score(m) for m in maps])


def figures(items, maps, scores, regions=None) -> dict:
    """Image AUROC, pixel AUROC, AUPRO over all test images, and per kind (that kind's images + all good ones);
    with the scorer's regions, also the image AUROC of each other image-score rule (rule_scores)."""
    gts = [nsgan.read_mask(it.mask, m.shape) for it, m in zip(items, maps)]
    labels = np.array([it.defective for it in items])
    lo = float(min(m.min() for m in maps))
    hi = float(max(m.max() for m in maps))

    def one(sel):
        pm = nsgan.PixelMetrics(lo, hi if hi > lo else lo + 1e-6)
        for i in sel:
            pm.update(maps[i], gts[i], image_id=i)
        return {"image_auroc": float(nsgan.image_auroc(scores[sel], labels[sel])), "pixel_auroc": float(pm.pixel_auroc()),
                "aupro": float(pm.aupro())}

    out = one(np.arange(len(items)))
    kinds = sorted({it.kind for it in items if it.kind != nsgan.GOOD_KIND})
    good = [i for i, it in enumerate(items) if it.kind == nsgan.GOOD_KIND]
    out["per_kind"] = {k: one(np.array(good + [i for i, it in enumerate(items) if it.kind == k])) for k in kinds}
    if regions is not None:
        out["image_auroc_by_rule"] = {rule: float(nsgan.image_auroc(v, labels)) for rule, v in rule_scores(maps, regions).items()}
    return out


def g_quality(items, model: Path, cfg: dict) -> dict:
    """Mean |x − G(E(x))| (`nsgan score --residual pixel`, unsmoothed) and mean |x − blur x| (σ 2, C's blur
    reference) over the test/good images, in image units, for scale."""
    good = [it for it in items if it.kind == nsgan.GOOD_KIND]
    maps, _, _ = model_maps(good, model, cfg, residual="pixel", map_sigma=0.0)
    blur = nsgan.LocalContrast(blur_sigma=2.0, map_sigma=0.0)
    return {"mean_abs_err": float(np.mean([m.mean() for m in maps])),
            "blur_mean_abs_err": float(np.mean([blur.map(nsgan.read_image(it.path)).mean() for it in good]))}


# ------------------------------------------------------------------------------ one (texture, seed)

def ctag(cfg: dict) -> str:
    """The C settings' folder name: 'product' for the model's stored settings, else the overrides; `-tta<views>` when
    C's maps average test-time views (so results with and without them do not mix)."""
    c = cfg["comparator"]
    tag = "product" if not c else "-".join(f"{k}{v}" for k, v in sorted(c.items()))
    return tag + ("-denoise" if cfg.get("denoise") else "") + (f"-tta{cfg['tta']}" if cfg.get("tta", "none") != "none" else "")


def _row(path: Path, make):
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    r = make()
    r["seconds_total"] = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    nsgan.atomic_write_json(path, r, indent=1)
    return r


CLEAN = "clean-normals"  # c_runs' marker of the oracle: C trained on train/good without its dirty images


def c_runs(cfg: dict, seed: int) -> list[tuple[str, str | None]]:
    """(reference, held-out kind or None) of every C the cell trains."""
    held = cfg["held_out"]
    k_out = held[seed] if seed in held else held[seed % len(held)]
    which = {"both": (k_out, nsgan.BLOB_KIND), "kind": (k_out,), "blob": (nsgan.BLOB_KIND,), "none": ()}
    runs = [(ref, None) for ref in cfg["variants"]]
    return runs + [(ref, CLEAN) for ref in (cfg["variants"] if cfg.get("oracle") else [])] + [(ref, h) for ref in cfg.get("held_out_refs", ["reconstruction"]) for h in which[cfg.get("held_out_which", "both")]]


def run_pair(cfg: dict, out: Path, texture: str, seed: int, gan: Path, code: Path, threads: int, with_g: bool) -> None:
    """Every row of one (texture, seed) cell, each cached as its own JSON."""
    data = build_data(cfg, out, texture, seed)
    cells = out / "cells" / cell_name(cfg, texture, seed)
    items = test_items(data)

    def floor_rows():
        return {"rows": [{"blur_sigma": bs, "map_sigma": ms, **figures(items, *floor_maps(items, nsgan.LocalContrast(bs, ms)))}
                         for bs in SWEEP_BLUR for ms in SWEEP_MAP]}

    _row(cells / "floor.json", floor_rows)
    log(f"{texture}-s{seed}: floor done")
    if with_g:
        gq = _row(cells / "g_quality.json", lambda: g_quality(items, gan, cfg))
        _row(cells / "detail.json", lambda: figures(items, *model_maps(items, gan, cfg, residual="detail")))
        log(f"{texture}-s{seed}: detail done (mean |x - G(E(x))| {gq['mean_abs_err']:.3f})")
    for ref, held in c_runs(cfg, seed):
        name = f"C-{ref}" + ("-clean" if held == CLEAN else f"-without-{held}" if held else "")

        def make(ref=ref, held=held, name=name):
            clean = held == CLEAN
            held = None if clean else held
            shards = seed_shards(cfg, out, texture, seed, data, held, clean=clean)
            t0 = time.perf_counter()
            model = train_c(cfg, gan, out / "models" / cell_name(cfg, texture, seed) / ctag(cfg) / name, shards, ref, seed, held, code, threads)
            seconds = time.perf_counter() - t0
            meta = nsgan.read_metadata(model)["comparator"]
            return {**figures(items, *model_maps(items, model, cfg)), "reference": ref, "held_out": held, "clean_normals": clean,
                    "train": {"seconds": seconds, "kimg": meta["kimg"], "config": meta["config"]}}

        r = _row(cells / ctag(cfg) / f"{name}.json", make)
        log(f"{texture}-s{seed}: {name}: image {r['image_auroc']:.3f} pixel {r['pixel_auroc']:.3f} aupro {r['aupro']:.3f}")
    if "blur" in cfg["variants"]:
        a = _row(cells / ctag(cfg) / "audit.json", lambda: audit_row(cfg, out, texture, seed, data) or {})
        if "audit_auroc" in a:
            log(f"{texture}-s{seed}: audit {a['audit']}: AUROC {a['audit_auroc']:.3f} precision@{a['n_dirty']} {a['precision_at_k']:.2f}")
        k = cfg.get("audit_folds")
        if k and not cfg.get("denoise"):
            a = _row(cells / ctag(cfg) / f"audit-folds{k}.json", lambda: audit_folds_row(cfg, out, texture, seed, data, k, code, threads) or {})
            if "audit_auroc" in a:
                log(f"{texture}-s{seed}: audit {a['audit']}: AUROC {a['audit_auroc']:.3f} precision@{a['n_dirty']} {a['precision_at_k']:.2f}")


def audit_folds_row(cfg: dict, out: Path, texture: str, seed: int, data: Path, k: int, code: Path, threads: int) -> dict | None:
    """The out-of-fold audit a user runs: `nsgan audit --folds K` of train/good with the default C's model (K fold
    comparators, each trained by the product at the model's stored comparator settings on the other folds' images;
    a stopped run resumes), read back from its audit.csv."""
    cell = out / "models" / cell_name(cfg, texture, seed) / ctag(cfg) / "C-blur"
    run = nsgan.RunLayout(cell)
    if not run.model.is_file():
        return None
    dest = cell.parent / f"audit-folds{k}"
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "nsgan.cli", "audit", "--model", str(run.model), "--data", str(data / "train" / "good"),
           "--out", str(dest), "--folds", str(k), "--no-progress"]
    # models trained before C recorded its shards and seed: name them (the overrides win over what the file says)
    shards = seed_shards(cfg, out, texture, seed, data, None)
    cmd += [f"data.normal={shards / 'normal'}", f"data.abnormal={shards / 'abnormal'}", f"seed={seed}"]
    subprocess.run(cmd, check=True, cwd=code, env=child_env(code, threads), stdout=subprocess.DEVNULL)
    with open(dest / "audit.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    dirty = contaminated(data)
    return {"audit": f"out-of-fold (nsgan audit --folds {k})", "seconds": time.perf_counter() - t0,
            **audit_figures([r["path"] for r in rows], [float(r["score"]) for r in rows], dirty)}


def audit_row(cfg: dict, out: Path, texture: str, seed: int, data: Path) -> dict | None:
    """Issue 27's audit of train/good, AUROC of dirty vs clean and precision@k (k = number dirty): in-sample by
    `nsgan.audit` with the default C (which trained on these images); out-of-fold from the robust C's own fold
    scores (`--denoise`: RUN/comparator/denoise/denoise.json, 2 fold Cs at denoise_kimg, pooled as `nsgan audit
    --folds` pools them)."""
    cell = out / "models" / cell_name(cfg, texture, seed) / ctag(cfg) / "C-blur"
    run = nsgan.RunLayout(cell)
    if not run.model.is_file():
        return None
    dirty = contaminated(data)
    if cfg.get("denoise"):
        record = json.loads((run.comparator.root / "denoise" / "denoise.json").read_text())
        rows, extra = record["rows"], {"excluded": len(record["excluded"]), "excluded_dirty": len(set(record["excluded"]) & dirty)}
        names, scores, kind = [r["path"] for r in rows], [r["z"] for r in rows], "out-of-fold (denoise folds)"
    else:
        res = nsgan.audit(run.model, data / "train" / "good", cell.parent / "audit-in-sample", overwrite=True)
        names, scores, kind, extra = [r.path for r in res.rows], [r.score for r in res.rows], "in-sample", {}
    return {"audit": kind, **audit_figures(names, scores, dirty), **extra}


# ------------------------------------------------------------------------------ tables

ROWS = [("floor default", "floor:2:1"), ("floor best (per figure, on test)", "floor:best"),
        ("detail residual of G(E(x)) (the map without C)", "detail"),
        ("C(x)", "C-none"), ("C(x, blur x) (the default)", "C-blur"), ("C(x, G(E(x)))", "C-reconstruction"),
        ("C(x, blur x) on the clean normals (oracle)", "C-blur-clean"), ("C(x) on the clean normals (oracle)", "C-none-clean")]
TARGETS = {"image_auroc": 0.90, "pixel_auroc": 0.95, "aupro": 0.85}


def kinds_of(data: dict) -> list[str]:
    """The defect kinds (textures protocol) or families (visible) the cells' test sets hold."""
    return sorted({k for by_seed in data.values() for rows in by_seed.values() for r in rows.values() if isinstance(r, dict)
                   for k in r.get("per_kind", {})})


def load_cells(cfg: dict, out: Path, texture: str, seed: int, tag: str) -> dict:
    cells = out / "cells" / cell_name(cfg, texture, seed)
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


def _fmt3(d) -> str:
    return " / ".join(f"{d[f]:.3f}" for f in FIGURES) if d else "–"


def main_table(data: dict, textures, seeds) -> tuple[list[str], dict]:
    """Mean ± sd over seeds per texture and row; also the means per (row, texture, figure)."""
    lines = ["| row | " + " | ".join(f"{t} image | {t} pixel | {t} AUPRO" for t in textures) + " | mean image | mean pixel | mean AUPRO |",
             "|---|" + "---|" * (3 * len(textures) + 3)]
    summary: dict = {}
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
    return lines, summary


def per_seed_tables(data: dict, textures, seeds) -> list[str]:
    kinds = kinds_of(data)
    lines = ["", "## Per seed", "", "Mean |x − G(E(x))| and mean |x − blur x| on the test/good images, for scale (x in [0, 1]).", "",
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
    lines += ["", "## Per kind (image AUROC / pixel AUROC / AUPRO on that kind's images + all good ones)", "",
              "| texture | seed | row | " + " | ".join(kinds) + " |", "|---|---|---|" + "---|" * len(kinds)]
    for t in textures:
        for s in seeds:
            for label, key in ROWS + [(k, k) for k in sorted(data[t][s]) if k.startswith("C-") and "-without-" in k]:
                r = data[t][s].get(key)
                if r and "per_kind" in r:
                    pk = r["per_kind"]
                    lines.append(f"| {t} | {s} | {label} | " + " | ".join(_fmt3(pk.get(k)) for k in kinds) + " |")
    return lines


def per_kind_means(data: dict, textures, seeds) -> list[str]:
    kinds = kinds_of(data)
    lines = ["", "## Per kind, mean over seeds (image AUROC / pixel AUROC / AUPRO)", "",
             "| texture | row | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
    for t in textures:
        for label, key in ROWS:
            cells = [data[t][s][key] for s in seeds if key in data[t][s] and "per_kind" in data[t][s][key]]
            if cells:
                lines.append(f"| {t} | {label} | " + " | ".join(
                    " / ".join(f"{np.mean([c['per_kind'][k][f] for c in cells if k in c['per_kind']]):.3f}" for f in FIGURES)
                    if any(k in c["per_kind"] for c in cells) else "–" for k in kinds) + " |")
    return lines


def held_out_tables(data: dict, textures, seeds) -> tuple[list[str], list[dict]]:
    """Each held-out C beside the C of the same reference trained on every kind, and the mean differences."""
    lines = ["", "## Held out: each kind's figures when C never saw it, beside C trained on it",
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
                kind, ref = r["held_out"], r["reference"]
                full = rows.get(f"C-{ref}", {}).get("per_kind", {}).get(kind)
                ho = r["per_kind"][kind]
                seen = [v for k, v in r["per_kind"].items() if k != kind]
                seen_m = {f: float(np.mean([v[f] for v in seen])) for f in FIGURES}
                gap = seen_m["pixel_auroc"] - ho["pixel_auroc"]
                held_summary.append({"texture": t, "seed": s, "reference": ref, "kind": kind, "trained": full,
                                     "held_out": ho, "seen_kinds": seen_m, "pixel_gap": gap})
                lines.append(f"| {t} | {s} | {ref} | {kind} | {_fmt3(full)} | {_fmt3(ho)} | {_fmt3(seen_m)} | {gap:+.3f} |")
    lines += ["", "Held out minus trained, same kind and test images, mean over the held-out runs (image / pixel / AUPRO):", ""]
    for ref in sorted({h["reference"] for h in held_summary}):
        hs = [h for h in held_summary if h["reference"] == ref and h["trained"]]
        for fam, sel in (("painter kinds", lambda h: h["kind"] != nsgan.BLOB_KIND), ("blob family", lambda h: h["kind"] == nsgan.BLOB_KIND)):
            v = [h for h in hs if sel(h)]
            if v:
                diffs = " / ".join(f"{np.mean([h['held_out'][f] - h['trained'][f] for h in v]):+.3f}" for f in FIGURES)
                worst = min(h["held_out"]["pixel_auroc"] - h["trained"]["pixel_auroc"] for h in v)
                lines.append(f"- {ref}, {fam} ({len(v)} runs): {diffs}; worst pixel {worst:+.3f}")
    return lines, held_summary


def family_gaps(data: dict, textures, seeds, holdout: str) -> list[str]:
    """Visible protocol: the family left out of train/defect against the families C's labelled images held, per row
    (image AUROC / AUPRO on that family's images + all good ones, mean over seeds); issue 25 asks within 0.05."""
    lines = ["", f"## Held-out family `{holdout}` (never in train/defect) against the trained families, mean over seeds", "",
             "| texture | row | held out: image / pixel / AUPRO | trained families: image / pixel / AUPRO | gap image / AUPRO |",
             "|---|---|---|---|---|"]
    for t in textures:
        for label, key in ROWS:
            cells = [data[t][s][key]["per_kind"] for s in seeds if key in data[t][s] and holdout in data[t][s][key].get("per_kind", {})]
            if not cells:
                continue
            ho = {f: float(np.mean([c[holdout][f] for c in cells])) for f in FIGURES}
            tr = {f: float(np.mean([v[f] for c in cells for k, v in c.items() if k != holdout])) for f in FIGURES}
            lines.append(f"| {t} | {label} | {_fmt3(ho)} | {_fmt3(tr)} | "
                         f"{ho['image_auroc'] - tr['image_auroc']:+.3f} / {ho['aupro'] - tr['aupro']:+.3f} |")
    return lines


def noise_gap(data: dict, textures, seeds) -> list[str]:
    """Issue 27: what the dirty normals cost, oracle (clean normals) − the same C on the dirty ones, mean over seeds,
    with the seed spread (max − min) of each row's image AUROC."""
    lines = ["", "## Noise gap: the clean-normals oracle minus the same C trained on the dirty normals", "",
             "| texture | reference | dirty: image / pixel / AUPRO | oracle: image / pixel / AUPRO | gap image / pixel / AUPRO | "
             "seed spread of image AUROC, dirty / oracle |", "|---|---|---|---|---|---|"]
    for t in textures:
        for ref in ("blur", "none", "reconstruction"):
            pairs = [(data[t][s][f"C-{ref}"], data[t][s][f"C-{ref}-clean"]) for s in seeds
                     if f"C-{ref}" in data[t][s] and f"C-{ref}-clean" in data[t][s]]
            if not pairs:
                continue
            dirty = {f: float(np.mean([d[f] for d, _ in pairs])) for f in FIGURES}
            clean = {f: float(np.mean([c[f] for _, c in pairs])) for f in FIGURES}
            spread = [max(v) - min(v) for v in ([d["image_auroc"] for d, _ in pairs], [c["image_auroc"] for _, c in pairs])]
            lines.append(f"| {t} | {ref} | {_fmt3(dirty)} | {_fmt3(clean)} | "
                         + " / ".join(f"{clean[f] - dirty[f]:+.3f}" for f in FIGURES) + f" | {spread[0]:.3f} / {spread[1]:.3f} |")
    return lines


def rules_table(data: dict, textures, seeds) -> list[str]:
    """Image AUROC of each image-score rule, from the same maps, mean over seeds (rows that recorded them)."""
    lines = ["", "## Image score rules (image AUROC from the same maps, mean over seeds)", "",
             "| texture | row | " + " | ".join(RULES) + " |", "|---|---|" + "---|" * len(RULES)]
    for t in textures:
        for label, key in ROWS:
            cells = [data[t][s][key]["image_auroc_by_rule"] for s in seeds if "image_auroc_by_rule" in data[t][s].get(key, {})]
            if cells:
                lines.append(f"| {t} | {label} | " + " | ".join(f"{np.mean([c[r] for c in cells]):.3f}" for r in RULES) + " |")
    return lines


def robust_table(cfg: dict, out: Path, textures, seeds) -> list[str]:
    """Issue 27's table: today's default (denoise none), the robust C (--denoise) and the clean-normals oracle from
    the same cells, the noise gaps, the seed spreads and the audits (in-sample vs out-of-fold); empty until both
    the `--oracle` and the `--denoise` runs are in."""
    base, rob = {**cfg, "denoise": False}, {**cfg, "denoise": True}
    lines = ["", "## Robust C (issue 27): default, robust and oracle side by side, mean over seeds", "",
             "image AUROC (default image score) / pixel AUROC / AUPRO; gaps are oracle − robust and oracle − default; "
             "spread = max − min of image AUROC over seeds; audit = AUROC of dirty vs clean train/good / precision@k "
             "(k = number dirty), in-sample by the default C, out-of-fold from the robust C's fold scores.", "",
             "| texture | default | robust | oracle | gap robust | gap default | spread default / robust | "
             "audit in-sample | audit out-of-fold | left out (dirty) per seed |", "|---|---|---|---|---|---|---|---|---|---|"]
    found = False
    for t in textures:
        d = {s: load_cells(base, out, t, s, ctag(base)) for s in seeds}
        r = {s: load_cells(rob, out, t, s, ctag(rob)) for s in seeds}
        ok = [s for s in seeds if {"C-blur", "C-blur-clean"} <= d[s].keys() and "C-blur" in r[s]]
        if not ok:
            continue
        found = True
        mean = {name: {f: float(np.mean([src[s][key][f] for s in ok])) for f in FIGURES}
                for name, src, key in (("default", d, "C-blur"), ("robust", r, "C-blur"), ("oracle", d, "C-blur-clean"))}
        spread = [max(v) - min(v) for v in ([d[s]["C-blur"]["image_auroc"] for s in ok], [r[s]["C-blur"]["image_auroc"] for s in ok])]

        def aud(src):
            a = [src[s]["audit"] for s in ok if "audit_auroc" in src[s].get("audit", {})]  # none without dirty images
            return f"{np.mean([x['audit_auroc'] for x in a]):.3f} / {np.mean([x['precision_at_k'] for x in a]):.2f}" if a else "–"

        left = ", ".join(f"{r[s]['audit'].get('excluded', '?')} ({r[s]['audit'].get('excluded_dirty', '?')})"
                         for s in ok if r[s].get("audit"))
        gap = lambda a: " / ".join(f"{mean['oracle'][f] - mean[a][f]:+.3f}" for f in FIGURES)
        lines.append(f"| {t} | {_fmt3(mean['default'])} | {_fmt3(mean['robust'])} | {_fmt3(mean['oracle'])} | {gap('robust')} | "
                     f"{gap('default')} | {spread[0]:.3f} / {spread[1]:.3f} | {aud(d)} | {aud(r)} | {left} |")
    return lines if found else []


RULES = ("map_max", *(f"top{k}_mean" for k in TOP_K), "region_area_x_peak")


def targets(summary: dict, textures) -> list[str]:
    lines = ["", "## Targets (mean over seeds; each also ≥ floor best + 0.05)", ""]
    for key in ("C-reconstruction", "C-blur", "C-none"):
        for t in textures:
            c, fb = summary.get(key, {}).get(t, {}), summary.get("floor:best", {}).get(t, {})
            if not c or c.get("pixel_auroc") is None:
                continue
            marks = [f"{f} {c[f]:.3f} (target {tgt}, floor best {fb[f]:.3f}): {'met' if c[f] >= tgt and c[f] >= fb[f] + 0.05 else 'missed'}"
                     for f, tgt in TARGETS.items()]
            lines.append(f"- {key} {t}: " + "; ".join(marks))
    return lines


def write_results(cfg: dict, out: Path, textures, seeds) -> None:
    data = {t: {s: load_cells(cfg, out, t, s, ctag(cfg)) for s in seeds} for t in textures}
    table, summary = main_table(data, textures, seeds)
    held, held_summary = held_out_tables(data, textures, seeds)
    lines = ["# Comparator benchmark", "", f"config: `{json.dumps(cfg)}`", "",
             "Mean ± sd over seeds " + ", ".join(map(str, seeds)) + " (image AUROC / pixel AUROC / AUPRO).", "",
             *table, *per_seed_tables(data, textures, seeds), *per_kind_means(data, textures, seeds), *held,
             *targets(summary, textures), *rules_table(data, textures, seeds), *noise_gap(data, textures, seeds)]
    lines += robust_table(cfg, out, textures, seeds)
    if cfg["protocol_name"] == "visible":
        lines += family_gaps(data, textures, seeds, cfg["visible_protocol"].get("holdout", DEFAULT_HOLDOUT))
    nsgan.atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    nsgan.atomic_write_json(out / "results.json", {"summary": summary, "held_out": held_summary, "cells": data}, indent=1)
    log(f"wrote {out / 'results.md'}")


# ------------------------------------------------------------------------------ CLI

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "configs" / "experiments" / "comparator-cpu.yaml"))
    p.add_argument("--out", required=True)
    p.add_argument("--only", choices=["gan", "all", "results"], default="all",
                   help="gan: train the GANs only; results: rewrite results.md|json from the finished cells only")
    p.add_argument("--protocol", choices=["textures", "visible"], default="textures",
                   help="the painter-like textures protocol, or visible defects made another way (one family held out)")
    p.add_argument("--epsilon", type=float, help="share of secretly defective train/good images (default: the protocol's)")
    p.add_argument("--oracle", action="store_true",
                   help="also train each variant's C on the clean normals only (the oracle of issue 27's noise gap)")
    p.add_argument("--textures", nargs="*")
    p.add_argument("--seeds", nargs="*", type=int)
    p.add_argument("--gan-code", default=str(REPO), help="checkout whose `nsgan` trains the GANs and the comparators")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variants", nargs="*", help="C references to train on all kinds (default: the config's)")
    p.add_argument("--held-out-refs", nargs="*", help="C references trained with a kind held out (default: the config's)")
    p.add_argument("--width", type=int, help="comparator.width (default: the model's stored setting)")
    p.add_argument("--steps", type=int, help="C's training steps of comparator.batch tiles (default: comparator.kimg)")
    p.add_argument("--lr", type=float, help="comparator.lr (default: the model's stored setting)")
    p.add_argument("--loss", help="comparator.loss (default: the model's stored setting)")
    p.add_argument("--tta", choices=["none", "flip", "d4"], default="none",
                   help="test-time views averaged in C's maps (`nsgan score --tta`; default none)")
    p.add_argument("--held-out", choices=["kind", "blob", "both", "none"], default="both",
                   help="which held-out runs to train: the seed's painter kind, the blob family, both or none")
    p.add_argument("--denoise", action="store_true",
                   help="train every C with comparator.denoise=exclude (the robust C of issue 27); its rows go to their own "
                        "folder (ctag '-denoise')")
    p.add_argument("--audit-folds", type=int, metavar="K",
                   help="also audit train/good out of fold with the product's `nsgan audit --folds K` and the default C "
                        "(its own file per cell, beside the in-sample audit)")
    p.add_argument("--no-gan", action="store_true",
                   help="the short GAN, and only the rows that never read G: floor, C(x), C(x, blur x)")
    return p.parse_args(argv)


def bench_config(args: argparse.Namespace) -> dict:
    cfg = yaml.safe_load(Path(args.config).read_text())
    cfg["comparator"] = dict(cfg.get("comparator") or {})
    if args.variants is not None:
        cfg["variants"] = args.variants
    if args.held_out_refs is not None:
        cfg["held_out_refs"] = args.held_out_refs
    if args.no_gan:
        cfg["variants"] = [v for v in cfg["variants"] if v != "reconstruction"]
        cfg["held_out_refs"] = [v for v in cfg.get("held_out_refs", []) if v != "reconstruction"]
    cfg["held_out_which"] = args.held_out
    cfg["protocol_name"] = args.protocol
    cfg["oracle"] = args.oracle
    cfg["epsilon"] = args.epsilon
    if args.epsilon is not None:
        cfg["protocol"] = {**cfg["protocol"], "epsilon": args.epsilon}
        cfg["visible_protocol"] = {**cfg.get("visible_protocol", {}), "epsilon": args.epsilon}
    cfg["tta"] = args.tta
    cfg["denoise"] = args.denoise
    cfg["audit_folds"] = args.audit_folds
    if args.protocol == "visible":  # its held-out family is built in: no train/defect image holds it, C never paints it
        cfg["held_out_which"] = "none"
        cfg.setdefault("visible_protocol", {})
    for key in ("width", "steps", "lr", "loss"):
        if getattr(args, key) is not None:
            cfg["comparator"][key] = getattr(args, key)
    return cfg


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = bench_config(args)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    textures = args.textures or cfg["textures"]
    seeds = args.seeds if args.seeds is not None else cfg["seeds"]
    code = Path(args.gan_code)
    if args.only == "results":
        write_results(cfg, out, textures, seeds)
        return nsgan.EXIT_OK
    gans = {t: train_gan(cfg, out, t, code, args.threads, short=args.no_gan) for t in textures}
    if args.only == "gan":
        return nsgan.EXIT_OK
    for t in textures:
        for s in seeds:
            run_pair(cfg, out, t, s, gans[t], code, args.threads, with_g=not args.no_gan)
    write_results(cfg, out, textures, seeds)
    return nsgan.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

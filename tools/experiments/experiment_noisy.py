"""Noisy-normals experiment: does the abnormal penalty (γ > 0) beat plain AnoGAN training (γ = 0)?

For each protocol (mnist, ir_mnist, textures) and each contamination ε, one category folder is
built (seeded: the same ε gives the same images for every γ) and cut into one shard set; then a
model is trained per γ with the same seed, schedule and budget, and every model is evaluated by
`nsgan evaluate` with the same latent search. Each finished cell leaves `cells/<cell>/cell.json`;
`--resume` skips those, so the grid survives interruptions. Several runners may share one --out
(each claims a cell with a pid file before working on it), to use more cores. After every cell the table
(`results.md`, `results.json`) and the plot (`results.png`) are rewritten from all finished cells.

    python tools/experiments/experiment_noisy.py --config configs/experiments/noisy-cpu.yaml --out runs/noisy --resume

γ values: a number, or `auto` = ε/(1−ε) (the paper's value when p_a matches the contaminants).
Penalty forms (`penalties`, `--penalties`): every γ > 0 is trained once per form: tile (the paper's,
cells named as before), patch_mask (D's patch logits, masked patches; protocols whose shards hold
masks only) and patch_mil (the k least-real patches, image labels only); γ = 0 once, as the baseline.
`patch: {grid: 8, mil_k: 1}` sets D's patch grid and k for the patch forms. `abnormal_centred: K`
(`--abnormal-centred`) cuts the γ > 0 cells' abnormal tiles centred on the mask components (K per
component, `nsgan shards --abnormal-centred`; protocols with masks only) into a shard set of their
own; the γ = 0 baseline does not read abnormal tiles and is shared.
Command-line options override the experiment config.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nsgan.cli import set_process_defaults  # noqa: E402

set_process_defaults()  # before torch loads

import importlib  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

import nsgan  # noqa: E402
from nsgan import ConfigError, NsganError, atomic_write_json, atomic_write_text  # noqa: E402
from tools.experiments.defect_detector import defect_share, load_or_train  # noqa: E402
from tools.protocols.common import load_mnist, pad_to  # noqa: E402

PROTOCOLS = ("mnist", "ir_mnist", "textures")
METRICS = ("image_auroc", "pixel_auroc", "aupro")
PENALTIES = tuple(p.value for p in nsgan.Penalty)  # the product's list, in its order


# ------------------------------------------------------------------------------ settings

@dataclass(frozen=True)
class Cell:
    protocol: str
    eps: float
    gamma_spec: str  # as given: "0", "0.2" or "auto"
    penalty: str = "tile"  # where γ acts (loss.penalty); tile cells keep their old names
    centred: int = 0  # abnormal tiles centred on the mask components, K per component (0 = the grid's)

    @property
    def gamma(self) -> float:
        return self.eps / (1 - self.eps) if self.gamma_spec == "auto" else float(self.gamma_spec)

    @property
    def data_name(self) -> str:
        return f"{self.protocol}-eps{self.eps:g}"

    @property
    def shard_name(self) -> str:
        return self.data_name + (f"-centred{self.centred}" if self.centred else "")

    @property
    def name(self) -> str:
        suffix = ("" if self.penalty == "tile" else f"-{self.penalty}") + (f"-centred{self.centred}" if self.centred else "")
        return f"{self.data_name}-gamma{self.gamma_spec}{suffix}"


def load_experiment(path: str | Path) -> dict:
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read experiment config ({exc})") from None
    for key in ("train_config", "protocols", "search", "budget_kimg", "eps", "gammas"):
        if key not in cfg:
            raise ConfigError(f"{path}: missing key {key!r}")
    unknown = set(cfg["protocols"]) - set(PROTOCOLS)
    if unknown:
        raise ConfigError(f"{path}: protocols: unknown {sorted(unknown)}; choose from {', '.join(PROTOCOLS)}")
    cfg["train_config"] = str((path.parent / cfg["train_config"]).resolve()) if not Path(cfg["train_config"]).is_absolute() else cfg["train_config"]
    return cfg


def _gamma_spec(text: str) -> str:
    text = text.strip()
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--gammas: {text!r} is not a number or 'auto'") from None
    if value < 0:
        raise ConfigError(f"--gammas: γ must be >= 0, got {value}")
    return f"{value:g}"


def penalties(cfg: dict) -> list[str]:
    names = [str(p).strip() for p in cfg.get("penalties", ["tile"])]
    bad = [p for p in names if p not in PENALTIES]
    if bad or not names:
        raise ConfigError(f"penalties: {bad or names} not among {', '.join(PENALTIES)}")
    return names


def cells(cfg: dict) -> list[Cell]:
    """ε outermost (a cut-off grid still covers every protocol at the first ε), then protocol, then γ,
    then penalty form (γ = 0 has no penalty: one cell)."""
    forms, centred = penalties(cfg), int(cfg.get("abnormal_centred", 0))
    return [Cell(p, float(e), spec, form, 0 if spec == "0" else centred)
            for e in cfg["eps"] for p in cfg["protocols"] for g in cfg["gammas"]
            for spec in [_gamma_spec(str(g))] for form in (["tile"] if spec == "0" else forms)]


# ------------------------------------------------------------------------------ one cell

def build_data(cell: Cell, spec: dict, out: Path, seed: int) -> Path:
    """The protocol folder and its shard set for (protocol, ε); reused by every γ (built once, under a lock)."""
    lock = out / "data" / f".{cell.data_name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime > 600:  # a builder died holding it (builds take seconds)
                    lock.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            time.sleep(1)
    try:
        return _build_data(cell, spec, out, seed)
    finally:
        os.close(fd)
        lock.unlink(missing_ok=True)


def _build_data(cell: Cell, spec: dict, out: Path, seed: int) -> Path:
    data = out / "data" / cell.data_name
    if not (data / "protocol.json").is_file():
        module = importlib.import_module(f"tools.protocols.{cell.protocol}")
        builder = getattr(module, f"build_{cell.protocol}")
        builder(data, epsilon=cell.eps, seed=seed, overwrite=True, **spec.get("build", {}))
    shards = out / "shards" / cell.shard_name
    masks = data / "ground_truth_train" / "defect"
    if not (shards / "manifest.json").is_file() and (masks.is_dir() or not cell.centred):
        nsgan.write_shards(nsgan.ShardSpec(data / "train" / "good", abnormal_dir=data / "train" / "defect",
                                           abnormal_masks_dir=masks if masks.is_dir() else None, tile=spec["tile"], out=shards,
                                           stride=spec.get("shard_stride", spec["tile"]), channels=1, seed=seed,
                                           abnormal_centred=cell.centred), overwrite=True)
    return data


def train_overrides(cell: Cell, spec: dict, cfg: dict, shards: Path, run_dir: Path) -> list[str]:
    budget = float(cfg["budget_kimg"])
    unit = budget / 6  # 8 px stable, 16 px fade + stable, 32 px fade, then 32 px stable for the remaining 2 units
    ov = [f"data.normal={shards / 'normal'}", f"data.abnormal={shards / 'abnormal'}", f"run_dir={run_dir}",
          f"seed={cfg.get('seed', 0)}", f"model.resolution={spec['tile']}", f"loss.gamma={cell.gamma}",
          f"schedule.total_kimg={budget}", f"schedule.stable_kimg={unit:.6g}", f"schedule.fade_kimg={unit:.6g}",
          f"train.checkpoint_kimg={max(budget / 3, 0.001):.6g}", "train.display=false"]
    if cell.penalty != "tile":
        patch = cfg.get("patch", {})
        ov += [f"loss.penalty={cell.penalty}", f"model.patch_grid={patch.get('grid', 8)}", f"loss.mil_k={patch.get('mil_k', 1)}"]
    return ov + [f"{k}={v}" for k, v in spec.get("train", {}).items()]


def train_cell(cell: Cell, spec: dict, cfg: dict, out: Path) -> tuple[Path, float]:
    """Train (or resume, or reuse) the cell's model; returns (model path, seconds spent now)."""
    run = nsgan.RunLayout(out / "cells" / cell.name / "run")
    if run.model.is_file():
        return run.model, 0.0
    t0 = time.perf_counter()
    ov = train_overrides(cell, spec, cfg, out / "shards" / cell.shard_name, run.root)
    tc = nsgan.load_config(cfg["train_config"], ov)
    resumable = run.resumable()
    if run.root.exists() and not resumable:
        shutil.rmtree(run.root)  # died before its first state: nothing to keep
    path = nsgan.train(tc, source=cfg["train_config"], resume=resumable)
    return Path(path), time.perf_counter() - t0


def score_options(spec: dict, cfg: dict):
    """The one latent search every model of the grid is scored with, and the protocol's map rules
    (`score:` residual, map_sigma, image_score; scoring's defaults where unset)."""
    return nsgan.ScoreOptions(stride=spec.get("score_stride"), batch=int(cfg.get("score_batch", 64)),
                              search=nsgan.SearchConfig(seed=cfg.get("seed", 0), **cfg["search"]), **spec.get("score", {}))


def evaluate_cell(cell: Cell, spec: dict, cfg: dict, data: Path, model: Path, out: Path) -> dict:
    return nsgan.evaluate(model, data, out / "cells" / cell.name / "eval", score_options(spec, cfg), overwrite=True)


def ink_pixels(model: Path, data: Path, options):
    """The map's values on ink pixels (image > 0.5) of every test image, and whether each is in a mask."""
    scorer = nsgan.Scorer.from_file(model, options, progress=False)
    values, labels = [], []
    for item in nsgan.read_test_set(data)[0]:
        ink = nsgan.read_image(item.path).max(axis=2) > 0.5
        values.append(scorer.score(item.path).map[ink])
        labels.append(nsgan.read_mask(item.mask, ink.shape)[ink])
    return np.concatenate(values), np.concatenate(labels)


def ink_pixel_auroc(model: Path, data: Path, options) -> float:
    """ir_mnist diagnostic: pixel AUROC over ink pixels only. On puzzles of digits the all-pixel
    AUROC mostly tells ink from background; this says whether the map tells the '3's from the
    other digits, which is the anomaly the protocol asks for."""
    return nsgan.image_auroc(*ink_pixels(model, data, options))


def other_digit_share(model: Path, normal_digit: int = 0, n: int = 512, seed: int = 0, k: int = 5) -> float:
    """mnist diagnostic of the mechanism itself: the share of G's samples a k-NN classifier (on the
    bundled MNIST digits) calls another digit than the normal one. γ > 0 should push it towards 0."""
    m = nsgan.load_model(model)
    x, y = load_mnist()
    size = m.resolution
    ref = torch.from_numpy(np.stack([pad_to(d, max(size, 32)) for d in x]).astype(np.float32) / 255.0)[:, None]
    if size < 32:  # the mnist protocol pads to 32 px; a smaller model sees the digits scaled down
        ref = torch.nn.functional.interpolate(ref, size=(size, size), mode="area")
    ref = ref.reshape(len(x), -1)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        g = m.generator(torch.randn(n, m.latent_dim, generator=gen))
    g = ((g.clamp(-1, 1) + 1) / 2).reshape(n, -1)
    nearest = torch.cdist(g, ref).topk(k, largest=False).indices.numpy()
    votes = y[nearest]
    pred = np.array([np.bincount(v, minlength=10).argmax() for v in votes])
    return float((pred != normal_digit).mean())


def g_defect_share(model: Path, tile: int, out: Path, log, settings: dict) -> float:
    """textures diagnostic of the mechanism: the share of G's samples a defect detector (trained on
    the protocol's own tiles, tools/experiments/defect_detector.py: the product's C, kept in OUT/detector, carried by
    a copy of the first model measured) flags. `settings` (the config's `detector:` n_train, n_test, kimg) size its training."""
    det, _ = load_or_train(out / "detector", tile, model, log=log, **settings)
    return defect_share(model, det)


def mechanism(cell: Cell, spec: dict, cfg: dict, model: Path, out: Path, log) -> dict:
    """What G draws, where a measure of it exists: γ > 0 should lower the share of anomalous samples."""
    if cell.protocol == "mnist":
        return {"g_other_digit": other_digit_share(model, spec.get("build", {}).get("normal_digit", 0))}
    if cell.protocol == "textures":
        return {"g_defect_share": g_defect_share(model, spec["tile"], out, log, cfg.get("detector", {}))}
    return {}


def has_masks(cell: Cell, out: Path) -> bool:
    """Whether the cell's abnormal shards carry defect masks (patch_mask and centred crops need them)."""
    manifest = out / "shards" / cell.shard_name / "manifest.json"
    return manifest.is_file() and bool(nsgan.read_manifest(manifest)["counts"].get("tiles_abnormal_with_mask"))


def run_cell(cell: Cell, cfg: dict, out: Path, log) -> dict | None:
    """Train and evaluate one cell; None when the cell cannot apply (patch_mask without masks)."""
    spec = cfg["protocols"][cell.protocol]
    t0 = time.perf_counter()
    data = build_data(cell, spec, out, int(cfg.get("seed", 0)))
    if (cell.penalty == "patch_mask" or cell.centred) and not has_masks(cell, out):
        log(f"{cell.name}: no defect masks in this protocol's training data, {cell.penalty} / centred crops do not apply; skipped")
        return None
    log(f"{cell.name}: training γ={cell.gamma:.4g} for {cfg['budget_kimg']} kimg")
    model, train_s = train_cell(cell, spec, cfg, out)
    log(f"{cell.name}: evaluating")
    m = evaluate_cell(cell, spec, cfg, data, model, out)
    px = m["pixel"] or {}
    row = {"protocol": cell.protocol, "eps": cell.eps, "gamma_spec": cell.gamma_spec, "gamma": cell.gamma, "penalty": cell.penalty, "centred": cell.centred,
           "image_auroc": m["image"]["auroc"], "image_f1": m["image"]["f1"],
           "pixel_auroc": px.get("pixel_auroc"), "aupro": px.get("aupro"),
           "train_s": train_s, "score_s": m["seconds"]["total"], "cell_s": time.perf_counter() - t0,
           "budget_kimg": cfg["budget_kimg"], "search": m["search"], "seed": cfg.get("seed", 0)}
    row.update(mechanism(cell, spec, cfg, model, out, log))
    atomic_write_json(out / "cells" / cell.name / "cell.json", row)  # written last: the cell is finished
    return row


def claim(cell: Cell, out: Path) -> bool:
    """Take the cell for this process (several runners may share one --out on one machine).

    A claim is a file holding the owner's pid; a claim whose process is gone is taken over.
    """
    folder = out / "cells" / cell.name
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / "claim.pid"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            os.kill(int(lock.read_text().strip() or 0), 0)
            return False  # its owner is alive
        except (ProcessLookupError, ValueError, FileNotFoundError):
            lock.unlink(missing_ok=True)
            return claim(cell, out)
        except PermissionError:
            return False
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True


# ------------------------------------------------------------------------------ the table

def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def arm(row: dict) -> str:
    """A table column: the γ, and the penalty form unless it is the tile-level one."""
    penalty, centred = row.get("penalty", "tile"), row.get("centred", 0)
    label = row["gamma_spec"] if penalty == "tile" else f"{row['gamma_spec']} {penalty}"
    return label + (f" centred{centred}" if centred else "")


def markdown_table(rows: list[dict]) -> str:
    """One line per (protocol, ε): each metric for every γ (and penalty form) side by side, γ = 0 first."""
    def order(a: str):
        words = a.split(" ")
        form = next((w for w in words if w in PENALTIES), "tile")
        return (a != "0", words[0], PENALTIES.index(form), "centred" in a)

    arms = sorted({arm(r) for r in rows}, key=order)
    head = ["protocol", "ε"] + [f"{m.replace('_', ' ')} γ={a}" for m in METRICS for a in arms]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = sorted({(r["protocol"], r["eps"]) for r in rows}, key=lambda k: (PROTOCOLS.index(k[0]), k[1]))
    by = {(r["protocol"], r["eps"], arm(r)): r for r in rows}
    for proto, eps in keys:
        vals = [_fmt(by[(proto, eps, a)][m]) if (proto, eps, a) in by else "…" for m in METRICS for a in arms]
        lines.append("| " + " | ".join([proto, f"{eps:g}"] + vals) + " |")
    return "\n".join(lines) + "\n"


DIAGNOSTICS = {
    "g_other_digit": "mnist, share of G's samples a 5-NN classifier calls another digit (lower = contaminants carved out)",
    "ink_pixel_auroc": "ir_mnist, pixel AUROC on ink pixels only ('3's against the other digits; 0.5 = chance)",
    "g_defect_share": "textures, share of G's samples a defect detector calls defective (lower = defects carved out)",
}


SHORT = {"g_other_digit": "G draws another digit", "g_defect_share": "G draws a defect", "ink_pixel_auroc": "ink-only pixel auroc"}


def diagnostic_table(rows: list[dict]) -> str:
    """Per ε and γ: the mnist generator diagnostic and the ir_mnist ink-only pixel AUROC, where measured."""
    text = ""
    for key, title in DIAGNOSTICS.items():
        diag = [r for r in rows if r.get(key) is not None]
        if not diag:
            continue
        gammas = sorted({arm(r) for r in diag}, key=lambda g: (g != "0", g))
        by = {(r["eps"], arm(r)): r[key] for r in diag}
        lines = ["", f"{title}:", "", "| ε | " + " | ".join(f"γ={g}" for g in gammas) + " |", "|---|" + "---|" * len(gammas)]
        for eps in sorted({r["eps"] for r in diag}):
            lines.append(f"| {eps:g} | " + " | ".join(_fmt(by.get((eps, g))) for g in gammas) + " |")
        text += "\n".join(lines) + "\n"
    return text


def seeds_table(folders: list[Path]) -> str:
    """Several runs of the grid (one per seed) side by side: per (protocol, ε) and arm, each metric's
    mean then the seeds' values, and in how many seeds the arm beats γ = 0 (on AUPRO where the protocol
    has pixel masks, else on image AUROC) — the issue's "3 of 3 seeds" test."""
    runs = []
    for folder in folders:
        path = Path(folder) / "results.json"
        if not path.is_file():
            raise ConfigError(f"{folder}: no results.json (run the grid there first)")
        runs.append({(r["protocol"], r["eps"], arm(r)): r for r in json.loads(path.read_text())})
    keys = {k for run in runs for k in run}
    diag = [d for d in DIAGNOSTICS if any(run[k].get(d) is not None for run in runs for k in run)]
    cols = list(METRICS) + diag
    text = f"Seeds: {', '.join(str(next(iter(run.values()))['seed']) for run in runs)} ({', '.join(map(str, folders))}); mean (each seed).\n"
    for proto, eps in sorted({k[:2] for k in keys}, key=lambda k: (PROTOCOLS.index(k[0]), k[1])):
        arms = sorted({k[2] for k in keys if k[:2] == (proto, eps)},
                      key=lambda a: (a != "0", float(a.split(" ")[0]) if a.split(" ")[0] != "auto" else 9,
                                     PENALTIES.index(next((w for w in a.split(" ") if w in PENALTIES), "tile")), a))
        key_metric = "aupro" if any(run.get((proto, eps, "0"), {}).get("aupro") is not None for run in runs) else "image_auroc"
        head = ["arm"] + [SHORT.get(c, c.replace("_", " ")) for c in cols] + [f"{key_metric.replace('_', ' ')} > γ=0 in"]
        lines = ["", f"{proto}, ε = {eps:g}:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for a in arms:
            cells_ = [run.get((proto, eps, a)) for run in runs]
            row = [f"γ={a}"]
            for c in cols:
                vals = [r.get(c) if r else None for r in cells_]
                got = [v for v in vals if v is not None]
                row.append("–" if not got else f"{sum(got) / len(got):.3f} ({', '.join(_fmt(v) for v in vals)})")
            wins = [(r[key_metric] > run[(proto, eps, "0")][key_metric]) for r, run in zip(cells_, runs)
                    if a != "0" and r and (proto, eps, "0") in run and r.get(key_metric) is not None]
            row.append("–" if a == "0" or not wins else f"{sum(wins)} of {len(wins)}")
            lines.append("| " + " | ".join(row) + " |")
        text += "\n".join(lines) + "\n"
    return text


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)  # its temporary name is per process: runners may share --out


def write_results(out: Path) -> list[dict]:
    rows = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*/cell.json"))]
    if not rows:
        return rows
    _write_text(out / "results.json", json.dumps(rows, indent=2) + "\n")
    s = rows[0]["search"]
    note = (f"\nBudget {rows[0]['budget_kimg']} kimg per model; search: {s['iterations']} steps, {s['restarts']} start(s), "
            f"lr {s['lr']}, λ {s['lam']}; seed {rows[0]['seed']}. '–': no pixel masks; '…': cell not run.\n")
    _write_text(out / "results.md", markdown_table(rows) + note + diagnostic_table(rows))
    plot_for = [{**r, "gamma": float(r["gamma"]) if r["gamma_spec"] != "auto" else -1.0} for r in rows]
    nsgan.plot_experiment(out / "results.png", plot_for, METRICS)
    return rows


# ------------------------------------------------------------------------------ CLI

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "experiments" / "noisy-cpu.yaml"))
    p.add_argument("--out", required=True, help="experiment folder (data, shards, cells, results.*)")
    p.add_argument("--summarise", metavar="DIR,DIR,...",
                   help="only write OUT/seeds.md: these finished experiment folders (one per seed) side by side")
    p.add_argument("--protocols", help="comma list of mnist, ir_mnist, textures (default: the config's)")
    p.add_argument("--eps", help="comma list of contamination ratios ε, e.g. 0.1,0,0.05")
    p.add_argument("--gammas", help="comma list of γ values or 'auto' (= ε/(1−ε)), e.g. 0,0.2")
    p.add_argument("--penalties", help="comma list of penalty forms for γ > 0: tile, patch_mask, patch_mil")
    p.add_argument("--patch-grid", type=int, help="side of D's patch-logit map for the patch forms (default 8)")
    p.add_argument("--mil-k", type=int, help="patch_mil: patches penalised per abnormal tile (default 1)")
    p.add_argument("--abnormal-centred", type=int, metavar="K",
                   help="γ > 0 cells: K abnormal tiles per mask component, centred on it, instead of the grid's (needs masks)")
    p.add_argument("--budget-kimg", type=float, help="training images per model, in thousands")
    p.add_argument("--search-iterations", type=int, help="latent search steps per tile")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small nets)")
    p.add_argument("--resume", action="store_true", help="skip finished cells (those with cell.json)")
    p.add_argument("--diagnose", action="store_true",
                   help="only add the diagnostics (mnist, textures: what G draws; ir_mnist: pixel AUROC on ink only) to finished cells that lack them, and rewrite the table")
    return p.parse_args(argv)


def apply_args(cfg: dict, args: argparse.Namespace) -> dict:
    cfg = dict(cfg)
    if args.protocols:
        names = [p.strip() for p in args.protocols.split(",") if p.strip()]
        bad = [p for p in names if p not in cfg["protocols"]]
        if bad:
            raise ConfigError(f"--protocols: {bad} not in the experiment config ({', '.join(cfg['protocols'])})")
        cfg["protocols"] = {p: cfg["protocols"][p] for p in names}
    if args.eps:
        try:
            cfg["eps"] = [float(e) for e in args.eps.split(",")]
        except ValueError:
            raise ConfigError(f"--eps: {args.eps!r} is not a comma list of numbers") from None
        if not all(0 <= e < 1 for e in cfg["eps"]):
            raise ConfigError(f"--eps: every ε must be in [0, 1), got {args.eps}")
    if args.gammas:
        cfg["gammas"] = [g for g in args.gammas.split(",") if g.strip()]
    if args.penalties:
        cfg["penalties"] = [p.strip() for p in args.penalties.split(",") if p.strip()]
    penalties(cfg)  # one-line error for an unknown form
    if args.patch_grid is not None:
        cfg["patch"] = {**cfg.get("patch", {}), "grid": args.patch_grid}
    if args.mil_k is not None:
        cfg["patch"] = {**cfg.get("patch", {}), "mil_k": args.mil_k}
    if args.abnormal_centred is not None:
        if args.abnormal_centred < 0:
            raise ConfigError(f"--abnormal-centred must be >= 0, got {args.abnormal_centred}")
        cfg["abnormal_centred"] = args.abnormal_centred
    if args.budget_kimg is not None:
        if args.budget_kimg <= 0:
            raise ConfigError(f"--budget-kimg must be > 0, got {args.budget_kimg}")
        cfg["budget_kimg"] = args.budget_kimg
    if args.search_iterations is not None:
        cfg["search"] = {**cfg["search"], "iterations": args.search_iterations}
    if args.seed is not None:
        cfg["seed"] = args.seed
    return cfg


def diagnose(cfg: dict, out: Path, config: str, log) -> None:
    """Add the diagnostics (what G draws; ir_mnist's ink-only pixel AUROC) to finished cells that lack them."""
    for path in sorted(out.glob("cells/*/cell.json")):
        row = json.loads(path.read_text())
        model = nsgan.RunLayout(path.parent / "run").model
        wanted = {"mnist": "g_other_digit", "ir_mnist": "ink_pixel_auroc", "textures": "g_defect_share"}.get(row["protocol"])
        if wanted is None or row.get(wanted) is not None:
            continue
        cell = Cell(row["protocol"], row["eps"], row["gamma_spec"], row.get("penalty", "tile"), row.get("centred", 0))
        spec = cfg["protocols"].get(cell.protocol)
        if spec is None:
            raise ConfigError(f"{config}: no '{cell.protocol}' protocol, needed to diagnose {path.parent}")
        log(f"{cell.name}: diagnostic {wanted}")
        if cell.protocol in ("mnist", "textures"):
            row.update(mechanism(cell, spec, cfg, model, out, log))
        else:  # scored with the search the cell was evaluated with
            options = replace(score_options(spec, cfg), search=nsgan.SearchConfig(**row["search"]))
            row[wanted] = ink_pixel_auroc(model, out / "data" / cell.data_name, options)
        _write_text(path, json.dumps(row, indent=2) + "\n")


def run_grid(cfg: dict, out: Path, resume: bool, log) -> None:
    """Every cell not finished yet (by this runner or another sharing --out), the table after each."""
    todo = cells(cfg)
    out.mkdir(parents=True, exist_ok=True)
    done_before = {c.name for c in todo if (out / "cells" / c.name / "cell.json").is_file()}
    if done_before and not resume:
        raise NsganError(f"{out}: holds finished cells ({', '.join(sorted(done_before))}); pass --resume to keep them "
                         "or choose another --out", exit_code=nsgan.EXIT_OUTPUT)
    _write_text(out / "experiment.yaml", yaml.safe_dump(cfg, sort_keys=False))
    for k, cell in enumerate(todo, 1):
        if cell.name in done_before:
            log(f"[{k}/{len(todo)}] {cell.name}: finished earlier, skipped")
            continue
        if (out / "cells" / cell.name / "cell.json").is_file():
            log(f"[{k}/{len(todo)}] {cell.name}: finished by another runner")
            continue
        if not claim(cell, out):
            log(f"[{k}/{len(todo)}] {cell.name}: another runner has it, skipped")
            continue
        try:
            row = run_cell(cell, cfg, out, lambda m: log(f"[{k}/{len(todo)}] {m}"))
        finally:
            (out / "cells" / cell.name / "claim.pid").unlink(missing_ok=True)
        if row is None:
            continue
        log(f"[{k}/{len(todo)}] {cell.name}: image AUROC {_fmt(row['image_auroc'])}, pixel AUROC "
            f"{_fmt(row['pixel_auroc'])}, AUPRO {_fmt(row['aupro'])} ({row['cell_s']:.0f} s)")
        write_results(out)
    write_results(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    try:
        if args.summarise:
            text = seeds_table([Path(f) for f in args.summarise.split(",") if f.strip()])
            out.mkdir(parents=True, exist_ok=True)
            _write_text(out / "seeds.md", text)
            print(text)
            return nsgan.EXIT_OK
        cfg = apply_args(load_experiment(args.config), args)
        if args.diagnose:
            diagnose(cfg, out, args.config, log)
            write_results(out)
        else:
            run_grid(cfg, out, args.resume, log)
    except NsganError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print((out / "results.md").read_text() if (out / "results.md").is_file() else "no finished cells")
    return nsgan.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

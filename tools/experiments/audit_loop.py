"""The dirty-normal audit, measured (issue 19): does `nsgan audit` find the hidden defective images of a
training set, and does feeding its suspects to the γ penalty (the paper's loop) help detection?

Per protocol, contamination ε and seed (the protocol records which train/good images carry hidden
defects: protocol.json's `contaminated_train`):

- r1: train with γ = 0 (plain AnoGAN), audit train/good with it (its default scoring = the protocol's
  map rules), measure the audit: AUROC of the image score against the hidden-defect truth and the
  precision among the top k, k = the number truly dirty;
- arms trained with γ > 0 on the same budget and seed, each evaluated on the test set (image AUROC,
  pixel AUROC, AUPRO) beside r1:
  - `labelled`: the labelled abnormal set only (the paper's setting, the loop not closed);
  - `r2`: labelled + the audit's suspects (`nsgan shards --abnormal-list`), as image labels;
  - `r2_masks`: the same with the audit's region masks (`--abnormal-masks-from-audit`);
  - `oracle`: labelled + the truly dirty images, as image labels (what a perfect audit would give).

Cells (one arm of one protocol/ε/seed) finish into OUT/cells/<cell>/cell.json and are skipped when
there; `results.md` and `results.json` are rewritten from all finished cells after each one.

    python tools/experiments/audit_loop.py --config configs/experiments/audit-loop-cpu.yaml --out runs/audit-loop
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nsgan.cli import set_process_defaults  # noqa: E402

set_process_defaults()  # before torch loads

import numpy as np  # noqa: E402
import yaml  # noqa: E402

import nsgan  # noqa: E402
from nsgan import AUDIT_MASKS, AUDIT_SUSPECTS, atomic_write_json, atomic_write_text  # noqa: E402
from tools.experiments import experiment_noisy as xp  # noqa: E402

ARMS = ("r1", "labelled", "r2", "r2_masks", "oracle")
METRICS = ("image_auroc", "pixel_auroc", "aupro")


def contaminated(data: Path) -> set[str]:
    """The protocol's secretly defective train/good images (protocol.json's contaminated_train), relative to train/good."""
    proto = json.loads((Path(data) / "protocol.json").read_text())
    return {Path(c["path"]).relative_to("train/good").as_posix() for c in proto.get("contaminated_train", [])}


def audit_figures(paths: list[str], scores, dirty: set[str]) -> dict:
    """AUROC of an audit's image scores against the hidden-defect truth; precision among the top k (k = #dirty)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.array([p in dirty for p in paths])
    k = int(labels.sum())
    out = {"n_images": len(paths), "n_dirty": k}
    if 0 < k < len(paths):
        out["audit_auroc"] = float(nsgan.image_auroc(scores, labels))
        out["precision_at_k"] = float(labels[np.argsort(-scores, kind="stable")[:k]].mean())
    return out


def _cell_metrics(m: dict) -> dict:
    px = m.get("pixel") or {}
    return {"image_auroc": m["image"]["auroc"], "pixel_auroc": px.get("pixel_auroc"), "aupro": px.get("aupro")}


def run_cell(protocol: str, eps: float, seed: int, arm: str, cfg: dict, out: Path, log) -> dict | None:
    spec = cfg["protocols"][protocol]
    gamma = "0" if arm == "r1" else str(cfg["gamma"])
    root = out / f"seed{seed}"
    run_cfg = {**cfg, "seed": seed}
    cell = xp.Cell(protocol, float(eps), gamma)
    name = f"{protocol}-eps{eps:g}-seed{seed}-{arm}"
    done = out / "cells" / name / "cell.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    data = xp.build_data(cell, spec, root, seed)
    good = data / "train" / "good"
    dirty = contaminated(data)
    audit_out = root / "audit" / cell.data_name
    result = {"protocol": protocol, "eps": eps, "seed": seed, "arm": arm, "gamma": float(gamma)}
    if arm == "r1":
        model, _ = xp.train_cell(cell, spec, run_cfg, root)
        res = nsgan.audit(model, good, audit_out, options=xp.score_options(spec, run_cfg))
        result.update(audit_figures([r.path for r in res.rows], [r.score for r in res.rows], dirty), suspects=len(res.suspects), rule=res.rule,
                      suspects_dirty=sum(s in dirty for s in res.suspects))
    else:
        if not (audit_out / AUDIT_SUSPECTS).is_file() and arm in ("r2", "r2_masks"):
            log(f"{name}: waiting for the r1 audit")
            return None
        shards = root / "shards" / f"{cell.data_name}-{arm}"
        masks = data / "ground_truth_train" / "defect"
        listed = {"labelled": None, "r2": audit_out / AUDIT_SUSPECTS, "r2_masks": audit_out / AUDIT_SUSPECTS}.get(arm)
        if arm == "oracle":
            listed = root / "shards" / f"{cell.data_name}-oracle.txt"
            listed.parent.mkdir(parents=True, exist_ok=True)
            listed.write_text("".join(f"{p}\n" for p in sorted(dirty)))
        if not (shards / "manifest.json").is_file():
            list_masks = audit_out / AUDIT_MASKS
            nsgan.write_shards(nsgan.ShardSpec(
                good, abnormal_dir=data / "train" / "defect", abnormal_masks_dir=masks if masks.is_dir() else None,
                tile=spec["tile"], out=shards, stride=spec.get("shard_stride", spec["tile"]), channels=1, seed=seed,
                abnormal_list=listed if listed is not None and listed.read_text().strip() else None,
                abnormal_list_masks=list_masks if arm == "r2_masks" and list_masks.is_dir() else None), overwrite=True)
        run = nsgan.RunLayout(root / "cells" / name / "run")
        model = run.model
        if not model.is_file():
            ov = xp.train_overrides(cell, spec, run_cfg, shards, run.root)
            model = Path(nsgan.train(nsgan.load_config(cfg["train_config"], ov)))
        if listed is not None and arm != "oracle":
            listed_names = set(listed.read_text().split())
            result.update(suspects=len(listed_names), suspects_dirty=len(listed_names & dirty))
    if arm == "r1":
        model = nsgan.RunLayout(root / "cells" / cell.name / "run").model
    m = nsgan.evaluate(model, data, root / "cells" / name / "eval", xp.score_options(spec, run_cfg), overwrite=True)
    result.update(_cell_metrics(m), seconds=round(time.perf_counter() - t0, 1))
    done.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(done, result)
    log(f"{name}: {json.dumps({k: v for k, v in result.items() if k not in ('protocol', 'eps', 'seed', 'arm')})}")
    return result


def _mean(values) -> str:
    v = [x for x in values if x is not None]
    return f"{np.mean(v):.3f}" if v else "–"


def tables(rows: list[dict]) -> str:
    out = []
    keys = sorted({(r["protocol"], r["eps"]) for r in rows})
    for protocol, eps in keys:
        sub = [r for r in rows if r["protocol"] == protocol and r["eps"] == eps]
        seeds = sorted({r["seed"] for r in sub})
        r1 = {r["seed"]: r for r in sub if r["arm"] == "r1"}
        out.append(f"### {protocol}, ε = {eps:g} (seeds {', '.join(map(str, seeds))})\n")
        if r1:
            out.append("| audit (r1 model) | mean | per seed |\n|---|---|---|")
            for key, label in (("audit_auroc", "AUROC, hidden-defect images vs clean"),
                               ("precision_at_k", "precision among the top k (k = #dirty)")):
                out.append(f"| {label} | {_mean(r[key] for r in r1.values() if key in r)} | "
                           + ", ".join(f"{r1[s].get(key, float('nan')):.3f}" for s in sorted(r1)) + " |")
            out.append("| suspects (default rule) / of them truly dirty | – | "
                       + ", ".join(f"{r1[s].get('suspects')}/{r1[s].get('suspects_dirty')}" for s in sorted(r1)) + " |\n")
        metric = "aupro" if any(r.get("aupro") is not None for r in sub) else "image_auroc"
        out.append(f"| arm | image AUROC | pixel AUROC | AUPRO | {metric} per seed | beats r1 in |\n|---|---|---|---|---|---|")
        for arm in ARMS:
            a = {r["seed"]: r for r in sub if r["arm"] == arm}
            if not a:
                continue
            beats = [s for s in a if s in r1 and a[s].get(metric) is not None and r1[s].get(metric) is not None]
            wins = sum(a[s][metric] > r1[s][metric] for s in beats)
            vs = "–" if arm == "r1" else f"{wins} of {len(beats)}"
            out.append(f"| {arm} | {_mean(r['image_auroc'] for r in a.values())} | {_mean(r.get('pixel_auroc') for r in a.values())} | "
                       f"{_mean(r.get('aupro') for r in a.values())} | "
                       + ", ".join(f"{a[s].get(metric) or float('nan'):.3f}" for s in sorted(a)) + f" | {vs} |")
        out.append("")
    return "\n".join(out) + "\n"


def write_results(out: Path) -> None:
    rows = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*/cell.json"))]
    atomic_write_json(out / "results.json", rows)
    atomic_write_text(out / "results.md", "# The audit and the closed loop\n\n" + tables(rows))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the config's)")
    p.add_argument("--protocols", default=None, help="comma-separated protocols of the plan to run (default: all)")
    args = p.parse_args(argv)
    cfg = yaml.safe_load(Path(args.config).read_text())
    out = Path(args.out)
    seeds = [int(s) for s in (args.seeds.split(",") if args.seeds else cfg["seeds"])]
    cfg["train_config"] = str((Path(args.config).resolve().parent / cfg["train_config"]).resolve())
    out.mkdir(parents=True, exist_ok=True)
    log_fh = open(out / "log.txt", "a")

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        log_fh.write(line + "\n")
        log_fh.flush()

    chosen = args.protocols.split(",") if args.protocols else list(cfg["plan"])
    unknown = [pr for pr in chosen if pr not in cfg["plan"]]
    if unknown:
        p.error(f"--protocols: {', '.join(unknown)} not in the config's plan ({', '.join(cfg['plan'])})")
    pending = [(pr, float(e), s, arm) for pr, pc in cfg["plan"].items() if pr in chosen for e, arms in pc.items()
               for s in seeds for arm in arms]
    for _ in range(2):  # r2 arms wait for their r1 audit: a second pass picks them up
        for protocol, eps, seed, arm in pending:
            run_cell(protocol, eps, seed, arm, cfg, out, log)
            write_results(out)
    return nsgan.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

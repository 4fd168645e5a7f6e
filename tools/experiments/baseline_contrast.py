"""The local-contrast floor on a category folder, measured exactly as `nsgan evaluate` measures a model.

What a GAN adds is only what it scores above a detector that needs no training. This runner scores
every test image of an MVTec-style folder (the folders tools/protocols writes) with
nsgan.LocalContrast — map = |x − GaussianBlur(x, σ_blur)| (channel mean), smoothed by a
Gaussian σ_map, image score = the map's max or a high quantile — and feeds the maps to the same
code as `nsgan evaluate`: the same folder reading and checks (nsgan.read_test_set, check_test_set,
read_mask), exact image AUROC and best F1, binned two-pass pixel AUROC and AUPRO (to FPR 0.3).
OUT/metrics.json has evaluate's keys ("image", "pixel", "seconds", ...), so tables can read both.

    python tools/experiments/baseline_contrast.py --data data/textures-e0.1 --out eval/floor-textures
    python tools/experiments/baseline_contrast.py --data data/textures-e0.1 --out eval/floor-textures --sweep

--sweep also measures a small grid of (σ_blur, σ_map) and reports each row and the best row per
figure. Those best rows are picked on the test set, so they flatter the floor; metrics.json's
top-level figures stay those of the setting given on the command line (the defaults unless set).
Memory holds one image and its map at a time: maps are recomputed in the second pass, not stored.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import nsgan  # noqa: E402
from nsgan import (  # noqa: E402
    AUPRO_MAX_FPR,
    GOOD_KIND,
    PIXEL_METRIC_BINS,
    LocalContrast,
    NsganError,
    OutputError,
    PixelMetrics,
    ScoreRange,
    TestImage,
    atomic_write_json,
    auroc_per_type,
    best_f1,
    image_auroc,
    read_image,
    read_mask,
)

DEFAULT_FLOOR = LocalContrast()  # the floor's defaults: σ_blur, σ_map, the score rule and its quantile
ScoreRule = type(DEFAULT_FLOOR.rule)

SWEEP_BLUR = (1.0, 2.0, 4.0, 8.0)
SWEEP_MAP = (0.0, 1.0, 2.0)
FIGURES = ("image_auroc", "pixel_auroc", "aupro")


def measure(items: list[TestImage], use_masks: bool, floors: list[LocalContrast], bins: int = PIXEL_METRIC_BINS) -> list[dict]:
    """evaluate's metrics dict (without "data"/"model") for each floor setting, all in two passes."""
    t0 = time.perf_counter()
    scores = np.zeros((len(floors), len(items)))
    ranges = [ScoreRange() for _ in floors]
    for i, it in enumerate(items):  # pass 1: image scores and each setting's map range
        img = read_image(it.path)
        for k, floor in enumerate(floors):
            m = floor.map(img)
            scores[k, i] = floor.score(m)
            ranges[k].update(m)
    scoring_s = time.perf_counter() - t0
    pixels = None
    if use_masks:  # pass 2: binned pixel counts over each setting's own range
        pixels = [PixelMetrics(r.lo, r.hi, bins=bins) for r in ranges]
        for it in items:
            img = read_image(it.path)
            gt = read_mask(it.mask, img.shape[:2])
            for floor, pm in zip(floors, pixels):
                pm.update(floor.map(img), gt)
    labels = np.array([it.defective for it in items])
    kinds = [it.kind for it in items]
    results = []
    for k, floor in enumerate(floors):
        f1, thr = best_f1(scores[k], labels)
        results.append({
            "image": {"auroc": image_auroc(scores[k], labels), "f1": f1, "f1_threshold": thr,
                      "per_type_auroc": auroc_per_type(scores[k], kinds, good=GOOD_KIND),
                      "n_good": int((~labels).sum()), "n_defective": int(labels.sum())},
            "pixel": None if pixels is None else {**pixels[k].summary(), "aupro_max_fpr": AUPRO_MAX_FPR},
            "floor": floor.to_dict(),
        })
    total_s = time.perf_counter() - t0
    for r in results:  # the settings share the passes; each gets its share of the time
        r["seconds"] = {"scoring": scoring_s / len(floors), "total": total_s / len(floors)}
    return results


def row(result: dict) -> dict:
    """One flat table row: the setting and the three headline figures (None without masks)."""
    px = result["pixel"]
    return {**result["floor"], "image_auroc": result["image"]["auroc"],
            "pixel_auroc": px["pixel_auroc"] if px else None, "aupro": px["aupro"] if px else None}


def best_rows(rows: list[dict]) -> dict:
    """For each figure, the row that maximises it (first on ties)."""
    return {f: max(rows, key=lambda r: r[f]) for f in FIGURES if rows and rows[0][f] is not None}


def run_floor(data: str | Path, out: str | Path, floor: LocalContrast, *, sweep: bool = False,
              bins: int = PIXEL_METRIC_BINS, overwrite: bool = False) -> dict:
    """Measure `floor` (and, with sweep, the grid) on `data`; write OUT/metrics.json; return it."""
    data, out = Path(data), Path(out)
    items, use_masks = nsgan.read_test_set(data)
    nsgan.check_test_set(items, None)
    target = out / "metrics.json"
    if target.exists() and not overwrite:
        raise OutputError(f"{target}: exists (use --overwrite to replace it)")
    grid = [LocalContrast(b, s, floor.rule, floor.quantile) for b in SWEEP_BLUR for s in SWEEP_MAP] if sweep else []
    floors = [floor] + [g for g in grid if g != floor]
    results = measure(items, use_masks, floors, bins)
    by_setting = dict(zip(floors, results))
    metrics = {"data": str(data), "model": "local-contrast floor (no learning)", **results[0]}
    if sweep:
        rows = [row(by_setting[g]) for g in grid]
        metrics["sweep"] = {"rows": rows, "best": best_rows(rows),
                            "note": "best rows are picked on the test set: an optimistic floor"}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the output folder ({exc})") from None
    atomic_write_json(target, metrics)
    return metrics


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def sweep_table(sweep: dict):
    best = {f: (r["blur_sigma"], r["map_sigma"]) for f, r in sweep["best"].items()}
    t = Table(title="local-contrast sweep (* = best on the test set, so optimistic)")
    for name in ("σ_blur", "σ_map", "image AUROC", "pixel AUROC", "AUPRO"):
        t.add_column(name, justify="right")
    for r in sweep["rows"]:
        key = (r["blur_sigma"], r["map_sigma"])
        t.add_row(f"{r['blur_sigma']:g}", f"{r['map_sigma']:g}",
                  *(_fmt(r[f]) + ("*" if best.get(f) == key else "") for f in FIGURES))
    return t


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="category folder: test/good, test/<type>, ground_truth/<type>")
    p.add_argument("--out", required=True, help="folder for metrics.json")
    p.add_argument("--blur-sigma", type=float, default=DEFAULT_FLOOR.blur_sigma, help="Gaussian σ of the blur x is compared with")
    p.add_argument("--map-sigma", type=float, default=DEFAULT_FLOOR.map_sigma, help="Gaussian σ smoothing the map (0: none)")
    p.add_argument("--score", choices=[r.value for r in ScoreRule], default=ScoreRule.MAX.value,
                   help="image score: the map's max, or its --quantile")
    p.add_argument("--quantile", type=float, default=DEFAULT_FLOOR.quantile, help="with --score quantile")
    p.add_argument("--sweep", action="store_true",
                   help=f"also measure σ_blur in {SWEEP_BLUR} x σ_map in {SWEEP_MAP} and report each row")
    p.add_argument("--bins", type=int, default=PIXEL_METRIC_BINS, help="score bins of the pixel metrics")
    p.add_argument("--overwrite", action="store_true", help="replace OUT/metrics.json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        floor = LocalContrast(args.blur_sigma, args.map_sigma, args.score, args.quantile)
        metrics = run_floor(args.data, args.out, floor, sweep=args.sweep, bins=args.bins, overwrite=args.overwrite)
    except NsganError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    console = Console()
    table = nsgan.evaluation_table(metrics)
    rule = floor.rule.value if floor.rule is ScoreRule.MAX else f"quantile {floor.quantile:g}"
    table.title = (f"local-contrast floor (σ_blur {floor.blur_sigma:g}, σ_map {floor.map_sigma:g}, score {rule}): "
                   f"{metrics['data']}")
    console.print(table)
    if args.sweep:
        console.print(sweep_table(metrics["sweep"]))
    print(f"wrote {Path(args.out) / 'metrics.json'}")
    return nsgan.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

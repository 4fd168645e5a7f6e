"""Size the demo by measurement: run `nsgan demo` with candidate configs, record minutes and pixel AUROC.

    python tools/experiments/demo_sizing.py --candidates A,C,E --seeds 0 --out runs/demo-sizing
    python tools/experiments/demo_sizing.py --list                  # the candidates and their overrides
    python tools/experiments/demo_sizing.py --table-only --out runs/demo-sizing

Each candidate is the real command, one at a time (never two on a small machine):
`python -m nsgan.cli demo --out OUT/<id>-s<seed> --overwrite --seed S <overrides>` under
`/usr/bin/time -v`, so the minutes are the demo's own wall time (and its peak RSS). Quality is the
demo's own figure, the map's pixel AUROC on its painted test image (seed S + 1, as the demo prints
it). One 256² image holds a few hundred defect pixels, so that figure is noisy: the same model then
scores `--extra` more painted test images (seeds 11, 12, ...) in this process, the same way the demo
does (nsgan score's defaults, in memory), for a mean ± sd.

Results append to OUT/results.jsonl (a candidate and seed already there is skipped, so the tool can
be rerun to add candidates); OUT/table.md is rewritten from them. Minutes measured while other jobs
share the CPU are noisy: time the finalists again alone.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import nsgan  # noqa: E402

TODAY = "S4 F4 T30, fmap 1024, batch 16, enc 4"
CANDIDATES: dict[str, tuple[str, list[str]]] = {  # id -> (what, overrides beyond configs/demo.yaml)
    "A": ("demo.yaml before issue 18 (" + TODAY + ", R1 every step)", ["loss.r1_every=1"]),
    "B": ("A with lazy R1 k=16 (isolates its effect)", ["loss.r1_every=16"]),
    "C": ("S2 F2 T10, enc 2, k=16", ["schedule.stable_kimg=2", "schedule.fade_kimg=2", "schedule.total_kimg=10", "encoder.kimg=2"]),
    "D": ("S3 F3 T13, enc 2, k=16", ["schedule.stable_kimg=3", "schedule.fade_kimg=3", "schedule.total_kimg=13", "encoder.kimg=2"]),
    "E": ("fmap 512, S3 F3 T15, enc 3, k=16",
          ["model.fmap_base=512", "schedule.stable_kimg=3", "schedule.fade_kimg=3", "schedule.total_kimg=15", "encoder.kimg=3"]),
    "F": ("fmap 512, S4 F4 T18, enc 4, k=16",
          ["model.fmap_base=512", "schedule.stable_kimg=4", "schedule.fade_kimg=4", "schedule.total_kimg=18", "encoder.kimg=4"]),
    "G": ("fmap 512, start 16, S4 F4 T12, enc 3, k=16",
          ["model.fmap_base=512", "schedule.start_resolution=16", "schedule.stable_kimg=4", "schedule.fade_kimg=4",
           "schedule.total_kimg=12", "encoder.kimg=3"]),
    "H": ("E with k=4", ["model.fmap_base=512", "schedule.stable_kimg=3", "schedule.fade_kimg=3", "schedule.total_kimg=15",
                         "encoder.kimg=3", "loss.r1_every=4"]),
    "I": ("E with batch 32 at 32 px", ["model.fmap_base=512", "schedule.stable_kimg=3", "schedule.fade_kimg=3",
                                       "schedule.total_kimg=15", "encoder.kimg=3", "schedule.batch={8: 16, 16: 16, 32: 32}"]),
    "J": ("fmap 512, S4 F4 T30, enc 4, k=16 (today's schedule, half width at 32 px)", ["model.fmap_base=512"]),
    "K": ("fmap 512, S2 F2 T12, enc 3, k=16",
          ["model.fmap_base=512", "schedule.stable_kimg=2", "schedule.fade_kimg=2", "schedule.total_kimg=12", "encoder.kimg=3"]),
    # issue 20: configs/demo.yaml (= G) now ends with the comparator C (blur reference, 32 kimg)
    "G0": ("G without C (the demo of issue 18)", ["comparator.kimg=0"]),
    "GC": ("G + C 32 kimg (configs/demo.yaml)", []),
    "GC16": ("G + C 16 kimg", ["comparator.kimg=16"]),
    "LC": ("fmap 512, start 16, S3 F3 T9, enc 2, C 24 kimg",
           ["schedule.stable_kimg=3", "schedule.fade_kimg=3", "schedule.total_kimg=9", "encoder.kimg=2", "comparator.kimg=24"]),
}


def _wall_seconds(time_v: str) -> tuple[float | None, float | None]:
    """(wall seconds, peak RSS GB) from /usr/bin/time -v's report."""
    wall = rss = None
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", time_v)
    if m:
        wall = int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_v)
    if m:
        rss = int(m.group(1)) / 1e6
    return wall, rss


def extra_aurocs(model: Path, seed: int, seeds: list[int], work: Path) -> list[float]:
    """Pixel AUROC of the model's map on more painted test images, scored as the demo scores its own."""
    opts = nsgan.ScoreOptions(search=nsgan.SearchConfig(iterations=None, restarts=1, seed=seed))
    scorer = nsgan.Scorer.from_file(model, opts)
    out = []
    for s in seeds:
        image, mask_path = nsgan.build_demo_image(work / f"test-{s}", seed=s)
        amap = scorer.score(nsgan.read_image(image)).map
        mask = nsgan.read_image(mask_path)[:, :, 0] > 0.5
        out.append(nsgan.image_auroc(amap.ravel(), mask.ravel()))
    return out


def run_candidate(cid: str, seed: int, out: Path, extra: int) -> dict:
    what, overrides = CANDIDATES[cid]
    folder = out / f"{cid}-s{seed}"
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "nsgan.cli", "demo", "--out", str(folder), "--overwrite", "--seed", str(seed), *overrides]
    log = out / f"{cid}-s{seed}.log"
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, text=True)
    elapsed = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"candidate {cid} seed {seed} failed (exit {proc.returncode}); see {log}")
    wall, rss = _wall_seconds(text)
    demo = json.loads((folder / "demo.json").read_text())
    run = json.loads(nsgan.RunLayout(folder / "run").summary.read_text())
    meta = nsgan.read_metadata(Path(demo["model"]))
    enc_s = (meta.get("encoder") or {}).get("train_seconds")
    c_s = (meta.get("comparator") or {}).get("train_seconds")
    seeds = list(range(11, 11 + extra))
    ex = extra_aurocs(Path(demo["model"]), seed, seeds, folder / "extra") if extra else []
    return {
        "id": cid, "seed": seed, "what": what, "overrides": overrides, "command": " ".join(cmd[2:]),
        "demo_minutes": round((wall or elapsed) / 60, 2), "peak_rss_gb": rss, "gan_seconds": run.get("train_seconds"),
        "encoder_seconds": enc_s, "comparator_seconds": c_s, "kimg": run.get("images_seen", 0) / 1000, "pixel_auroc": round(demo["pixel_auroc"], 4),
        "extra_seeds": seeds, "extra_pixel_auroc": [round(a, 4) for a in ex],
        "extra_mean": round(statistics.mean(ex), 4) if ex else None, "extra_sd": round(statistics.stdev(ex), 4) if len(ex) > 1 else None,
        "top_regions_hit_defect": demo.get("top_regions_hit_defect"), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_table(out: Path) -> str:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    lines = ["| id | config (beyond configs/demo.yaml) | seed | demo min | GAN s | enc s | C s | demo px AUROC | 5-image mean ± sd |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["id"], r["seed"])):
        ex = f"{r['extra_mean']:.3f} ± {r['extra_sd']:.3f}" if r.get("extra_sd") is not None else "–"
        lines.append(f"| {r['id']} | {r['what']} | {r['seed']} | {r['demo_minutes']:.1f} | {r['gan_seconds']:.0f} | "
                     f"{(r['encoder_seconds'] or 0):.0f} | {(r.get('comparator_seconds') or 0):.0f} | {r['pixel_auroc']:.3f} | {ex} |")
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", default="A,C,E", help="comma-separated ids (see --list)")
    p.add_argument("--seeds", default="0", help="comma-separated demo seeds")
    p.add_argument("--extra", type=int, default=5, help="more painted test images per model for a mean ± sd (0: none)")
    p.add_argument("--out", default="runs/demo-sizing")
    p.add_argument("--list", action="store_true", help="print the candidates and exit")
    p.add_argument("--table-only", action="store_true", help="rewrite OUT/table.md from OUT/results.jsonl and exit")
    a = p.parse_args(argv)
    if a.list:
        for cid, (what, ov) in CANDIDATES.items():
            print(f"{cid}: {what}\n   {' '.join(ov)}")
        return nsgan.EXIT_OK
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    if a.table_only:
        print(write_table(out))
        return nsgan.EXIT_OK
    ids = [c.strip() for c in a.candidates.split(",") if c.strip()]
    unknown = [c for c in ids if c not in CANDIDATES]
    if unknown:
        p.error(f"--candidates: unknown {', '.join(unknown)} (known: {', '.join(CANDIDATES)})")
    done = set()
    if results.exists():
        done = {(r["id"], r["seed"]) for r in map(json.loads, results.read_text().splitlines()) if r}
    for seed in [int(s) for s in a.seeds.split(",") if s.strip()]:
        for cid in ids:
            if (cid, seed) in done:
                print(f"{cid} seed {seed}: already in {results}")
                continue
            print(f"{cid} seed {seed}: {CANDIDATES[cid][0]} ...", flush=True)
            row = run_candidate(cid, seed, out, a.extra)
            with open(results, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"  {row['demo_minutes']:.1f} min, pixel AUROC {row['pixel_auroc']:.3f}, "
                  f"{a.extra}-image mean {row['extra_mean']} ± {row['extra_sd']}", flush=True)
            write_table(out)
    print(write_table(out))
    return nsgan.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

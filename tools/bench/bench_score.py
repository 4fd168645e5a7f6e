"""`nsgan score` end to end, side by side: before/after code, torch vs ONNX Runtime (cold and warm cache), model vs model.

    python tools/bench/bench_score.py --model runs/prof/model.safetensors --size 2048 --rounds 2 \
        [--before /path/to/older/checkout] [--threads 2] [--json runs/bench-score.json] [--vs OTHER.safetensors --torch-only]

Each variant is the real command, `python -m nsgan.cli score --model M --image IMG --out DIR --overwrite
--no-progress` in a fresh process (imports, model load and the ONNX export included in its wall time),
run one after another and alternating order over rounds, so load from other jobs hits all alike:

  before        the same command with PYTHONPATH at --before (an older checkout; skipped without it)
  torch         this checkout, --backend torch
  onnx cold     this checkout, --backend onnx with an empty cache folder (the export is paid here)
  onnx warm     this checkout, --backend onnx, the cache filled by the cold run

The image is the demo's painted test image at --size² (nsgan.build_demo_image). Per variant: the
median wall seconds, MP/s, and (this checkout) the report's stage split, whose non-network share is
(wall − network) / wall of the process. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import nsgan  # noqa: E402


def run_variant(name: str, pythonpath: Path, model: Path, image: Path, out: Path, extra: list[str], env_extra: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), **env_extra)
    cmd = [sys.executable, "-m", "nsgan.cli", "score", "--model", str(model), "--image", str(image), "--out", str(out),
           "--overwrite", "--no-progress", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=pythonpath)  # `-m` puts the cwd first on sys.path
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    if name == "before" and "timing" in json.loads((out / f"{image.stem}.json").read_text()):
        raise SystemExit(f"before: {pythonpath} scored with this checkout's code (its report has a timing)")
    report = json.loads((out / f"{image.stem}.json").read_text())
    return {"wall_s": wall, "timing": report.get("timing"), "stdout": proc.stdout}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a model file with an encoder")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--before", default=None, help="an older checkout to run as 'before' (its PYTHONPATH)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for every variant (default: unset)")
    p.add_argument("--json", default=None)
    p.add_argument("--vs", nargs="*", default=[], metavar="MODEL",
                   help="more model files scored with torch in the same rounds ('torch 2', 'torch 3', ...): two designs "
                        "side by side on one machine state")
    p.add_argument("--torch-only", action="store_true", help="no ONNX variants (models ONNX cannot run, e.g. C beside blur)")
    a = p.parse_args(argv)
    a.model = str(Path(a.model).resolve())  # the variants run in their own checkouts' folders
    env_extra = {"OMP_NUM_THREADS": str(a.threads)} if a.threads else {}
    with tempfile.TemporaryDirectory(prefix="nsgan-bench-score-") as tmp:
        tmp = Path(tmp)
        image, _ = nsgan.build_demo_image(tmp / "in", size=a.size)
        model = Path(a.model)
        variants = []
        if a.before:
            variants.append(("before", Path(a.before), [], {}, model))
        variants.append(("torch", REPO, ["--backend", "torch"], {}, model))
        variants += [(f"torch {i + 2}", REPO, ["--backend", "torch"], {}, Path(m).resolve()) for i, m in enumerate(a.vs)]
        if not a.torch_only:
            variants += [("onnx cold", REPO, ["--backend", "onnx"], {"NSGAN_CACHE_DIR": str(tmp / "cold")}, model),
                         ("onnx warm", REPO, ["--backend", "onnx"], {"NSGAN_CACHE_DIR": str(tmp / "warm")}, model)]
        results: dict[str, list[dict]] = {v[0]: [] for v in variants}
        for rnd in range(a.rounds):
            order = variants if rnd % 2 == 0 else variants[::-1]
            if rnd == 0 and not a.torch_only:  # the warm cache is filled once, untimed
                run_variant("fill", REPO, Path(a.model), image, tmp / "fill", ["--backend", "onnx"],
                            {**env_extra, "NSGAN_CACHE_DIR": str(tmp / "warm")})
            for name, path, extra, env, m in order:
                if name == "onnx cold":
                    shutil.rmtree(tmp / "cold", ignore_errors=True)
                r = run_variant(name, path, m, image, tmp / name.replace(" ", "-"), extra, {**env_extra, **env})
                results[name].append(r)
                print(f"round {rnd + 1} {name:10s} {r['wall_s']:7.1f} s", flush=True)
    mp = a.size * a.size / 1e6
    rows = []
    for name, rs in results.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        row = {"variant": name, "wall_s": round(wall, 2), "mp_per_s": round(mp / wall, 3)}
        timings = [r["timing"] for r in rs if r["timing"]]
        if timings:
            net = statistics.median(t["seconds"]["network"] for t in timings)
            row["network_s"] = round(net, 2)
            row["non_network_share"] = round(1 - net / wall, 3)  # of the whole process: imports, load, export included
            row["stages_s"] = {k: round(statistics.median(t["seconds"][k] for t in timings), 3) for k in timings[0]["seconds"]}
        rows.append(row)
    print(f"\n{a.size}² gray, {a.rounds} rounds (median wall of the whole `nsgan score` process):")
    print(f"{'variant':10s} {'wall s':>8s} {'MP/s':>7s} {'network s':>10s} {'non-network':>12s}")
    for r in rows:
        share = f"{100 * r['non_network_share']:.1f}%" if "non_network_share" in r else "–"
        print(f"{r['variant']:10s} {r['wall_s']:8.1f} {r['mp_per_s']:7.3f} {r.get('network_s', float('nan')):10.1f} {share:>12s}")
    for r in rows:
        if "stages_s" in r:
            print(f"  {r['variant']}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["stages_s"].items()))
    for i, m in enumerate([a.model, *a.vs]):
        print(f"  {'torch' if i == 0 else f'torch {i + 1}'}: {m}")
    if a.json:
        Path(a.json).write_text(json.dumps({"command": " ".join([Path(sys.executable).name, *sys.argv]), "size": a.size,
                                            "rounds": a.rounds, "rows": rows}, indent=1))
    return nsgan.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

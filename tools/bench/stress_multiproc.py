"""Repeat the 2-process (gloo, CPU) training and scoring commands N times; count passes and failures.

    python tools/bench/stress_multiproc.py                       # 20 trainings and 20 scorings (~10-20 min on 2 busy cores)
    python tools/bench/stress_multiproc.py --runs 5 --what score --out /tmp/stress --json counts.json

Each run is the command a user types (`accelerate launch --multi_gpu --num_processes 2 ...
launch/train.py` or `launch/score.py`) on tiny data, on a free port of its own. A run passes when it
exits 0 AND its outputs are complete and right: a training's model loads, both ranks ended with
the same weights and the export is those weights; a scoring's map, overlay and report exist and the
map equals the one-process map bit for bit. A failure is counted either as "exit != 0 with the
outputs complete" (what the gloo abort at exit looked like: finished work, reported as a crash) or as
"outputs missing or wrong". The failure messages (last lines of the run's output) are printed,
grouped. Prints figures and exits 0 unless --strict; CI runs the tests, not this.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import socket
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

import nsgan  # noqa: E402

# The tiny run of the test suite: 16-px gray tiles, narrow networks, 0.256 kimg.
TINY = [
    "model.resolution=16", "model.latent_dim=16", "model.fmap_base=64", "model.fmap_max=16",
    "schedule.start_resolution=8", "schedule.stable_kimg=0.064", "schedule.fade_kimg=0.064",
    "schedule.total_kimg=0.256", "schedule.batch={8: 16, 16: 8}", "schedule.default_batch=8",
    "train.checkpoint_kimg=0.064", "train.log_every=2", "train.grid_size=2", "train.display=false",
    "train.mixed_precision=no", "data.num_workers=0", "loss.gamma=0.2", "loss.r1_gamma=1",
]
SEARCH = ["--iterations", "5", "--restarts", "1", "--batch", "8", "--no-progress"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), ACCELERATE_USE_CPU="1",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    return env


def launch(nproc: int, script: str, args: list[str], timeout: float) -> tuple[int, str, float]:
    multi = ["--multi_gpu"] if nproc > 1 else []
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *multi, "--num_processes", str(nproc), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(REPO / "launch" / script), *args]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=child_env(), cwd=REPO, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr, time.perf_counter() - t0
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
        return -999, out + f"\n(timed out after {timeout:.0f} s)", time.perf_counter() - t0


def prepare(work: Path) -> dict[str, Path]:
    """Tiny shards, an untrained tiny model, a test image and its one-process map (the reference)."""
    nsgan.build_demo_dataset(work / "data", n_normal=6, n_abnormal=3, size=64, seed=0)
    nsgan.write_shards(nsgan.ShardSpec(work / "data" / "normal", abnormal_dir=work / "data" / "abnormal",
                                       abnormal_masks_dir=work / "data" / "abnormal_masks", tile=16, out=work / "shards",
                                       stride=16, channels=1, seed=0))
    torch.manual_seed(0)
    model = nsgan.save_model(work / "model.safetensors", nsgan.Generator(16, 1, latent_dim=16, fmap_base=64, fmap_max=16),
                             nsgan.Discriminator(16, 1, fmap_base=64, fmap_max=16), {"config": {}, "images_seen": 0})
    image = work / "part.png"
    nsgan.write_png(image, np.random.default_rng(2).random((61, 75, 1)).astype(np.float32))
    cfg = work / "cfg.yaml"
    cfg.write_text("seed: 0\n")
    code, out, _ = launch(1, "score.py", ["--model", str(model), "--image", str(image), "--out", str(work / "reference"), *SEARCH], 300)
    if code != 0:
        raise SystemExit(f"the one-process reference scoring failed (exit {code}):\n{out[-3000:]}")
    return {"shards": work / "shards", "model": model, "image": image, "cfg": cfg, "reference": work / "reference" / "part.map.tif"}


def check_training(run: Path) -> str | None:
    """None if the run folder holds a complete, consistent training; else what is wrong."""
    layout = nsgan.RunLayout(run)
    try:
        summary = json.loads(layout.summary.read_text())
        m = nsgan.load_model(layout.model)
    except Exception as exc:  # noqa: BLE001 - any missing or broken output is a failure to report
        return f"output missing or unreadable ({type(exc).__name__}: {str(exc)[:200]})"
    digests = summary.get("rank_digests", [])
    if len(digests) != 2 or digests[0] != digests[1]:
        return f"ranks ended with different weights: {digests}"
    if nsgan.weights_digest([m.generator, m.discriminator]) != summary.get("export_digest"):
        return "the exported model is not the trained weights"
    if m.meta.get("images_seen", 0) < 256:
        return f"model saw only {m.meta.get('images_seen')} images"
    return None


def check_scoring(out: Path, reference: Path) -> str | None:
    try:
        report = json.loads((out / "part.json").read_text())
        same = np.array_equal(tifffile.imread(out / "part.map.tif"), tifffile.imread(reference))
        overlay = (out / "part.overlay.png").stat().st_size > 0
    except Exception as exc:  # noqa: BLE001
        return f"output missing or unreadable ({type(exc).__name__}: {str(exc)[:200]})"
    if not same:
        return "the map differs from the one-process map"
    if not overlay or "score" not in report:
        return "overlay or report incomplete"
    return None


def last_lines(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


def one_run(kind: str, i: int, work: Path, inputs: dict[str, Path], timeout: float) -> dict:
    if kind == "train":
        target = work / f"train-{i:03d}"
        args = ["--config", str(inputs["cfg"]), *TINY, f"data.normal={inputs['shards'] / 'normal'}",
                f"data.abnormal={inputs['shards'] / 'abnormal'}", f"run_dir={target}"]
        code, out, secs = launch(2, "train.py", args, timeout)
        problem = check_training(target)
    else:
        target = work / f"score-{i:03d}"
        args = ["--model", str(inputs["model"]), "--image", str(inputs["image"]), "--out", str(target), *SEARCH]
        code, out, secs = launch(2, "score.py", args, timeout)
        problem = check_scoring(target, inputs["reference"])
    if code == 0 and problem is None:
        outcome = "pass"
    elif problem is None:
        outcome = "exit != 0 with the outputs complete"
    else:
        outcome = "outputs missing or wrong"
    return {"kind": kind, "run": i, "exit": code, "seconds": round(secs, 1), "outcome": outcome,
            "problem": problem, "message": None if outcome == "pass" else last_lines(out), "folder": str(target)}


def summarise(results: list[dict], kind: str) -> dict:
    mine = [r for r in results if r["kind"] == kind]
    counts = collections.Counter(r["outcome"] for r in mine)
    return {"runs": len(mine), "passed": counts["pass"], "failed": len(mine) - counts["pass"],
            "exit_nonzero_outputs_complete": counts["exit != 0 with the outputs complete"],
            "outputs_missing_or_wrong": counts["outputs missing or wrong"],
            "median_seconds": sorted(r["seconds"] for r in mine)[len(mine) // 2] if mine else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20, help="repetitions of each command (default %(default)s)")
    p.add_argument("--what", default="train,score", help="train, score or both (default %(default)s)")
    p.add_argument("--out", help="work folder (default: a temporary one, removed at the end)")
    p.add_argument("--timeout", type=float, default=300, help="seconds before one run counts as hung (default %(default)s)")
    p.add_argument("--json", help="also write the counts and every run's outcome to this JSON file")
    p.add_argument("--keep", action="store_true", help="keep the runs' folders (default: only failed ones are kept)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any run failed")
    args = p.parse_args(argv)
    kinds = [k.strip() for k in args.what.split(",") if k.strip()]
    if args.runs < 1 or not kinds or any(k not in ("train", "score") for k in kinds):
        p.error("--runs must be >= 1 and --what a comma list of train, score")
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="nsgan-stress-"))
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        p.error(f"{work}: not empty; give an empty or new --out")
    print(f"preparing tiny data in {work} ...", flush=True)
    inputs = prepare(work)
    results = []
    for kind in kinds:
        for i in range(args.runs):
            r = one_run(kind, i, work, inputs, args.timeout)
            results.append(r)
            extra = "" if r["outcome"] == "pass" else f"  [{r['problem'] or 'exit ' + str(r['exit'])}] {r['message']}"
            print(f"{kind} {i + 1:>3}/{args.runs}: {r['outcome']:<36} exit {r['exit']:>4}  {r['seconds']:6.1f} s{extra}", flush=True)
            if r["outcome"] == "pass" and not args.keep:
                shutil.rmtree(r["folder"], ignore_errors=True)
    summary = {kind: summarise(results, kind) for kind in kinds}
    print()
    for kind, s in summary.items():
        print(f"{kind}: {s['runs']} runs, {s['passed']} passed, {s['failed']} failed "
              f"({s['exit_nonzero_outputs_complete']} exit != 0 with outputs complete, "
              f"{s['outputs_missing_or_wrong']} outputs missing or wrong); median {s['median_seconds']} s per run")
        messages = collections.Counter(r["message"] for r in results if r["kind"] == kind and r["outcome"] != "pass")
        for msg, n in messages.most_common():
            print(f"  {n} x {msg}")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "runs": results}, indent=1) + "\n")
    if not args.out and not any(r["outcome"] != "pass" for r in results) and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return nsgan.EXIT_FAILED if args.strict and any(s["failed"] for s in summary.values()) else nsgan.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

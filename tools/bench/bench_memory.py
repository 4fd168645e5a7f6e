"""Peak memory per rank for the 1024-tile config under DDP, ZeRO-1 and ZeRO-2 (CPU, 2 processes).

    python tools/bench/bench_memory.py [--engines ddp,zero1,zero2] [--steps 2] [--batch 1] [--processes 2] [--json out.json]

Each engine trains configs/industrial-1024.yaml (PGGAN widths: G and D 23.1 M parameters each) for
a few steps at the final resolution (1024 px, RGB, R1 and the abnormal penalty on, fp32) through the
real Trainer and its engine, on shards of 1024-px tiles this script writes in a temp dir. Every rank
reports its peak resident memory (ru_maxrss) before the model is built, after the engine wrapped
the networks, and after the steps, plus the memory it still holds after the steps (weights,
gradients, optimizer state: what ZeRO partitions); figures are per rank, in MiB. The end-of-run checkpoint and
export are not part of the measurement (the worker stops after the steps).

On a GPU cluster the same split holds for GPU memory: weights, gradients and Adam's two moments
are what ZeRO partitions; activations (large at 1024 px) are not partitioned by ZeRO-1/2.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "industrial-1024.yaml"
ENGINES = {
    "ddp": ["--multi_gpu"],
    "zero1": ["--config_file", str(REPO / "configs" / "accelerate" / "deepspeed-zero1.yaml")],
    "zero2": ["--config_file", str(REPO / "configs" / "accelerate" / "deepspeed-zero2.yaml")],
}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _rss_now_mib() -> float:
    """Resident memory right now, after handing freed heap back to the OS (else glibc's cache of the
    freed activations hides it): what stays is weights, gradients, optimizer state and buffers."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: the figure then includes the allocator's cache
        pass
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build_shards(root: Path, tile: int = 1024) -> Path:
    """A handful of 1024-px RGB images (smoothed noise) cut into tiles; the content does not matter here."""
    import numpy as np

    from nsgan.data.imageio import write_png
    from nsgan.data.shards import write_shards

    rng = np.random.default_rng(0)
    for kind, n in (("normal", 4), ("abnormal", 2)):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.random((tile // 8, tile // 8, 3), dtype=np.float32).repeat(8, 0).repeat(8, 1)
            write_png(root / kind / f"{kind}_{i}.png", img)
    write_shards(root / "normal", root / "abnormal", None, tile=tile, out=root / "shards", stride=tile, channels=3, seed=0)
    return root / "shards"


# ------------------------------------------------------------------------------ worker (one rank)


def worker(args) -> int:
    import torch

    torch.set_num_threads(1)
    from accelerate.utils import gather_object

    from nsgan.train.config import load_config
    from nsgan.train.common import shutdown
    from nsgan.train.gan_loop import Trainer, schedule_config
    from nsgan.train.schedule import schedule

    base = _rss_mib()
    shards = Path(args.shards)
    cfg = load_config(CONFIG, [
        f"data.normal={shards / 'normal'}", f"data.abnormal={shards / 'abnormal'}", f"run_dir={args.run_dir}",
        "data.num_workers=0", "train.mixed_precision=no", "train.display=false", "train.grid_size=1",
        "schedule.start_resolution=1024", f"schedule.batch={{1024: {args.batch}}}", f"schedule.default_batch={args.batch}",
    ])
    trainer = Trainer(cfg, str(CONFIG))
    wrapped = _rss_mib()
    phase = schedule(0, schedule_config(cfg), trainer.world)
    assert phase.resolution == 1024 and phase.alpha == 1.0, phase
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        stats = trainer.step(phase)
        times.append(time.perf_counter() - t0)
    assert all(v == v for v in stats.values()), stats  # no NaN
    params = sum(p.numel() for p in trainer.G_raw.parameters()) + sum(p.numel() for p in trainer.D_raw.parameters())
    mine = {"rank": trainer.rank, "engine": trainer.engine.name, "world": trainer.world, "params": params,
            "rss_start_mib": round(base, 1), "rss_after_prepare_mib": round(wrapped, 1), "rss_peak_mib": round(_rss_mib(), 1),
            "rss_after_steps_mib": round(_rss_now_mib(), 1),
            "step_seconds": [round(t, 2) for t in times], "loss_d": stats["loss_d"]}
    everyone = gather_object([mine]) if trainer.world > 1 else [mine]
    if trainer.is_main:
        Path(args.out).write_text(json.dumps(everyone))
    shutdown(trainer.acc)
    return 0


# ------------------------------------------------------------------------------ orchestration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--engines", default="ddp,zero1,zero2")
    p.add_argument("--steps", type=int, default=2, help="training steps at 1024 px per engine")
    p.add_argument("--batch", type=int, default=1, help="per-process batch (the config's own at 1024 px is 1)")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shards", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)

    engines = [e for e in args.engines.split(",") if e]
    print(f"peak memory per rank, configs/industrial-1024.yaml at 1024 px, batch {args.batch} per process, fp32, "
          f"{args.processes} CPU processes (1 torch thread each), {args.steps} steps per engine", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nsgan-mem-") as tmp:
        shards = build_shards(Path(tmp))
        for engine in engines:
            env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            if engine == "ddp":
                env["ACCELERATE_USE_CPU"] = "1"
            else:
                env.pop("ACCELERATE_USE_CPU", None)  # accelerate drops DeepSpeed with it
            out = Path(tmp) / f"{engine}.json"
            cmd = [sys.executable, "-m", "accelerate.commands.launch", *ENGINES[engine], "--num_processes", str(args.processes),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
                   __file__, "--worker", "--shards", str(shards), "--run-dir", str(Path(tmp) / f"run-{engine}"),
                   "--out", str(out), "--steps", str(args.steps), "--batch", str(args.batch)]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if not out.is_file():
                print(proc.stdout[-3000:], proc.stderr[-5000:], file=sys.stderr)
                raise SystemExit(f"{engine}: the benchmark run failed (exit {proc.returncode})")
            ranks = json.loads(out.read_text())
            for r in ranks:
                r["wall_s"] = round(time.perf_counter() - t0, 1)
            rows += ranks
            peak = max(r["rss_peak_mib"] for r in ranks)
            print(f"{engine}: done in {time.perf_counter() - t0:.0f} s, peak {peak:.0f} MiB", flush=True)
    head = f"{'engine':>16} {'rank':>4} | {'start MiB':>9} {'after prepare':>13} {'peak MiB':>9} {'held after steps':>16} | {'s/step':>7}"
    print()
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['engine']:>16} {r['rank']:>4} | {r['rss_start_mib']:>9.0f} {r['rss_after_prepare_mib']:>13.0f} {r['rss_peak_mib']:>9.0f} {r['rss_after_steps_mib']:>16.0f} | "
              f"{sum(r['step_seconds']) / len(r['step_seconds']):>7.1f}")
    params = rows[0]["params"]
    print(f"\nG + D: {params / 1e6:.1f} M parameters = {params * 4 / 2**20:.0f} MiB of fp32 weights; Adam's two moments "
          f"{2 * params * 4 / 2**20:.0f} MiB; gradients {params * 4 / 2**20:.0f} MiB (per full copy).")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join([Path(sys.executable).name, *sys.argv]), "rows": rows}, indent=1))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())

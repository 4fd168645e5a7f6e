"""Peak memory per rank for the 1024-tile config under DDP, ZeRO-1 and ZeRO-2 (CPU, 2 processes).

    python tools/bench/bench_memory.py [--engines ddp,zero1,zero2] [--steps 2] [--batch 1] [--processes 2] [--json out.json]

Each engine trains configs/industrial-1024.yaml (PGGAN widths: G and D 23.1 M parameters each) for
a few steps at the final resolution (1024 px, RGB, R1 and the abnormal penalty on, fp32) through
`nsgan.train` under `accelerate launch` with that engine, on shards of 1024-px tiles this script writes
in a temp dir. Every rank reports its peak resident memory (ru_maxrss) before training, the peak a
sampler thread saw while the steps ran (until metrics.jsonl holds the last step's row: the end-of-run
checkpoint and export are not part of the measurement), and the memory it still held then, after
handing freed heap back to the OS (weights, gradients, optimizer state: what ZeRO partitions); figures
are per rank, in MiB. Seconds per step come from the run's metrics.jsonl.

On a GPU cluster the same split holds for GPU memory: weights, gradients and Adam's two moments
are what ZeRO partitions; activations (large at 1024 px) are not partitioned by ZeRO-1/2.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nsgan.cli import set_process_defaults  # noqa: E402

set_process_defaults()  # before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402

import nsgan  # noqa: E402

CONFIG = REPO / "configs" / "industrial-1024.yaml"
ENGINES = {
    "ddp": ["--multi_gpu"],
    "zero1": ["--config_file", str(REPO / "configs" / "accelerate" / "deepspeed-zero1.yaml")],
    "zero2": ["--config_file", str(REPO / "configs" / "accelerate" / "deepspeed-zero2.yaml")],
}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _rss_now_mib(trim: bool = False) -> float:
    """Resident memory right now; with `trim`, after handing freed heap back to the OS (else glibc's cache of the
    freed activations hides it): what stays is weights, gradients, optimizer state and buffers."""
    if trim:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # not glibc: the figure then includes the allocator's cache
            pass
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build_shards(root: Path, tile: int = 1024) -> Path:
    """A handful of 1024-px RGB images (smoothed noise) cut into tiles; the content does not matter here."""
    rng = np.random.default_rng(0)
    for kind, n in (("normal", 4), ("abnormal", 2)):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.random((tile // 8, tile // 8, 3), dtype=np.float32).repeat(8, 0).repeat(8, 1)
            nsgan.write_png(root / kind / f"{kind}_{i}.png", img)
    nsgan.write_shards(nsgan.ShardSpec(root / "normal", abnormal_dir=root / "abnormal", tile=tile, out=root / "shards",
                                       stride=tile, channels=3, seed=0))
    return root / "shards"


# ------------------------------------------------------------------------------ worker (one rank)


class StepMemory(threading.Thread):
    """Samples this process's resident memory while the steps run; stops when metrics.jsonl (a row per step, by
    the main process) holds the last step's row, and records the memory still held then."""

    def __init__(self, layout: "nsgan.RunLayout", steps: int, every_s: float = 0.02):
        super().__init__(daemon=True)
        self.layout, self.steps, self.every_s = layout, steps, every_s
        self.peak, self.held = 0.0, None
        self.done = threading.Event()

    def run(self) -> None:  # noqa: D102  (threading.Thread's entry)
        while not self.done.is_set():
            if self._rows() >= self.steps:
                self.held = _rss_now_mib(trim=True)
                return
            self.peak = max(self.peak, _rss_now_mib())
            time.sleep(self.every_s)

    def _rows(self) -> int:
        try:
            return self.layout.metrics.read_text().count("\n")
        except FileNotFoundError:
            return 0


def worker(args) -> int:
    torch.set_num_threads(1)
    base = _rss_mib()
    shards = Path(args.shards)
    cfg = nsgan.load_config(CONFIG, [
        f"data.normal={shards / 'normal'}", f"data.abnormal={shards / 'abnormal'}", f"run_dir={args.run_dir}",
        "data.num_workers=0", "train.mixed_precision=no", "train.display=false", "train.grid_size=1", "train.log_every=1",
        "train.log_with=none", "train.checkpoint_kimg=1000000", "encoder.kimg=0", "comparator.kimg=0",
        "schedule.start_resolution=1024", f"schedule.batch={{1024: {args.batch}}}", f"schedule.default_batch={args.batch}",
        f"schedule.total_kimg={args.steps * args.batch * args.world / 1000}",
    ])
    run = nsgan.RunLayout(cfg.run_dir)
    sampler = StepMemory(run, args.steps)
    sampler.start()
    nsgan.train(cfg, source=str(CONFIG))
    sampler.done.set()
    sampler.join()
    rank = int(os.environ.get("RANK", "0"))
    rows = [r for line in run.metrics.read_text().splitlines() if line.strip() and "kind" not in (r := json.loads(line))] if rank == 0 else []
    times = [b["time_s"] - a["time_s"] for a, b in zip([{"time_s": 0.0}, *rows], rows)]
    m = nsgan.load_model(run.model) if rank == 0 else None
    mine = {"rank": rank, "engine": args.engine, "world": args.world,
            "params": sum(p.numel() for net in (m.generator, m.discriminator) for p in net.parameters()) if m else None,
            "rss_start_mib": round(base, 1), "rss_peak_mib": round(max(sampler.peak, base), 1),
            "rss_after_steps_mib": None if sampler.held is None else round(sampler.held, 1),
            "step_seconds": [round(t, 2) for t in times], "loss_d": rows[-1]["loss_d"] if rows else None}
    Path(f"{args.out}.rank{rank}").write_text(json.dumps(mine))
    return nsgan.EXIT_OK


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
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
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
                   "--out", str(out), "--steps", str(args.steps), "--batch", str(args.batch), "--engine", engine,
                   "--world", str(args.processes)]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            files = [Path(f"{out}.rank{r}") for r in range(args.processes)]
            if not all(f.is_file() for f in files):
                print(proc.stdout[-3000:], proc.stderr[-5000:], file=sys.stderr)
                raise SystemExit(f"{engine}: the benchmark run failed (exit {proc.returncode})")
            ranks = [json.loads(f.read_text()) for f in files]
            for r in ranks:
                r["wall_s"] = round(time.perf_counter() - t0, 1)
            rows += ranks
            peak = max(r["rss_peak_mib"] for r in ranks)
            print(f"{engine}: done in {time.perf_counter() - t0:.0f} s, peak {peak:.0f} MiB", flush=True)
    head = f"{'engine':>16} {'rank':>4} | {'start MiB':>9} {'peak MiB':>9} {'held after steps':>16} | {'s/step':>7}"
    print()
    print(head)
    print("-" * len(head))
    for r in rows:
        held = "–" if r["rss_after_steps_mib"] is None else f"{r['rss_after_steps_mib']:.0f}"
        per_step = f"{sum(r['step_seconds']) / len(r['step_seconds']):.1f}" if r["step_seconds"] else "–"
        print(f"{r['engine']:>16} {r['rank']:>4} | {r['rss_start_mib']:>9.0f} {r['rss_peak_mib']:>9.0f} {held:>16} | {per_step:>7}")
    params = next(r["params"] for r in rows if r["params"])
    print(f"\nG + D: {params / 1e6:.1f} M parameters = {params * 4 / 2**20:.0f} MiB of fp32 weights; Adam's two moments "
          f"{2 * params * 4 / 2**20:.0f} MiB; gradients {params * 4 / 2**20:.0f} MiB (per full copy).")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join([Path(sys.executable).name, *sys.argv]), "rows": rows}, indent=1))
        print(f"figures written to {args.json}")
    return nsgan.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

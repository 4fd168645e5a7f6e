"""Training benchmark: `nsgan train`'s img/s and achieved FLOP/s per resolution against a matmul, lazy R1 before/after, loader.

    python tools/bench/bench_train.py [--resolutions 8,16,32,64] [--windows 3] [--threads 2]
                                [--precisions no,bf16] [--r1-every K] [--config configs/demo.yaml] [--wide] [--json out.json]

What it measures, all on one process (the figures of one rank), through the product (`nsgan.train`):
  * training img/s: a short run of `nsgan.train` at each resolution (schedule.start_resolution = the
    resolution, so every step is the final level's: D step with the abnormal penalty, R1 on its steps,
    G step, EMA), the config's widths and batch, in fp32 and in bf16 autocast, read from the run's
    metrics.jsonl (`img_s` per window of K steps; the first window, with the warm-up, is dropped; the
    median of the next `--windows`). The data come from shards as in any run (`data.num_workers` of
    the config unless `--loader-workers`), so this is what a user's run does, loading included.
  * lazy R1 before and after: the same run with loss.r1_every = 1 (R1 every step, the old work) and
    with k = K (`--r1-every`, default the config's loss.r1_every); each window holds K steps, so it
    holds exactly one R1 step at k = K.
  * achieved FLOP/s: FLOPs per image counted from whole runs with torch's op formulas
    (tools/bench/flops.py: forwards, backwards, R1's double backward; Adam and the EMA are elementwise
    and not counted) — three short counted runs (k = K for K and 2K steps, k = 1 for K steps), whose
    differences cancel what a run does besides its steps (sample grids, export) — over the same
    process's n×n matmul rate in the same precision and threads; the ratio's goal is >= 0.5.
  * data-loader img/s (`nsgan.measure_loader`, the config's num_workers) on the same shards, divided by
    the training img/s at the same resolution.

Noise: the machine is shared, so figures are medians over windows, and fp32 and bf16 live in two worker
processes (accelerate's mixed-precision setting is process-wide). tools/bench/gpu_check.py runs the same
measurement on a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _p in (str(REPO), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from nsgan.cli import set_process_defaults  # noqa: E402

set_process_defaults()  # before torch loads

import torch  # noqa: E402
import yaml  # noqa: E402
from flops import count_flops, matmul_rate  # noqa: E402  (tools/bench/flops.py, beside this script)

import nsgan  # noqa: E402

DEMO_CONFIG = REPO / "configs" / "demo.yaml"
PRECISIONS = ("no", "bf16")
WIDTHS = {"demo": [], "wide": ["model.fmap_base=2048", "model.fmap_max=128", "model.latent_dim=128"]}
TINY_WIDTHS = ["model.fmap_base=64", "model.fmap_max=16", "model.latent_dim=16", "model.mbstd_group=4"]


# ------------------------------------------------------------------------------ data


def build_shards(root: Path, resolutions: list[int], channels: int = 1, n_normal: int = 24, n_abnormal: int = 8) -> dict[int, Path]:
    """One shard set per tile size, cut from the demo's painted brick images (normal + abnormal, with masks)."""
    size = max(128, 2 * max(resolutions))
    data = root / "data"
    nsgan.build_demo_dataset(data, n_normal=n_normal, n_abnormal=n_abnormal, size=size, seed=0)
    out = {}
    for res in resolutions:
        out[res] = root / f"shards-{res}"
        nsgan.write_shards(nsgan.ShardSpec(data / "normal", abnormal_dir=data / "abnormal", abnormal_masks_dir=data / "abnormal_masks",
                                           tile=res, out=out[res], stride=max(4, res // 2), channels=channels, seed=0))
    return out


def shard_files(shards: Path, which: str = "normal") -> list[str]:
    return sorted(str(f) for f in (shards / which).glob("*.tar"))


# ------------------------------------------------------------------------------ short runs of nsgan.train


def batch_at(config: Path, res: int) -> int:
    """The config's per-process batch at `res` (its schedule.batch entry for the largest listed resolution <= res)."""
    sched = yaml.safe_load(Path(config).read_text()).get("schedule", {})
    table = {int(k): int(v) for k, v in (sched.get("batch") or {}).items()}
    keys = [k for k in table if k <= res]
    return table[max(keys)] if keys else int(sched.get("default_batch", nsgan.TrainConfig().schedule.default_batch))


def run_config(config: Path, res: int, shards: Path, run_dir: Path, precision: str, k: int, steps: int,
               extra: list[str] = (), log_every: int = 1) -> "nsgan.TrainConfig":
    """`config` at final resolution `res`, trained from that resolution for exactly `steps` steps, R1 every k,
    a metrics row every `log_every` steps."""
    batch = batch_at(config, res)
    return nsgan.load_config(config, [
        f"model.resolution={res}", f"schedule.start_resolution={res}", *extra,
        f"schedule.batch={{{res}: {batch}}}", f"schedule.default_batch={batch}",
        f"schedule.stable_kimg={steps * batch / 1000}", "schedule.fade_kimg=0", f"schedule.total_kimg={steps * batch / 1000}",
        f"data.normal={shards / 'normal'}", f"data.abnormal={shards / 'abnormal'}", f"run_dir={run_dir}",
        f"train.mixed_precision={precision}", "train.display=false", "train.log_with=none", f"train.log_every={log_every}",
        "train.checkpoint_kimg=1000000", "train.grid_size=1", f"loss.r1_every={k}", "encoder.kimg=0", "comparator.kimg=0",
        "quality.samples=0",  # the end-of-run SWD is no training step: it would only add a second to every short run
    ])


def train_rows(cfg) -> list[dict]:
    """Run nsgan.train on `cfg` (its run folder must not exist) and return its metrics.jsonl rows."""
    nsgan.train(cfg, source="bench")
    rows = [json.loads(line) for line in nsgan.RunLayout(cfg.run_dir).metrics.read_text().splitlines() if line.strip()]
    return [r for r in rows if "kind" not in r]  # measured rows (sample quality) have a kind and no img_s


def steady_img_s(rows: list[dict]) -> float:
    """Median img/s over the windows after the first (the first holds the warm-up)."""
    rates = [r["img_s"] for r in rows[1:]] or [r["img_s"] for r in rows]
    return statistics.median(rates)


def flops_per_image(make_cfg, k: int, batch: int) -> dict[int, float]:
    """Counted FLOPs per training image at R1 every k and every step: runs of k and 2k steps at k, k steps at 1;
    their differences cancel what a run does besides its steps (sample grids, export)."""
    f_a = count_flops(lambda: nsgan.train(make_cfg("count-a", k, k), source="bench"))
    f_b = count_flops(lambda: nsgan.train(make_cfg("count-b", k, 2 * k), source="bench"))
    f_c = count_flops(lambda: nsgan.train(make_cfg("count-c", 1, k), source="bench"))
    per_step_k = (f_b - f_a) / k
    per_step_1 = (f_c - (f_a - k * per_step_k)) / k  # f_a - k·per_step_k: the run's own overhead
    return {k: per_step_k / batch, 1: per_step_1 / batch}


def measure_resolution(config: Path, res: int, shards: Path, tmp: Path, precision: str, k: int, windows: int,
                       extra: list[str] = (), tag: str = "") -> dict:
    """img/s at R1 every k and every step, FLOPs per image for both, peak GPU memory: one resolution, one precision."""
    cuda = torch.cuda.is_available()
    batch = batch_at(config, res)
    name = f"{res}{tag}-{precision}"

    def make_cfg(what: str, every: int, steps: int):
        return run_config(config, res, shards, tmp / f"run-{name}-{what}", precision, every, steps, extra, log_every=k)

    row = {"resolution": res, "precision": precision, "batch": batch}
    for every in (1, k):
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        rows = train_rows(make_cfg(f"k{every}", every, k * (1 + windows)))  # windows of k steps: one R1 step each at k
        row[f"img_s_k{every}"] = steady_img_s(rows)
        if cuda and every == k:
            row["peak_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
            row["peak_reserved_gb"] = torch.cuda.max_memory_reserved() / 2**30
    fl = flops_per_image(make_cfg, k, batch)
    for every in (1, k):
        row[f"gflop_img_k{every}"] = fl[every] / 1e9
        row[f"gflop_s_k{every}"] = fl[every] * row[f"img_s_k{every}"] / 1e9
    row["params"] = sum(p.numel() for net in _networks(tmp / f"run-{name}-k{k}") for p in net.parameters())
    return row


def _networks(run: Path):
    m = nsgan.load_model(nsgan.RunLayout(run).model)
    return m.generator, m.discriminator


# ------------------------------------------------------------------------------ worker process (one precision)


def worker(a) -> int:
    """Every case of one precision in this process; writes the rows as JSON."""
    torch.set_num_threads(a.threads)
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32
    rate = matmul_rate(dtype, n=8192 if cuda else 2048, repeats=10 if cuda else 5, device="cuda" if cuda else "cpu")
    rows = []
    for case in json.loads(a.cases):
        res, widths = int(case["resolution"]), case.get("widths", "demo")
        extra = (TINY_WIDTHS if a.tiny else []) + WIDTHS.get(widths, []) + list(case.get("extra", []))
        row = measure_resolution(Path(a.config), res, Path(a.shards) / f"shards-{res}", Path(a.tmp), a.precision, a.r1_every,
                                 a.windows, extra, tag=f"-{widths}")
        row.update(widths=widths, matmul_flop_s=rate, threads=torch.get_num_threads())
        for every in (1, a.r1_every):
            row[f"flop_ratio_k{every}"] = row[f"gflop_s_k{every}"] * 1e9 / rate
        rows.append(row)
        print(f"  {res:5d} px {widths:5s} {a.precision:4s} batch {row['batch']:3d}: {row[f'img_s_k{a.r1_every}']:8.1f} img/s "
              f"(k={a.r1_every}), {row['img_s_k1']:8.1f} (k=1), ratio {row[f'flop_ratio_k{a.r1_every}']:.2f}"
              + (f", peak {row['peak_allocated_gb']:.2f} GB" if cuda else ""), flush=True)
    Path(a.json).write_text(json.dumps(rows, indent=1))
    return nsgan.EXIT_OK


def run_worker(precision: str, cases: list[dict], config: Path, shards_root: Path, tmp: Path, r1_every: int, windows: int,
               threads: int, tiny: bool, env: dict, timeout: float) -> list[dict]:
    """One precision's cases in a child process of this script (accelerate's mixed precision is per process)."""
    js = tmp / f"train-{precision}.json"
    cmd = [sys.executable, str(Path(__file__)), "--worker", "--precision", precision, "--cases", json.dumps(cases),
           "--config", str(config), "--shards", str(shards_root), "--tmp", str(tmp), "--json", str(js),
           "--r1-every", str(r1_every), "--windows", str(windows), "--threads", str(threads), *(["--tiny"] if tiny else [])]
    subprocess.run(cmd, env=env, check=True, timeout=timeout)
    return json.loads(js.read_text())


# ------------------------------------------------------------------------------ orchestration


def print_table(rows: list[dict], k: int) -> None:
    for prec in sorted({r["precision"] for r in rows}):
        tag = "fp32" if prec == "no" else prec
        ks = f"k=1 | k={k}"
        head = (f"{'res':>4} {'widths':>6} {'params':>8} {'batch':>5} | {'GFLOP/img ' + ks:>20} | {tag + ' img/s ' + ks:>22} | "
                f"{'GFLOP/s ' + ks:>20} | {'matmul':>7} | {'ratio ' + ks:>16} | {'loader/train':>12}")
        print(f"\n{tag}:")
        print(head)
        print("-" * len(head))
        for r in (r for r in rows if r["precision"] == prec):
            ok = "ok" if r[f"flop_ratio_k{k}"] >= 0.5 else "BELOW"
            print(f"{r['resolution']:>4} {r['widths']:>6} {r['params']:>8} {r['batch']:>5} | {r['gflop_img_k1']:>9.3f} | "
                  f"{r[f'gflop_img_k{k}']:<8.3f} | {r['img_s_k1']:>10.1f} | {r[f'img_s_k{k}']:<9.1f} | {r['gflop_s_k1']:>9.1f} | "
                  f"{r[f'gflop_s_k{k}']:<8.1f} | {r['matmul_flop_s'] / 1e9:>7.1f} | {r['flop_ratio_k1']:>5.2f} | "
                  f"{r[f'flop_ratio_k{k}']:<5.2f} {ok:<4} | {r.get('loader_over_train', math.nan):>12.1f}")
    print(f"\nimg/s: `nsgan train` on one process, the config's batch at that resolution, median over windows of {k} steps; "
          f"k=1 is R1 on every D step (before lazy R1), k={k} one R1 step in {k} (after). GFLOP/s = counted FLOPs per image × img/s; "
          "ratio = GFLOP/s over a same-process matmul in the same precision (goal >= 0.5). loader/train = loader img/s on tiles of "
          "that size over the fastest training at that resolution (target >= 3).")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resolutions", default="8,16,32,64", help="comma-separated final resolutions (the config's widths)")
    p.add_argument("--wide", default="", help=f"comma-separated resolutions to also run with a wider model ({' '.join(WIDTHS['wide'])})")
    p.add_argument("--config", default=str(DEMO_CONFIG), help="run config whose widths, batches and loss are measured (default: the demo's)")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated: no (fp32), bf16")
    p.add_argument("--r1-every", type=int, default=None, help="k of lazy R1 for the 'after' figures (default: the config's "
                   "loss.r1_every, at least 2); 'before' is always k = 1")
    p.add_argument("--windows", type=int, default=3, help="timed windows of k steps per run; figures are their median")
    p.add_argument("--loader-seconds", type=float, default=2.0, help="timed seconds per loader measurement")
    p.add_argument("--loader-workers", type=int, default=None, help="loader workers (default: the config's data.num_workers)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the training processes (1: the cores are shared; "
                   "more threads than free cores makes OpenMP spin)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--precision", "--cases", "--shards", "--tmp"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.worker:
        return worker(a)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)  # inherited by the workers
    config = Path(a.config)
    precisions = [x for x in a.precisions.split(",") if x]
    if not precisions or any(x not in PRECISIONS for x in precisions):
        raise SystemExit(f"--precisions: choose from {', '.join(PRECISIONS)}, got {a.precisions!r}")
    k = a.r1_every or max(2, nsgan.load_config(config, ["data.normal=x", "data.abnormal=x"]).loss.r1_every)
    demo = yaml.safe_load(config.read_text())
    loader_workers = demo["data"].get("num_workers", 0) if a.loader_workers is None else a.loader_workers
    cases = [{"resolution": int(r), "widths": "demo"} for r in a.resolutions.split(",") if r]
    cases += [{"resolution": int(r), "widths": "wide"} for r in a.wide.split(",") if r]
    t_start = time.perf_counter()
    print(f"nsgan training benchmark ({config.name}): torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; torch threads per training process = {a.threads}; loader workers = {loader_workers}; "
          f"{a.windows} windows of {k} steps per run; lazy R1 before k = 1, after k = {k}", flush=True)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory(prefix="nsgan-bench-") as tmp:
        tmp = Path(tmp)
        shards = build_shards(tmp, sorted({c["resolution"] for c in cases}))
        rows = []
        for prec in precisions:  # one at a time: two at once oversubscribe the cores
            rows += run_worker(prec, cases, config, tmp, tmp, k, a.windows, a.threads, False, env, timeout=3600)
        for r in rows:
            fastest = max(x[f"img_s_k{k}"] for x in rows if x["resolution"] == r["resolution"] and x["widths"] == r["widths"])
            r["loader_img_s"] = nsgan.measure_loader(shard_files(shards[r["resolution"]]), r["resolution"], 1,
                                                     r["batch"], loader_workers, a.loader_seconds)
            r["loader_over_train"] = r["loader_img_s"] / fastest
    print_table(rows, k)
    worst = min(r["loader_over_train"] for r in rows)
    print(f"worst loader/train ratio {worst:.1f} ({'ok' if worst >= 3 else 'BELOW 3'}); total {time.perf_counter() - t_start:.0f} s")
    if a.json:
        out = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "torch": torch.__version__, "cores": os.cpu_count(),
               "threads": a.threads, "loader_workers": loader_workers, "windows": a.windows, "config": str(config),
               "r1_every_after": k, "precisions": precisions, "rows": rows, "worst_loader_over_train": worst}
        Path(a.json).write_text(json.dumps(out, indent=1))
        print(f"figures written to {a.json}")
    return nsgan.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

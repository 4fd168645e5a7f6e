"""Training benchmark: img/s per resolution (fp32 vs bf16), loader headroom, accelerate overhead.

    python tools/bench/bench_train.py [--resolutions 8,16,32,64] [--repeats 3] [--seconds 2] [--threads 2]
                                [--wide] [--json out.json]

What it measures, all on one process (the figures of one rank):
  * training img/s of the real `Trainer.step` (accelerate path: D step with R1 and the abnormal
    penalty, G step, EMA) at each resolution, with the demo config's widths and batch, in fp32
    and in bf16 autocast. Batches come pre-loaded from memory, so this is compute only.
  * the same steps in a hand-written bare torch loop (same networks, same GANLoss, same batches,
    same latents); the accelerate overhead is trainer time / bare time - 1. Before timing, a few
    fp32 steps of both from the same seed are checked to give identical weights, which proves
    they do the same work.
  * data-loader img/s (`nsgan.data.stream.measure_loader`, the demo config's num_workers) on shards
    this script builds in a temp dir, divided by the training img/s at the same resolution.

Noise: the machine is shared, so every figure is the median over `--repeats` rounds, and in each
round all configurations run back to back (fp32 and bf16 live in two worker processes, because
accelerate's mixed-precision setting is process-wide); ratios are taken within a round.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
PRECISIONS = ("no", "bf16")
WIDTHS = {"demo": [], "wide": ["model.fmap_base=2048", "model.fmap_max=128", "model.latent_dim=128"]}


# ------------------------------------------------------------------------------ data


def build_shards(root: Path, resolutions: list[int]) -> dict[int, Path]:
    """One shard set per tile size, cut from the demo's painted brick images (normal + abnormal)."""
    from nsgan.demo import build_dataset
    from nsgan.data.shards import write_shards

    size = max(128, 2 * max(resolutions))
    build_dataset(root / "data", n_normal=24, n_abnormal=8, size=size, seed=0)
    out = {}
    for res in resolutions:
        out[res] = root / f"shards-{res}"
        write_shards(root / "data" / "normal", root / "data" / "abnormal", root / "data" / "abnormal_masks",
                     tile=res, out=out[res], stride=max(4, res // 2), channels=1, seed=0)
    return out


class MemoryTaker:
    """Stands in for the trainer's BatchTaker: cycles through batches already in memory."""

    def __init__(self, pool):
        self.pool, self.i = pool, 0
        self.skipped, self.position = 0, None
        self.masks = None  # the Trainer reads the last abnormal batch's masks; these pools have none

    def take(self, n: int, device):
        batch = self.pool[self.i % len(self.pool)]
        self.i += 1
        if batch.shape[0] != n:
            raise RuntimeError(f"pool holds batches of {batch.shape[0]}, step wants {n}")
        return batch.to(device)


def load_pool(shards: list[str], res: int, batch: int, count: int, seed: int):
    from nsgan.data.stream import ShardStream

    it = iter(ShardStream(shards, tile=res, channels=1, batch=batch, seed=seed, num_workers=0))
    return [next(it).images.clone() for _ in range(count)]


# ------------------------------------------------------------------------------ the two loops


def final_phase(cfg):
    """The stable phase at the model's final resolution, as the schedule would hand it out."""
    from nsgan.train.schedule import schedule
    from nsgan.train.gan_loop import schedule_config

    sc = schedule_config(cfg)
    levels = sc.final_level - sc.start_level
    images = round(1000 * (sc.stable_kimg + levels * (sc.fade_kimg + sc.stable_kimg)))
    phase = schedule(images, sc)
    assert phase.level == sc.final_level and phase.alpha == 1.0, phase
    return phase


class BareLoop:
    """The same D/G/EMA step as Trainer.step, in plain torch: no Accelerator, no wrappers."""

    def __init__(self, cfg, channels: int, normal: MemoryTaker, abnormal: MemoryTaker, precision: str):
        import torch

        from nsgan.models.losses import GANLoss
        from nsgan.models.networks import Discriminator, Generator
        from nsgan.train.gan_loop import _rank_generator

        self.cfg, self.normal, self.abnormal = cfg, normal, abnormal
        torch.manual_seed(cfg.seed)  # same initial weights as the Trainer
        m, t = cfg.model, cfg.train
        self.G = Generator(resolution=m.resolution, channels=channels, latent_dim=m.latent_dim, fmap_base=m.fmap_base, fmap_max=m.fmap_max)
        self.D = Discriminator(resolution=m.resolution, channels=channels, fmap_base=m.fmap_base, fmap_max=m.fmap_max, mbstd_group=m.mbstd_group)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.schedule.lr, betas=(t.beta1, t.beta2), eps=1e-8)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.schedule.lr, betas=(t.beta1, t.beta2), eps=1e-8)
        self.loss = GANLoss(kind=cfg.loss.kind, gamma=cfg.loss.gamma, r1_gamma=cfg.loss.r1_gamma, gp_lambda=cfg.loss.gp_lambda, drift=cfg.loss.drift)
        self.latent_gen = _rank_generator(cfg.seed, 0)
        self.dtype = torch.bfloat16 if precision == "bf16" else None

    def _autocast(self):
        import torch

        return torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype is not None)

    def step(self, phase) -> dict[str, float]:
        import torch

        from nsgan.models.networks import fade_real
        from nsgan.train.gan_loop import _abnormal_batch

        level, alpha, batch, dim = phase.level, phase.alpha, phase.batch, self.cfg.model.latent_dim
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = phase.lr
        reals = fade_real(self.normal.take(batch, "cpu"), level, alpha)
        abnormal = fade_real(self.abnormal.take(_abnormal_batch(self.cfg, batch), "cpu"), level, alpha)
        with self._autocast():
            with torch.no_grad():
                fakes = self.G(torch.randn(batch, dim, generator=self.latent_gen), level, alpha)
            loss_d, stats_d = self.loss.d_loss(self.D, reals, fakes, abnormal, level=level, alpha=alpha)
        self.opt_D.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_D.step()
        self.D.requires_grad_(False)
        with self._autocast():
            fakes = self.G(torch.randn(batch, dim, generator=self.latent_gen), level, alpha)
            loss_g, stats_g = self.loss.g_loss(self.D, fakes, level=level, alpha=alpha)
        self.opt_G.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_G.step()
        self.D.requires_grad_(True)
        with torch.no_grad():
            half_life = self.cfg.train.ema_kimg * 1000.0
            beta = 0.5 ** (batch / half_life) if half_life > 0 else 0.0
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.lerp_(p.detach(), 1.0 - beta)
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)
        return {**stats_d, **stats_g}


def _same_weights(a_modules, b_modules) -> bool:
    import torch

    for a, b in zip(a_modules, b_modules):
        sa, sb = a.state_dict(), b.state_dict()
        if sa.keys() != sb.keys() or not all(torch.equal(sa[k], sb[k]) for k in sa):
            return False
    return True


# ------------------------------------------------------------------------------ worker process


def _config(res: int, width: str, shards: Path, run_dir: Path, precision: str):
    from nsgan.train.config import load_config

    return load_config(DEMO_CONFIG, [
        f"model.resolution={res}", f"schedule.start_resolution={res}", *WIDTHS[width], f"data.normal={shards / 'normal'}", f"data.abnormal={shards / 'abnormal'}",
        f"run_dir={run_dir}", f"train.mixed_precision={precision}", "train.display=false", "data.num_workers=0",
    ])


def worker(conn, precision: str, threads: int, cases: list[tuple[int, str]], shards: dict[int, str], tmp: str) -> None:
    """Holds a Trainer and a BareLoop per case in one precision; times steps on request."""
    import torch

    torch.set_num_threads(threads)
    from nsgan.train.gan_loop import Trainer, _abnormal_batch

    loops, phases, checks = {}, {}, {}
    for res, width in cases:
        cfg = _config(res, width, Path(shards[res]), Path(tmp) / f"run-{res}-{width}-{precision}", precision)
        phase = final_phase(cfg)
        normal = load_pool([str(p) for p in sorted((Path(shards[res]) / "normal").glob("*.tar"))], res, phase.batch, 4, seed=1)
        abnormal = load_pool([str(p) for p in sorted((Path(shards[res]) / "abnormal").glob("*.tar"))], res, _abnormal_batch(cfg, phase.batch), 4, seed=2)
        trainer = Trainer(cfg, "bench")
        trainer.normal, trainer.abnormal = MemoryTaker(normal), MemoryTaker(abnormal)
        bare = BareLoop(cfg, trainer.channels, MemoryTaker(normal), MemoryTaker(abnormal), precision)
        if not _same_weights([trainer.G_raw, trainer.D_raw], [bare.G, bare.D]):
            raise RuntimeError(f"{res}px: trainer and bare loop start from different weights")
        for _ in range(2):  # also the warm-up
            st, sb = trainer.step(phase), bare.step(phase)
        same = _same_weights([trainer.G_raw, trainer.D_raw, trainer.G_ema], [bare.G, bare.D, bare.G_ema])
        if precision == "no" and not same:  # fp32 must be bit-identical: same work, same order
            raise RuntimeError(f"{res}px fp32: trainer and bare loop diverged after 2 steps ({st} vs {sb})")
        key = f"{res}/{width}"
        loops[key] = {"trainer": trainer.step, "bare": bare.step}
        phases[key] = phase
        checks[key] = same
        n_params = sum(p.numel() for p in trainer.G_raw.parameters()) + sum(p.numel() for p in trainer.D_raw.parameters())
        checks[key + "/params"] = n_params
    conn.send({"ready": True, "checks": checks, "threads": torch.get_num_threads()})
    while True:
        msg = conn.recv()
        if msg is None:
            break
        key, path, seconds = msg
        step, phase = loops[key][path], phases[key]
        step(phase)
        n, t0 = 0, time.perf_counter()
        while True:
            step(phase)
            n += 1
            dt = time.perf_counter() - t0
            if dt >= seconds and n >= 3:
                break
        conn.send({"steps": n, "seconds": dt, "images": n * phase.batch})


# ------------------------------------------------------------------------------ orchestration


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resolutions", default="8,16,32,64", help="comma-separated final resolutions (demo widths)")
    p.add_argument("--wide", default="", help="comma-separated resolutions to also run with a wider model "
                   f"({' '.join(WIDTHS['wide'])})")
    p.add_argument("--repeats", type=int, default=3, help="rounds; figures are medians over rounds")
    p.add_argument("--seconds", type=float, default=1.5, help="timed seconds per configuration per round")
    p.add_argument("--loader-seconds", type=float, default=2.0, help="timed seconds per loader measurement")
    p.add_argument("--loader-workers", type=int, default=None, help="loader workers (default: the demo config's data.num_workers)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the training processes (1: the cores are shared; more threads than free cores makes OpenMP spin)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the spawned workers

    import torch
    import yaml

    from nsgan.data.stream import measure_loader

    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    demo_res = int(demo["model"]["resolution"])
    loader_workers = demo["data"]["num_workers"] if args.loader_workers is None else args.loader_workers
    resolutions = [int(r) for r in args.resolutions.split(",") if r]
    wide = [int(r) for r in args.wide.split(",") if r]
    cases = [(r, "demo") for r in resolutions] + [(r, "wide") for r in wide]
    t_start = time.perf_counter()
    print(f"nsgan training benchmark: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; torch threads per training process = {args.threads} (OMP_NUM_THREADS={args.threads}); "
          f"loader workers = {loader_workers}; {args.repeats} rounds x {args.seconds:g} s per configuration", flush=True)

    with tempfile.TemporaryDirectory(prefix="nsgan-bench-") as tmp:
        loader_sizes = sorted({r for r, _ in cases} | {demo_res})
        shards = build_shards(Path(tmp), loader_sizes)
        print(f"shards built in {time.perf_counter() - t_start:.1f} s", flush=True)
        ctx = mp.get_context("spawn")
        workers, info = {}, {}
        for prec in PRECISIONS:  # one at a time: two set-ups at once oversubscribe the cores
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(child, prec, args.threads, cases, {r: str(s) for r, s in shards.items()}, tmp), daemon=True)
            proc.start()
            workers[prec] = (proc, parent)
            deadline = time.time() + 600
            while not parent.poll(1.0):
                if not proc.is_alive():
                    raise RuntimeError(f"benchmark worker ({prec}) died while setting up (exit {proc.exitcode}); its traceback is above")
                if time.time() > deadline:
                    raise RuntimeError(f"benchmark worker ({prec}) did not get ready within 600 s")
            info[prec] = parent.recv()
        print(f"workers ready after {time.perf_counter() - t_start:.1f} s (fp32 trainer == bare loop bit for bit after 2 steps: "
              f"{all(v for k, v in info['no']['checks'].items() if not k.endswith('/params'))})", flush=True)

        keys = [f"{r}/{w}" for r, w in cases]
        samples: dict[tuple, list[float]] = {}  # (key, precision, path) -> img/s per round
        overhead: dict[tuple, list[float]] = {}  # (key, precision) -> trainer_time/bare_time - 1 per round
        loader: dict[int, list[float]] = {}
        for rnd in range(args.repeats):
            for i, key in enumerate(keys):
                precs = PRECISIONS if (rnd + i) % 2 == 0 else PRECISIONS[::-1]  # alternate who goes first
                for prec in precs:
                    conn = workers[prec][1]
                    rate = {}
                    paths = ("trainer", "bare") if rnd % 2 == 0 else ("bare", "trainer")
                    for path in paths:
                        conn.send((key, path, args.seconds))
                        r = conn.recv()
                        rate[path] = r["images"] / r["seconds"]
                        samples.setdefault((key, prec, path), []).append(rate[path])
                    overhead.setdefault((key, prec), []).append(rate["bare"] / rate["trainer"] - 1.0)
            for res in loader_sizes:
                files = sorted(str(f) for f in (shards[res] / "normal").glob("*.tar"))
                batch = int(demo["schedule"]["default_batch"])
                loader.setdefault(res, []).append(measure_loader(files, res, 1, batch, loader_workers, args.loader_seconds))
            print(f"round {rnd + 1}/{args.repeats} done at {time.perf_counter() - t_start:.0f} s", flush=True)
        for proc, conn in workers.values():
            conn.send(None)
            proc.join(30)

    med = statistics.median
    rows = []
    for r, w in cases:
        key = f"{r}/{w}"
        fp32, bf16 = med(samples[(key, "no", "trainer")]), med(samples[(key, "bf16", "trainer")])
        load, fastest = med(loader[r]), max(fp32, bf16)
        rows.append({
            "resolution": r, "widths": w, "params": info["no"]["checks"][key + "/params"],
            "batch": int(demo["schedule"]["default_batch"]),
            "train_img_s_fp32": round(fp32, 1), "train_img_s_bf16": round(bf16, 1), "bf16_speedup": round(bf16 / fp32, 2),
            "bare_img_s_fp32": round(med(samples[(key, "no", "bare")]), 1), "bare_img_s_bf16": round(med(samples[(key, "bf16", "bare")]), 1),
            "accelerate_overhead_fp32": round(med(overhead[(key, "no")]), 4), "accelerate_overhead_bf16": round(med(overhead[(key, "bf16")]), 4),
            "loader_img_s": round(load, 1), "loader_over_train": round(load / fastest, 2),
            # the demo run streams its final-size tiles in every phase: its loader against this phase's training
            "demo_loader_over_train": round(med(loader[demo_res]) / fastest, 2) if r <= demo_res else None,
            "fp32_bitwise_equal_to_bare": bool(info["no"]["checks"][key]),
        })
    head = f"{'res':>4} {'widths':>6} {'params':>8} | {'fp32 img/s':>10} {'bf16 img/s':>10} {'bf16/fp32':>9} | " \
           f"{'acc. overhead fp32':>18} {'bf16':>6} | {'loader img/s':>12} {'loader/train':>12} {f'demo ({demo_res}px) loader/train':>26}"
    print()
    print(head)
    print("-" * len(head))
    for row in rows:
        print(f"{row['resolution']:>4} {row['widths']:>6} {row['params']:>8} | {row['train_img_s_fp32']:>10.1f} {row['train_img_s_bf16']:>10.1f} "
              f"{row['bf16_speedup']:>9.2f} | {100 * row['accelerate_overhead_fp32']:>17.1f}% {100 * row['accelerate_overhead_bf16']:>5.1f}% | "
              f"{row['loader_img_s']:>12.0f} {row['loader_over_train']:>12.1f} "
              f"{'-' if row['demo_loader_over_train'] is None else format(row['demo_loader_over_train'], '.1f'):>26}")
    print("\nimg/s: one process, batch per step from the demo config, medians over rounds. overhead = bare img/s / trainer img/s - 1.\n"
          "loader/train = loader img/s (tiles of that size) over the faster of fp32/bf16 training at that resolution;\n"
          f"demo loader/train = the same training against the loader on {demo_res}-px tiles, which the demo run streams in every phase\n"
          "(targets: loader/train >= 3, overhead <= 10%).")
    worst_ratio = min(min(r["loader_over_train"], r["demo_loader_over_train"] or math.inf) for r in rows)
    worst_overhead = max(max(r["accelerate_overhead_fp32"], r["accelerate_overhead_bf16"]) for r in rows)
    print(f"worst loader/train ratio {worst_ratio:.1f} ({'ok' if worst_ratio >= 3 else 'BELOW 3'}); "
          f"worst accelerate overhead {100 * worst_overhead:.1f}% ({'ok' if worst_overhead <= 0.10 else 'ABOVE 10%'}); "
          f"total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        out = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]), "torch": torch.__version__, "cores": os.cpu_count(),
            "threads": args.threads, "loader_workers": loader_workers, "repeats": args.repeats, "seconds": args.seconds,
            "rows": rows, "raw": {"train": {"|".join(k): v for k, v in samples.items()}, "overhead": {"|".join(k): v for k, v in overhead.items()},
                                   "loader": {str(k): v for k, v in loader.items()}},
            "worst_loader_over_train": worst_ratio, "worst_accelerate_overhead": worst_overhead,
        }
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())

"""Training benchmark: img/s and achieved FLOP/s per resolution against a matmul, lazy R1 before/after, loader, overhead.

    python tools/bench/bench_train.py [--resolutions 8,16,32,64] [--repeats 3] [--seconds 2] [--threads 2]
                                [--precisions no,bf16] [--r1-every K] [--config configs/demo.yaml] [--wide] [--json out.json]

What it measures, all on one process (the figures of one rank):
  * training img/s of the real `Trainer.step` (accelerate path: D step with the abnormal penalty,
    R1 on its steps, G step, EMA) at each resolution, with the config's widths and batch, in fp32
    and in bf16 autocast. Batches come pre-loaded from memory, so this is compute only.
  * lazy R1 before and after, from one run: an R1 step and a plain step are timed apart, so
    k = 1 (R1 every step, the old work) and k = K (`--r1-every`, default the config's
    loss.r1_every) are t(k) = t_r1 + (k-1)·t_plain per k steps, with no need for a timing
    window to catch an R1 step.
  * achieved FLOP/s: FLOPs of one whole step of each kind counted from the networks with torch's
    FlopCounterMode (tools/bench/flops.py: D forwards, R1's double backward, G's step through D;
    Adam and the EMA are elementwise and not counted), over the same process's n×n matmul rate
    in the same precision and threads; the ratio's goal is >= 0.5.
  * the same steps in a hand-written bare torch loop (same networks, same GANLoss, same batches,
    same latents); the accelerate overhead is trainer time / bare time - 1. Before timing, an R1
    step and a plain step of both (fp32, same seed) are checked to give identical weights, which
    proves they do the same work.
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

from flops import count_flops, matmul_rate  # tools/bench/flops.py, beside this script

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
PRECISIONS = ("no", "bf16")
KINDS = ("r1", "plain")  # a D step with R1, one without
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
        self.loss = GANLoss(kind=cfg.loss.kind, gamma=cfg.loss.gamma, r1_gamma=cfg.loss.r1_gamma, gp_lambda=cfg.loss.gp_lambda, drift=cfg.loss.drift,
                            r1_every=cfg.loss.r1_every)
        self.latent_gen = _rank_generator(cfg.seed, 0)
        self.dtype = torch.bfloat16 if precision == "bf16" else None

    def _autocast(self):
        import torch

        return torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype is not None)

    def step(self, phase, regularise: bool = True) -> dict[str, float]:
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
            loss_d, stats_d = self.loss.d_loss(self.D, reals, fakes, abnormal, level=level, alpha=alpha, regularise=regularise)
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


def _config(res: int, width: str, shards: Path, run_dir: Path, precision: str, r1_every: int = 2, config: Path = DEMO_CONFIG):
    """The config at one final resolution; loss.r1_every >= 2 so that both kinds of step exist (state.step picks one)."""
    from nsgan.train.config import load_config

    return load_config(config, [
        f"model.resolution={res}", f"schedule.start_resolution={res}", *WIDTHS[width], f"data.normal={shards / 'normal'}", f"data.abnormal={shards / 'abnormal'}",
        f"run_dir={run_dir}", f"train.mixed_precision={precision}", "train.display=false", "data.num_workers=0",
        f"loss.r1_every={max(2, r1_every)}", "loss.penalty=tile", "model.patch_grid=0",
    ])


def trainer_step(trainer, phase, kind: str) -> None:
    """One `Trainer.step` of the given kind: Trainer.step reads state.step for R1's due steps (k >= 2 here)."""
    trainer.state.step = 0 if kind == "r1" else 1
    trainer.step(phase)


def step_flops(trainer, phase) -> dict[str, int]:
    """FLOPs of one whole training step of each kind (changes the weights: call it after the checks)."""
    return {kind: count_flops(lambda: trainer_step(trainer, phase, kind)) for kind in KINDS}


def time_steps(step, seconds: float, sync=lambda: None) -> float:
    """Seconds per call of `step` after one warm-up call: at least 3 calls and `seconds` in all."""
    step()
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        step()
        n += 1
        sync()
        dt = time.perf_counter() - t0
        if dt >= seconds and n >= 3:
            return dt / n


def lazy_rates(t_r1: float, t_plain: float, f_r1: int, f_plain: int, batch: int, k: int) -> tuple[float, float]:
    """(img/s, FLOP/s) of k steps of which one carries R1."""
    t = t_r1 + (k - 1) * t_plain
    return k * batch / t, (f_r1 + (k - 1) * f_plain) / t


def worker(conn, precision: str, threads: int, cases: list[tuple[int, str]], shards: dict[int, str], tmp: str, config: str) -> None:
    """Holds a Trainer and a BareLoop per case in one precision; times steps of either kind and a matmul on request."""
    import torch

    torch.set_num_threads(threads)
    from nsgan.train.gan_loop import Trainer, _abnormal_batch

    loops, phases, checks, flops = {}, {}, {}, {}
    for res, width in cases:
        cfg = _config(res, width, Path(shards[res]), Path(tmp) / f"run-{res}-{width}-{precision}", precision, config=Path(config))
        phase = final_phase(cfg)
        normal = load_pool([str(p) for p in sorted((Path(shards[res]) / "normal").glob("*.tar"))], res, phase.batch, 4, seed=1)
        abnormal = load_pool([str(p) for p in sorted((Path(shards[res]) / "abnormal").glob("*.tar"))], res, _abnormal_batch(cfg, phase.batch), 4, seed=2)
        trainer = Trainer(cfg, "bench")
        trainer.normal, trainer.abnormal = MemoryTaker(normal), MemoryTaker(abnormal)
        bare = BareLoop(cfg, trainer.channels, MemoryTaker(normal), MemoryTaker(abnormal), precision)
        if not _same_weights([trainer.G_raw, trainer.D_raw], [bare.G, bare.D]):
            raise RuntimeError(f"{res}px: trainer and bare loop start from different weights")
        for kind in (*KINDS, *KINDS):  # an R1 step and a plain step, twice (also the warm-up)
            trainer_step(trainer, phase, kind)
            bare.step(phase, regularise=kind == "r1")
        same = _same_weights([trainer.G_raw, trainer.D_raw, trainer.G_ema], [bare.G, bare.D, bare.G_ema])
        if precision == "no" and not same:  # fp32 must be bit-identical: same work, same order
            raise RuntimeError(f"{res}px fp32: trainer and bare loop diverged after R1 and plain steps")
        key = f"{res}/{width}"
        loops[key] = {"trainer": lambda kind, t=trainer, p=phase: trainer_step(t, p, kind),
                      "bare": lambda kind, b=bare, p=phase: b.step(p, regularise=kind == "r1")}
        phases[key] = phase
        checks[key] = same
        flops[key] = step_flops(trainer, phase)
        n_params = sum(p.numel() for p in trainer.G_raw.parameters()) + sum(p.numel() for p in trainer.D_raw.parameters())
        checks[key + "/params"] = n_params
    conn.send({"ready": True, "checks": checks, "flops": flops, "batch": {k: p.batch for k, p in phases.items()},
               "threads": torch.get_num_threads()})
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    while True:
        msg = conn.recv()
        if msg is None:
            break
        if msg == "matmul":
            conn.send(matmul_rate(dtype))
            continue
        key, path, kind, seconds = msg
        step = loops[key][path]
        conn.send(time_steps(lambda: step(kind), seconds))


# ------------------------------------------------------------------------------ orchestration


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resolutions", default="8,16,32,64", help="comma-separated final resolutions (the config's widths)")
    p.add_argument("--wide", default="", help="comma-separated resolutions to also run with a wider model "
                   f"({' '.join(WIDTHS['wide'])})")
    p.add_argument("--config", default=str(DEMO_CONFIG), help="run config whose widths, batches and loss are measured (default: the demo's)")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated: no (fp32), bf16")
    p.add_argument("--r1-every", type=int, default=None, help="k of lazy R1 for the 'after' figures (default: the config's loss.r1_every); "
                   "'before' is always k = 1")
    p.add_argument("--repeats", type=int, default=3, help="rounds; figures are medians over rounds")
    p.add_argument("--seconds", type=float, default=1.5, help="timed seconds per configuration and kind of step per round")
    p.add_argument("--loader-seconds", type=float, default=2.0, help="timed seconds per loader measurement")
    p.add_argument("--loader-workers", type=int, default=None, help="loader workers (default: the config's data.num_workers)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the training processes (1: the cores are shared; more threads than free cores makes OpenMP spin)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the spawned workers

    import torch
    import yaml

    from nsgan.data.stream import measure_loader
    from nsgan.train.config import load_config

    config = Path(args.config)
    demo = yaml.safe_load(config.read_text())
    demo_res = int(demo["model"]["resolution"])
    precisions = [x for x in args.precisions.split(",") if x]
    if not precisions or any(x not in PRECISIONS for x in precisions):
        p.error(f"--precisions: choose from {', '.join(PRECISIONS)}, got {args.precisions!r}")
    k_after = args.r1_every or load_config(config, ["data.normal=x", "data.abnormal=x"]).loss.r1_every
    loader_workers = demo["data"]["num_workers"] if args.loader_workers is None else args.loader_workers
    resolutions = [int(r) for r in args.resolutions.split(",") if r]
    wide = [int(r) for r in args.wide.split(",") if r]
    cases = [(r, "demo") for r in resolutions] + [(r, "wide") for r in wide]
    t_start = time.perf_counter()
    print(f"nsgan training benchmark ({config.name}): torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; torch threads per training process = {args.threads} (OMP_NUM_THREADS={args.threads}); "
          f"loader workers = {loader_workers}; {args.repeats} rounds x {args.seconds:g} s per configuration and kind of step; "
          f"lazy R1 before k = 1, after k = {k_after}", flush=True)

    with tempfile.TemporaryDirectory(prefix="nsgan-bench-") as tmp:
        loader_sizes = sorted({r for r, _ in cases} | {demo_res})
        shards = build_shards(Path(tmp), loader_sizes)
        print(f"shards built in {time.perf_counter() - t_start:.1f} s", flush=True)
        ctx = mp.get_context("spawn")
        workers, info = {}, {}
        for prec in precisions:  # one at a time: two set-ups at once oversubscribe the cores
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(child, prec, args.threads, cases, {r: str(s) for r, s in shards.items()}, tmp, str(config)),
                               daemon=True)
            proc.start()
            workers[prec] = (proc, parent)
            deadline = time.time() + 600
            while not parent.poll(1.0):
                if not proc.is_alive():
                    raise RuntimeError(f"benchmark worker ({prec}) died while setting up (exit {proc.exitcode}); its traceback is above")
                if time.time() > deadline:
                    raise RuntimeError(f"benchmark worker ({prec}) did not get ready within 600 s")
            info[prec] = parent.recv()
        fp32_equal = all(v for k, v in info["no"]["checks"].items() if not k.endswith("/params")) if "no" in info else None
        print(f"workers ready after {time.perf_counter() - t_start:.1f} s (fp32 trainer == bare loop bit for bit after R1 and plain steps: "
              f"{fp32_equal})", flush=True)

        keys = [f"{r}/{w}" for r, w in cases]
        samples: dict[tuple, list[float]] = {}  # (key, precision, path, kind) -> s/step per round
        derived: dict[tuple, list[float]] = {}  # (key, precision, figure) -> value per round
        matmul: dict[str, list[float]] = {}
        loader: dict[int, list[float]] = {}
        for rnd in range(args.repeats):
            for prec in precisions:
                workers[prec][1].send("matmul")
                matmul.setdefault(prec, []).append(workers[prec][1].recv())
            for i, key in enumerate(keys):
                precs = precisions if (rnd + i) % 2 == 0 else precisions[::-1]  # alternate who goes first
                for prec in precs:
                    conn, fl, batch = workers[prec][1], info[prec]["flops"][key], info[prec]["batch"][key]
                    t = {}
                    paths = ("trainer", "bare") if rnd % 2 == 0 else ("bare", "trainer")
                    for path in paths:
                        for kind in KINDS:
                            conn.send((key, path, kind, args.seconds))
                            t[path, kind] = conn.recv()
                            samples.setdefault((key, prec, path, kind), []).append(t[path, kind])
                    for k in (1, k_after):
                        img_s, flop_s = lazy_rates(t["trainer", "r1"], t["trainer", "plain"], fl["r1"], fl["plain"], batch, k)
                        bare_img_s, _ = lazy_rates(t["bare", "r1"], t["bare", "plain"], fl["r1"], fl["plain"], batch, k)
                        for name, v in ((f"img_s_k{k}", img_s), (f"flop_s_k{k}", flop_s), (f"ratio_k{k}", flop_s / matmul[prec][-1]),
                                        (f"overhead_k{k}", bare_img_s / img_s - 1.0), (f"bare_img_s_k{k}", bare_img_s)):
                            derived.setdefault((key, prec, name), []).append(v)
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
        row = {"resolution": r, "widths": w, "params": info[precisions[0]]["checks"][key + "/params"], "batch": info[precisions[0]]["batch"][key]}
        for prec in precisions:
            tag = "fp32" if prec == "no" else prec
            fl = info[prec]["flops"][key]
            row[f"matmul_gflop_s_{tag}"] = round(med(matmul[prec]) / 1e9, 1)
            for k in (1, k_after):
                row[f"gflop_img_k{k}"] = round((fl["r1"] + (k - 1) * fl["plain"]) / k / row["batch"] / 1e9, 3)
                row[f"train_img_s_{tag}_k{k}"] = round(med(derived[(key, prec, f"img_s_k{k}")]), 1)
                row[f"bare_img_s_{tag}_k{k}"] = round(med(derived[(key, prec, f"bare_img_s_k{k}")]), 1)
                row[f"gflop_s_{tag}_k{k}"] = round(med(derived[(key, prec, f"flop_s_k{k}")]) / 1e9, 1)
                row[f"flop_ratio_{tag}_k{k}"] = round(med(derived[(key, prec, f"ratio_k{k}")]), 3)
                row[f"accelerate_overhead_{tag}_k{k}"] = round(med(derived[(key, prec, f"overhead_k{k}")]), 4)
            row[f"s_per_step_{tag}"] = {kind: round(med(samples[(key, prec, "trainer", kind)]), 5) for kind in KINDS}
        if "no" in precisions and "bf16" in precisions:
            row["bf16_speedup"] = round(row[f"train_img_s_bf16_k{k_after}"] / row[f"train_img_s_fp32_k{k_after}"], 2)
        fastest = max(row[f"train_img_s_{'fp32' if x == 'no' else x}_k{k_after}"] for x in precisions)
        load = med(loader[r])
        row.update({
            "loader_img_s": round(load, 1), "loader_over_train": round(load / fastest, 2),
            # the demo run streams its final-size tiles in every phase: its loader against this phase's training
            "demo_loader_over_train": round(med(loader[demo_res]) / fastest, 2) if r <= demo_res else None,
            "fp32_bitwise_equal_to_bare": bool(info["no"]["checks"][key]) if "no" in info else None,
        })
        rows.append(row)
    for prec in precisions:
        tag = "fp32" if prec == "no" else prec
        ks = f"k=1 | k={k_after}"
        head = (f"{'res':>4} {'widths':>6} {'params':>8} {'batch':>5} | {'GFLOP/img ' + ks:>20} | {tag + ' img/s ' + ks:>22} | "
                f"{'GFLOP/s ' + ks:>20} | {'matmul':>7} | {'ratio ' + ks:>16} | {'overhead':>8} | {'loader/train':>12}")
        print(f"\n{tag}:")
        print(head)
        print("-" * len(head))
        for row in rows:
            g1, gk = row["gflop_img_k1"], row[f"gflop_img_k{k_after}"]
            i1, ik = row[f"train_img_s_{tag}_k1"], row[f"train_img_s_{tag}_k{k_after}"]
            f1, fk = row[f"gflop_s_{tag}_k1"], row[f"gflop_s_{tag}_k{k_after}"]
            r1, rk = row[f"flop_ratio_{tag}_k1"], row[f"flop_ratio_{tag}_k{k_after}"]
            ok = "ok" if rk >= 0.5 else "BELOW"
            print(f"{row['resolution']:>4} {row['widths']:>6} {row['params']:>8} {row['batch']:>5} | {g1:>9.3f} | {gk:<8.3f} | {i1:>10.1f} | {ik:<9.1f} | "
                  f"{f1:>9.1f} | {fk:<8.1f} | {row[f'matmul_gflop_s_{tag}']:>7.1f} | {r1:>5.2f} | {rk:<5.2f} {ok:<4} | "
                  f"{100 * row[f'accelerate_overhead_{tag}_k{k_after}']:>7.1f}% | {row['loader_over_train']:>12.1f}")
    print(f"\nimg/s: one process, the config's batch at that resolution, medians over rounds; k=1 is R1 on every D step (before lazy R1),\n"
          f"k={k_after} one R1 step in {k_after} (after). GFLOP/s = counted FLOPs of those steps per second; ratio = GFLOP/s over a same-process\n"
          "2048² matmul in the same precision (goal >= 0.5). overhead = bare img/s / trainer img/s - 1 (target <= 10%). loader/train = loader\n"
          "img/s on tiles of that size over the fastest training at that resolution (target >= 3).")
    worst_ratio = min(min(r["loader_over_train"], r["demo_loader_over_train"] or math.inf) for r in rows)
    worst_overhead = max(r[f"accelerate_overhead_{'fp32' if x == 'no' else x}_k{k_after}"] for r in rows for x in precisions)
    print(f"worst loader/train ratio {worst_ratio:.1f} ({'ok' if worst_ratio >= 3 else 'BELOW 3'}); "
          f"worst accelerate overhead {100 * worst_overhead:.1f}% ({'ok' if worst_overhead <= 0.10 else 'ABOVE 10%'}); "
          f"total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        out = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]), "torch": torch.__version__, "cores": os.cpu_count(),
            "threads": args.threads, "loader_workers": loader_workers, "repeats": args.repeats, "seconds": args.seconds,
            "config": str(config), "r1_every_after": k_after, "precisions": precisions,
            "rows": rows, "raw": {"seconds_per_step": {"|".join(k): v for k, v in samples.items()}, "matmul_flop_s": matmul,
                                   "loader": {str(k): v for k, v in loader.items()}},
            "worst_loader_over_train": worst_ratio, "worst_accelerate_overhead": worst_overhead,
        }
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())

"""One prepared GPU check: every figure the docs project, measured in one run (tools/gpu_check.sh runs this).

    bash tools/gpu_check.sh [--out DIR] [--budget-s 450]     # a machine with a GPU: ≤ 8 min
    bash tools/gpu_check.sh --probe                          # versions and the device only (seconds)
    bash tools/gpu_check.sh --tiny                           # CPU, tiny networks: the same code paths, in CI

Sections, in order; after each one OUT/gpu_check.json (figures, commands, versions) and
OUT/gpu_check.md (tables) are rewritten, so an overrun keeps what is done, and a section whose
budget is spent is skipped (marked so):

  env    torch, CUDA, device, capability, bf16 support, TF32 flags, cores
  train  configs/industrial-1024.yaml's widths and per-GPU batches at every resolution 4…1024 in bf16:
         img/s with lazy R1 (k = the config's loss.r1_every) and with R1 every step, counted GFLOP
         per image, FLOP/s over a same-process 8192² bf16 matmul, peak GPU memory; fp32 vs bf16 at
         1024 px. Short `nsgan.train` runs at each resolution (tools/bench/bench_train.py's measurement:
         img/s from metrics.jsonl over `--windows` windows of K steps after a warm-up window, FLOPs counted
         from whole runs), loading from shards included.
  score  a random-weight industrial model with an encoder scoring synthetic 16384² and 32768² RGB
         TIFFs at nsgan score's defaults (encoder mode): s per image, MP/s, peak GPU memory and the
         report's stage split (read, network, blend, smooth, write, regions, ...); 16384² also in bf16.
  ddp    1 vs 2 processes on ONE GPU (torchrun; both ranks on cuda:0 through tools/bench/one_gpu_rank.py,
         gloo, since NCCL refuses two ranks on one device): equal rank digests, images seen, img/s.

`--tiny`: CUDA hidden, the tests' tiny widths, resolutions 8 and 16 (and a bf16 step at 8 px) with lazy R1 at
k = 4, 256² and 512² gray TIFFs, the DDP smoke test over gloo on 2 CPU processes (the GAN phase alone).
"""

from __future__ import annotations

import argparse
import json
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
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from nsgan.cli import set_process_defaults  # noqa: E402

set_process_defaults()  # before torch loads

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
import torch  # noqa: E402
from bench_train import TINY_WIDTHS, run_worker  # noqa: E402  (tools/bench/bench_train.py, beside this script)

import nsgan  # noqa: E402

INDUSTRIAL = REPO / "configs" / "industrial-1024.yaml"
DEMO = REPO / "configs" / "demo.yaml"


# ----------------------------------------------------------------------------- data


def shards_for(root: Path, res: int, channels: int) -> Path:
    """Small painted shards of `res`-px tiles (4 normal, 2 abnormal images of max(64, 2·res) px, stride = tile)."""
    out = root / f"shards-{res}"
    if not (out / "normal").is_dir():
        data = root / f"data-{res}"
        nsgan.build_demo_dataset(data, n_normal=4, n_abnormal=2, size=max(64, 2 * res), seed=0)
        nsgan.write_shards(nsgan.ShardSpec(data / "normal", abnormal_dir=data / "abnormal", abnormal_masks_dir=data / "abnormal_masks",
                                           tile=res, out=out, stride=res, channels=channels, seed=0))
    return out


# ----------------------------------------------------------------------------- score


def score_model(folder: Path, tiny: bool) -> Path:
    """A random-weight model with an encoder: the industrial widths (1024-px RGB), or the tests' tiny 16-px gray."""
    res, ch, lat, base, mx = (16, 1, 16, 64, 16) if tiny else (1024, 3, 512, 8192, 512)
    torch.manual_seed(0)
    path = nsgan.save_model(folder / "score-model.safetensors", nsgan.Generator(res, ch, latent_dim=lat, fmap_base=base, fmap_max=mx),
                            nsgan.Discriminator(res, ch, fmap_base=base, fmap_max=mx), {"config": {}, "images_seen": 0})
    nsgan.add_encoder(path, nsgan.Encoder(res, ch, lat, fmap_base=base, fmap_max=mx), {"images_seen": 0})
    return path


def synthetic_tiff(path: Path, side: int, channels: int, tile: int = 1024) -> Path:
    """A tiled, uncompressed TIFF of a repeated painted texture, shifted per tile (written tile by tile)."""
    tile = min(tile, side)
    photo = nsgan.texture_image("brick", 2 * tile, np.random.default_rng(0), part="train")  # the demo's material: half scale
    base = (photo.reshape(tile, 2, tile, 2, -1).mean(axis=(1, 3)) * 255).astype(np.uint8)
    base = np.repeat(base, channels, axis=2) if channels == 3 else base
    rng = np.random.default_rng(1)

    def tiles():
        for _ in range((side // tile) ** 2):
            yield np.roll(base, tuple(int(v) for v in rng.integers(0, tile, 2)), axis=(0, 1))

    tifffile.imwrite(path, tiles(), shape=(side, side, channels) if channels == 3 else (side, side), dtype=np.uint8,
                     tile=(tile, tile), bigtiff=True, photometric="rgb" if channels == 3 else "minisblack")
    return path


def section_score(a, tmp: Path) -> list[dict]:
    model = score_model(tmp, a.tiny)
    sides = (256, 512) if a.tiny else (16384, 32768)
    channels = 1 if a.tiny else 3
    rows = []
    for side in sides:
        t0 = time.perf_counter()
        image = synthetic_tiff(tmp / f"synthetic-{side}.tif", side, channels, tile=128 if a.tiny else 1024)
        made = time.perf_counter() - t0
        for precision in (("fp32", "bf16") if side == sides[0] else ("fp32",)):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            scorer = nsgan.Scorer.from_file(model, nsgan.ScoreOptions(search=nsgan.SearchConfig(precision=precision)))
            scorer.score_to_files(image, tmp / f"out-{side}-{precision}", overwrite=True)
            t = scorer.timing
            row = {"side": side, "precision": precision, "tiles": scorer.grid_for(side, side).n_tiles, "s_per_image": t["wall_s"],
                   "mp_per_s": t["mp_per_s"], "stages_s": t["seconds"], "device": t["device"], "tiff_written_s": round(made, 1)}
            if torch.cuda.is_available():
                row["peak_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
            rows.append(row)
            top = sorted(t["seconds"].items(), key=lambda kv: -kv[1])[:4]
            print(f"  {side}² {precision}: {t['wall_s']:.1f} s, {t['mp_per_s']:.1f} MP/s; " + ", ".join(f"{k} {v:.1f} s" for k, v in top), flush=True)
            del scorer
        image.unlink()
    return rows


# ----------------------------------------------------------------------------- ddp


def section_ddp(a, tmp: Path, env: dict) -> list[dict]:
    res = 16 if a.tiny else 64
    shards = shards_for(tmp, res, 1 if a.tiny else 3)
    # --tiny: the tests' widths and the GAN phase alone (the demo config would go on to train its E and its width-16 C
    # for minutes)
    tiny = [*TINY_WIDTHS, "encoder.kimg=0", "comparator.kimg=0", "quality.samples=0"] if a.tiny else []
    kimg = 0.064 if a.tiny else 1.0
    rows = []
    for n in (1, 2):
        run = nsgan.RunLayout(tmp / f"ddp-{n}")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), str(HERE / "one_gpu_rank.py"),
               str(REPO / "launch" / "train.py"), "--config", str(DEMO if a.tiny else INDUSTRIAL),
               f"model.resolution={res}", f"schedule.start_resolution={res}", *tiny, f"schedule.total_kimg={kimg}",
               f"data.normal={shards / 'normal'}", f"data.abnormal={shards / 'abnormal'}", f"data.channels={1 if a.tiny else 3}",
               f"run_dir={run.root}", "train.display=false", "data.num_workers=0", "train.log_with=none", "train.log_every=2",
               f"train.checkpoint_kimg={kimg}", "train.mixed_precision=no" if a.tiny else "train.mixed_precision=bf16"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=max(60, a.budget_s))
        wall = time.perf_counter() - t0
        summary = json.loads(run.summary.read_text()) if run.summary.is_file() else {}
        logged = [json.loads(line) for line in run.metrics.read_text().splitlines()] if run.metrics.is_file() else []
        rates = [r["img_s"] for r in logged if "kind" not in r]  # measured rows (sample quality) have no img_s
        digests = summary.get("rank_digests", [])
        row = {"processes": n, "exit": proc.returncode, "wall_s": round(wall, 1), "images_seen": summary.get("images_seen"),
               "rank_digests_equal": len(digests) == n and len(set(digests)) == 1, "median_img_s": statistics.median(rates) if rates else None}
        if proc.returncode != 0:
            row["stderr_tail"] = proc.stderr[-1500:]
        rows.append(row)
        print(f"  {n} process(es) on one device: exit {proc.returncode}, {row['images_seen']} images, digests equal "
              f"{row['rank_digests_equal']}, median {row['median_img_s']} img/s (the whole job's), {wall:.0f} s", flush=True)
    return rows


# ----------------------------------------------------------------------------- report


def markdown(report: dict) -> str:
    out = [f"# gpu_check ({report['mode']})", "", f"`{report['command']}` — {report['env'].get('device', '?')}, torch {report['env'].get('torch')}", ""]
    tr = report.get("train")
    if isinstance(tr, list) and tr:
        k = report["r1_every"]
        out += [f"## Training ({report['train_config']}, per process)", "",
                f"| res | precision | batch | img/s k={k} | img/s k=1 | GFLOP/img k={k} | FLOP/s ÷ matmul k={k} | peak GB |", "|---|---|---|---|---|---|---|---|"]
        for r in tr:
            out.append(f"| {r['resolution']} | {r['precision']} | {r['batch']} | {r[f'img_s_k{k}']:.1f} | {r['img_s_k1']:.1f} | "
                       f"{r[f'gflop_img_k{k}']:.2f} | {r[f'flop_ratio_k{k}']:.2f} | {r.get('peak_allocated_gb', float('nan')):.2f} |")
        out.append("")
    sc = report.get("score")
    if isinstance(sc, list) and sc:
        out += ["## Scoring (encoder mode, nsgan score's defaults)", "", "| image | precision | tiles | s/image | MP/s | where the time goes (s) |", "|---|---|---|---|---|---|"]
        for r in sc:
            top = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["stages_s"].items(), key=lambda kv: -kv[1])[:5])
            out.append(f"| {r['side']}² | {r['precision']} | {r['tiles']} | {r['s_per_image']:.1f} | {r['mp_per_s']:.1f} | {top} |")
        out.append("")
    dd = report.get("ddp")
    if isinstance(dd, list) and dd:
        out += ["## 1 vs 2 processes on one device", "", "| processes | exit | images | digests equal | median img/s | wall s |", "|---|---|---|---|---|---|"]
        for r in dd:
            out.append(f"| {r['processes']} | {r['exit']} | {r['images_seen']} | {r['rank_digests_equal']} | {r['median_img_s']} | {r['wall_s']} |")
        out.append("")
    for name in ("train", "score", "ddp"):
        if isinstance(report.get(name), dict):
            out.append(f"- {name}: {report[name]}")
    return "\n".join(out) + "\n"


def section_train(a, tmp: Path, config: Path, r1_every: int, env: dict) -> list[dict]:
    """bench_train's measurement (short `nsgan.train` runs at each resolution) in one worker process per precision."""
    res = [8, 16] if a.tiny else [4, 8, 16, 32, 64, 128, 256, 512, 1024]
    channels = 1 if a.tiny else 3
    for r in res:
        shards_for(tmp, r, channels)
    rows = []
    for precision, rs in ((("no", res), ("bf16", [8])) if a.tiny else (("bf16", res), ("no", [1024]))):
        cases = [{"resolution": r, "widths": "demo", "extra": [f"data.channels={channels}", "data.num_workers=0"]} for r in rs]
        rows += run_worker(precision, cases, config, tmp, tmp, r1_every, a.windows, torch.get_num_threads(), a.tiny, env,
                           timeout=max(60, a.budget_s))
    return rows


def environment() -> dict:
    cuda = torch.cuda.is_available()
    env = {"torch": torch.__version__, "cuda_available": cuda, "cuda": torch.version.cuda, "cores": os.cpu_count(),
           "platform": platform.platform(), "python": platform.python_version(), "device": platform.processor() or platform.machine()}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        env.update(device=props.name, capability=f"{props.major}.{props.minor}", memory_gb=round(props.total_memory / 2**30, 1),
                   bf16=torch.cuda.is_bf16_supported(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                   tf32_cudnn=torch.backends.cudnn.allow_tf32, devices=torch.cuda.device_count())
    return env


def child_environment(tiny: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if tiny:
        env.update(ACCELERATE_USE_CPU="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    else:
        env["NSGAN_PG_BACKEND"] = "gloo"  # two ranks on one GPU: NCCL refuses a duplicate device
    return env


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="CPU, tiny networks: the same code paths in well under a minute")
    p.add_argument("--probe", action="store_true", help="versions and the device only")
    p.add_argument("--out", default="runs/gpu_check")
    p.add_argument("--budget-s", type=float, default=450.0, help="sections starting after this many seconds are skipped")
    p.add_argument("--windows", type=int, default=None, help="timed windows of K training steps per run (default 3; 1 with --tiny)")
    a = p.parse_args(argv)
    if a.tiny:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # read when CUDA first initialises, which nothing has asked for yet
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    a.windows = a.windows or (1 if a.tiny else 3)
    t_start = time.perf_counter()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = None
    config = DEMO if a.tiny else INDUSTRIAL
    # --tiny: R1 every 4 steps, not the config's 16: each timed window is k steps, and 4 keeps the same code path
    # (lazy R1 against every step) at a quarter of the steps on a CPU
    r1_every = 4 if a.tiny else nsgan.load_config(config, ["data.normal=x", "data.abnormal=x"]).loss.r1_every
    report = {"mode": "tiny (CPU)" if a.tiny else ("probe" if a.probe else "full"), "command": " ".join(["bash tools/gpu_check.sh", *(argv or sys.argv[1:])]),
              "commit": commit, "env": env, "r1_every": r1_every, "train_config": config.name}

    def save() -> None:
        report["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
        (out / "gpu_check.md").write_text(markdown(report))

    print(f"gpu_check: {env['device']}, torch {env['torch']}, CUDA {env['cuda']}, {env['cores']} cores", flush=True)
    save()
    if a.probe:
        return nsgan.EXIT_OK
    if not a.tiny and not env["cuda_available"]:
        print("gpu_check: no CUDA device; run with --tiny on a CPU", file=sys.stderr)
        return nsgan.EXIT_DATA
    child_env = child_environment(a.tiny)
    with tempfile.TemporaryDirectory(prefix="nsgan-gpu-check-") as tmp:
        tmp = Path(tmp)
        sections = {"train": lambda: section_train(a, tmp, config, r1_every, child_env), "score": lambda: section_score(a, tmp),
                    "ddp": lambda: section_ddp(a, tmp, child_env)}
        for name, run in sections.items():
            if time.perf_counter() - t_start > a.budget_s:
                report[name] = {"skipped": f"budget of {a.budget_s:.0f} s spent"}
                save()
                continue
            print(f"[{name}] at {time.perf_counter() - t_start:.0f} s", flush=True)
            try:
                report[name] = run()
            except Exception as exc:  # a failed section is a finding; the others still run
                report[name] = {"failed": f"{type(exc).__name__}: {str(exc)[-1500:]}"}
                print(f"[{name}] failed: {exc}", file=sys.stderr, flush=True)
            save()
    print(f"gpu_check: done in {time.perf_counter() - t_start:.0f} s; {out / 'gpu_check.md'}", flush=True)
    failed = [n for n in sections if isinstance(report.get(n), dict) and "failed" in report[n]]
    return nsgan.EXIT_FAILED if failed else nsgan.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

"""Scale-out on loopback: two "nodes", DeepSpeed ZeRO-2, a rank that dies mid-run.

Every run is the tiny config (16-px tiles, 256 images) in real `accelerate launch` processes.
Two processes over gloo with the same seed and data give the same result whatever the engine
(DDP on one node, DDP on two nodes, ZeRO-2): the tests compare the exported weights.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from nsgan.models.model_file import load_model
from nsgan.train.common import weights_digest

from .conftest import REPO, TINY, subprocess_env, training_rows

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]
TRAIN = str(REPO / "launch" / "train.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(tiny_shards: Path, run: Path, cfg: Path, *extra: str) -> list[str]:
    # loss.r1_every=4: at world 2 R1 falls on steps 0, 4, 8, 12; the DeepSpeed split resumes at step 6, so R1 steps
    # on both sides of it must line up for the ZeRO-2 export to match DDP's
    return ["--config", str(cfg), *TINY, "loss.r1_every=4", f"data.normal={tiny_shards / 'normal'}", f"data.abnormal={tiny_shards / 'abnormal'}",
            f"run_dir={run}", *extra]


def _cfg(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "cfg.yaml"
    cfg.write_text("seed: 0\n")
    return cfg


def _start_nodes(train_args: list[str], port: int, log_dir: Path, tag: str) -> list[tuple[subprocess.Popen, Path]]:
    """Machine ranks 0 and 1, one CPU process each, rendezvous on 127.0.0.1:port (what two hosts would run)."""
    env = subprocess_env()
    env["NSGAN_PG_TIMEOUT"] = "60"
    nodes = []
    for rank in (0, 1):
        log = log_dir / f"{tag}-node{rank}.log"
        cmd = [*LAUNCH, "--multi_gpu", "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "--mixed_precision", "no",
               "--dynamo_backend", "no", TRAIN, *train_args]
        nodes.append((subprocess.Popen(cmd, env=env, cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT), log))
    return nodes


def _wait(nodes, timeout: float) -> list[int]:
    deadline = time.time() + timeout
    codes = []
    for proc, log in nodes:
        try:
            codes.append(proc.wait(max(1.0, deadline - time.time())))
        except subprocess.TimeoutExpired:
            for p, _ in nodes:
                p.kill()
            pytest.fail(f"{log.name} still running after {timeout} s:\n{log.read_text()[-3000:]}")
    return codes


def _tail(nodes) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text()[-2500:]}" for _, log in nodes)


@pytest.fixture(scope="module")
def loopback_run(tiny_shards, tmp_path_factory):
    """Two loopback nodes (machine ranks 0 and 1) train the tiny config to the end."""
    root = tmp_path_factory.mktemp("loopback")
    run = root / "run"
    nodes = _start_nodes(_args(tiny_shards, run, _cfg(root)), _free_port(), root, "ddp")
    codes = _wait(nodes, 240)
    return run, codes, _tail(nodes)


def test_two_loopback_nodes_end_with_identical_weights(loopback_run):
    run, codes, logs = loopback_run
    summary = json.loads((run / "run.json").read_text())
    digests = summary["rank_digests"]  # each rank hashed its own G, G_ema and D at the end
    assert len(digests) == 2 and digests[0] == digests[1], logs
    m = load_model(run / "model.safetensors")
    assert m.meta["trained_with"]["world_size"] == 2 and m.meta["images_seen"] == 256
    assert weights_digest([m.generator, m.discriminator]) == summary["export_digest"]
    assert torch.isfinite(m.generator(torch.randn(2, m.latent_dim))).all()
    assert codes == [0, 0], logs


def test_deepspeed_zero2_trains_resumes_and_matches_ddp(loopback_run, tiny_shards, tmp_path):
    """ZeRO-2 on 2 CPU processes, stopped half-way and resumed: weights identical on both ranks,
    the state holds each rank's optimizer partition, and the export equals the DDP run's."""
    ddp_run, _, _ = loopback_run
    run, cfg = tmp_path / "run", _cfg(tmp_path)
    env = subprocess_env()
    env.pop("ACCELERATE_USE_CPU")  # with it accelerate silently drops DeepSpeed (nsgan refuses that)

    def launch(*extra):
        cmd = [*LAUNCH, "--config_file", str(REPO / "configs" / "accelerate" / "deepspeed-zero2.yaml"), "--num_processes", "2",
               "--main_process_port", str(_free_port()), TRAIN, *_args(tiny_shards, run, cfg, *extra)]
        return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)

    first = launch("schedule.total_kimg=0.128")
    assert (run / "model.safetensors").is_file(), first.stdout[-2000:] + first.stderr[-3000:]
    state = json.loads((run / "checkpoints" / "latest.json").read_text())["state"]
    info = json.loads((run / "checkpoints" / state / "state.json").read_text())
    assert info["engine"] == "deepspeed-zero2" and info["images_seen"] == 128
    assert len(info["optimizers"]["opt_D"]["ranks"]) == 2  # each rank's partition of Adam's moments
    (run / "model.safetensors").unlink()
    second = launch("schedule.total_kimg=0.256", "--resume")
    summary = json.loads((run / "run.json").read_text())
    assert summary["rank_digests"][0] == summary["rank_digests"][1], second.stderr[-3000:]
    m = load_model(run / "model.safetensors")
    assert m.meta["images_seen"] == 256 and torch.isfinite(m.generator(torch.randn(2, m.latent_dim))).all()
    zero, ddp = load_file(str(run / "model.safetensors")), load_file(str(ddp_run / "model.safetensors"))
    assert zero.keys() == ddp.keys()  # same export format as DDP
    worst = max((zero[k] - ddp[k]).abs().max().item() for k in ddp)
    assert worst <= 1e-6, f"ZeRO-2 (resumed) and DDP exports differ by {worst}"
    assert (first.returncode, second.returncode) == (0, 0), first.stderr[-2000:] + second.stderr[-2000:]


def test_deepspeed_with_cpu_flag_is_refused_not_silently_ddp(tiny_shards, tmp_path):
    """ACCELERATE_USE_CPU makes accelerate drop DeepSpeed without a word: nsgan stops with exit 2."""
    cmd = [*LAUNCH, "--config_file", str(REPO / "configs" / "accelerate" / "deepspeed-zero1.yaml"), "--num_processes", "1",
           "--main_process_port", str(_free_port()), TRAIN, *_args(tiny_shards, tmp_path / "run", _cfg(tmp_path))]
    proc = subprocess.run(cmd, env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "ACCELERATE_USE_CPU" in proc.stderr and "silently" in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode != 0 and not (tmp_path / "run" / "model.safetensors").exists()


def test_dead_rank_stops_the_other_quickly_then_resume_finishes(tiny_shards, tmp_path):
    """SIGKILL rank 1's process mid-run: node 0 exits within seconds with a clear message (no
    hang until a timeout), and --resume on both nodes continues from the last complete state."""
    run, cfg = tmp_path / "run", _cfg(tmp_path)
    long_run = _args(tiny_shards, run, cfg, "schedule.total_kimg=40", "train.checkpoint_kimg=0.032")
    nodes = _start_nodes(long_run, _free_port(), tmp_path, "first")
    latest = run / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if json.loads(latest.read_text())["images_seen"] >= 256:
                break
        except (OSError, ValueError, KeyError):
            pass
        if any(p.poll() is not None for p, _ in nodes):
            pytest.fail("a node ended before the kill:\n" + _tail(nodes))
        time.sleep(0.1)
    else:
        pytest.fail("no state after 120 s:\n" + _tail(nodes))
    workers = psutil.Process(nodes[1][0].pid).children(recursive=True)  # node 1's launcher -> its training process
    assert workers, _tail(nodes)
    for w in workers:
        w.kill()
    t0 = time.time()
    codes = _wait(nodes, 90)
    took = time.time() - t0
    log0 = nodes[0][1].read_text()
    assert "lost contact with another process" in log0 and "--resume" in log0, _tail(nodes)
    assert codes[0] != 0 and took < 60, f"node 0 took {took:.0f} s, exit {codes[0]}"
    # the launcher exits 1 for any failed worker; the worker itself must have exited 6 (lost peer)
    assert re.search(r"exitcode\s*:\s*6\b", log0), _tail(nodes)
    assert not (run / "model.safetensors").exists()
    saved = json.loads(latest.read_text())["images_seen"]

    resumed = _start_nodes([*long_run, "schedule.total_kimg=0.512", "--resume"], _free_port(), tmp_path, "resume")
    codes = _wait(resumed, 240)
    m = load_model(run / "model.safetensors")
    assert m.meta["images_seen"] == 512, _tail(resumed)
    summary = json.loads((run / "run.json").read_text())
    assert summary["rank_digests"][0] == summary["rank_digests"][1]
    seen = [r["images_seen"] for r in training_rows(run / "metrics.jsonl")]
    assert seen == sorted(set(seen)) and seen[-1] == 512 and any(s > saved for s in seen)  # continued, nothing logged twice
    assert codes == [0, 0], _tail(resumed)


@pytest.mark.parametrize("env, needle", [
    ({"ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "ZeRO-3 partitions the weights"),
    ({"ACCELERATE_DEEPSPEED_ZERO_STAGE": "0"}, "plain data parallelism"),
    ({"ACCELERATE_DEEPSPEED_ZERO_STAGE": "2", "ACCELERATE_MIXED_PRECISION": "bf16"}, "train.mixed_precision"),
])
def test_deepspeed_settings_nsgan_does_not_train_are_config_errors(monkeypatch, tiny_overrides, env, needle):
    """Stages and precisions that cannot train this GAN as under DDP stop before anything starts."""
    from datetime import timedelta

    from nsgan.train.config import load_config
    from nsgan.train.engines import make_deepspeed_accelerator
    from nsgan.common.errors import ConfigError

    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cfg = load_config(None, [*tiny_overrides, "train.mixed_precision=auto"])
    with pytest.raises(ConfigError, match=needle):
        make_deepspeed_accelerator(cfg, timedelta(seconds=10))

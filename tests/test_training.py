"""Training end to end on tiny data: export, config errors, exact resume, kills, two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nsgan.cli.main import main as cli
from nsgan.train.config import load_config
from nsgan.models.model_file import load_model
from nsgan.train.pipeline import train

from .conftest import REPO, assert_same_model, free_port, subprocess_env, tensorboard_log, training_rows


def _run(overrides, resume=False):
    return train(load_config(None, overrides), resume=resume)


def test_train_exports_a_model_that_loads_and_generates(tiny_overrides, tmp_path):
    model_path = _run(tiny_overrides)
    run = tmp_path / "run"
    assert model_path == run / "model.safetensors"
    m = load_model(model_path)
    assert m.resolution == 16 and m.channels == 1 and m.meta["images_seen"] >= 256
    assert m.meta["config"]["loss"]["gamma"] == 0.2
    img = m.generator(torch.randn(3, m.latent_dim))
    assert img.shape == (3, 1, 16, 16) and torch.isfinite(img).all()
    assert m.discriminator(img).shape == (3,)
    # one grid per phase (8 stable, 16 fade, 16 stable), the reals and the final grid
    names = sorted(p.name for p in (run / "samples").glob("*.png"))
    assert names == ["final.png", "phase00-8px-stable.png", "phase01-16px-fade.png", "reals.png"] or "phase02-16px-stable.png" in names
    rows = training_rows(run / "metrics.jsonl")
    assert rows and {"kimg", "resolution", "alpha", "img_s", "loss_d", "loss_g", "d_abnormal", "skipped_normal"} <= rows[-1].keys()
    assert rows[-1]["resolution"] == 16
    assert (run / "checkpoints" / "latest.json").is_file()


@pytest.mark.parametrize("stop_kimg", ["0.064", "0.128"])  # at a level change (optimizer reset), mid-level
def test_resume_across_an_r1_step_matches_uninterrupted_run(tiny_shards, tmp_path, stop_kimg, uninterrupted_tiny_model):
    """Lazy R1 (k = 5) over TINY's 28 steps: R1 on steps 0, 5, 10, 15, 20, 25. The splits resume at
    step 4 and step 12, which k divides neither: a counter restarted at resume would regularise on
    other steps, and the weights would differ."""
    from .conftest import TINY

    base = [*TINY, "loss.r1_every=5", "train.log_every=1", f"data.normal={tiny_shards / 'normal'}", f"data.abnormal={tiny_shards / 'abnormal'}"]
    full = _run([*base, f"run_dir={tmp_path / 'full'}"])
    # stop early (a state at the end), then continue the same run to 0.256 kimg
    _run([*base, f"run_dir={tmp_path / 'split'}", f"schedule.total_kimg={stop_kimg}"])
    split = _run([*base, f"run_dir={tmp_path / 'split'}"], resume=True)
    a, b = load_file(str(full)), load_file(str(split))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert load_model(split).meta["images_seen"] == load_model(full).meta["images_seen"]

    def r1_rows(run):  # metrics rows' step = D steps done, so R1 taken on step s shows at s + 1
        rows = training_rows(tmp_path / run / "metrics.jsonl")
        return [r["step"] for r in rows if "r1" in r]

    assert r1_rows("full") == r1_rows("split") == [1, 6, 11, 16, 21, 26]
    default_k = load_file(str(uninterrupted_tiny_model))  # the same run at the default k = 16
    assert any(not torch.equal(a[k], default_k[k]) for k in a), "loss.r1_every had no effect"


@pytest.mark.parametrize("bad, needle", [
    (["model.colour=3"], "unknown key 'model.colour'"),
    (["model.resolution=big"], "key 'model.resolution' must be an integer"),
    (["data.normal=/nonexistent/shards"], "data.normal"),
    (["data.abnormal="], "loss.gamma"),
])
def test_config_errors_are_one_line_exit_2_and_write_nothing(tiny_overrides, tmp_path, capsys, bad, needle):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("seed: 0\n")
    code = cli(["train", "--config", str(cfg), *tiny_overrides, *bad])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err and str(cfg) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_config_file_unknown_key_names_file_and_key(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("loss:\n  gama: 0.1\n")
    assert cli(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "loss.gama" in err


def test_existing_run_is_not_overwritten(tiny_overrides, tmp_path, capsys):
    _run(tiny_overrides)
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("seed: 0\n")
    assert cli(["train", "--config", str(cfg), *tiny_overrides]) == 5
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("damage", ["missing", "truncated", "foreign"])
def test_bad_model_file_gives_clear_error(tmp_path, damage):
    from safetensors.torch import save_file

    from nsgan.common.errors import ModelError

    path = tmp_path / "model.safetensors"
    if damage == "truncated":
        from nsgan.models.model_file import save_model
        from nsgan.models.networks import Discriminator, Generator

        save_model(path, Generator(16, 1, 8, 32, 8), Discriminator(16, 1, 32, 8), {"config": {}})
        path.write_bytes(path.read_bytes()[:-200])
    elif damage == "foreign":
        save_file({"weight": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ModelError, match=str(path.name)):
        load_model(path)


def test_partial_state_from_a_crash_while_saving_is_ignored(tiny_overrides, tmp_path, uninterrupted_tiny_model):
    """A save killed half-way leaves a .tmp folder or a folder without state.json: resume skips them
    and continues exactly where the last complete state was (a restart from scratch would not)."""
    _run([*tiny_overrides, "schedule.total_kimg=0.128"])
    ckpt = tmp_path / "run" / "checkpoints"
    (ckpt / "state-999999999999.tmp").mkdir()
    (ckpt / "state-999999999999.tmp" / "tensors.safetensors").write_bytes(b"\0" * 10)
    half = ckpt / "state-999999999998"
    half.mkdir()
    (half / "tensors.safetensors").write_bytes(b"\0" * 10)  # state.json never written
    (ckpt / "latest.json").write_text('{"state": "state-9999')  # pointer torn mid-write
    model = _run(tiny_overrides, resume=True)
    assert_same_model(model, uninterrupted_tiny_model)
    seen = [r["images_seen"] for r in training_rows(tmp_path / "run" / "metrics.jsonl")]
    assert seen == sorted(set(seen))  # continued from 0.128 kimg: nothing logged twice, so not restarted


def test_sigkill_during_training_then_resume(tiny_shards, tmp_path):
    """A real SIGKILL mid-run: the newest complete state survives and --resume finishes the run."""
    from .conftest import TINY

    run = tmp_path / "run"
    args = [*TINY, "schedule.total_kimg=2", "train.checkpoint_kimg=0.032",
            f"data.normal={tiny_shards / 'normal'}", f"data.abnormal={tiny_shards / 'abnormal'}", f"run_dir={run}"]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("seed: 0\n")
    proc = subprocess.Popen([sys.executable, "-m", "nsgan.cli.main", "train", "--config", str(cfg), *args],
                            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((run / "checkpoints").glob("state-*"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # likely in the middle of a save: states come every few steps
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model.safetensors").exists()
    saved = json.loads((run / "checkpoints" / "latest.json").read_text())["images_seen"]
    assert 0 < saved < 512
    resumed = subprocess.run([sys.executable, "-m", "nsgan.cli.main", "train", "--config", str(cfg), "--resume",
                              *args, "schedule.total_kimg=0.512"], env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # the same run without the kill: the resumed one must equal it exactly (a restart from scratch would too,
    # so the metrics must show it continued from the saved state rather than from 0)
    reference = _run([*args, "schedule.total_kimg=0.512", f"run_dir={tmp_path / 'reference'}"])
    assert_same_model(run / "model.safetensors", reference)
    first_resumed = [r["images_seen"] for r in training_rows(run / "metrics.jsonl")]
    assert first_resumed == sorted(set(first_resumed)) and first_resumed[-1] == 512
    # TensorBoard continues the same axis: what the killed process logged after the state is hidden, as in metrics.jsonl
    assert [step for step, _ in tensorboard_log(run / "tb" / "gan")["scalars"]["loss_d"]] == first_resumed


def test_two_processes_train_identical_weights_and_export(tiny_shards, tmp_path):
    """DDP over gloo with 2 CPU processes: both ranks end with the same weights; the export works."""
    from nsgan.train.common import weights_digest

    from .conftest import TINY

    run = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("seed: 0\n")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), str(REPO / "launch" / "train.py"),
           "--config", str(cfg), *TINY, "loss.r1_every=3",  # world 2 runs 14 steps: R1 on 0, 3, 6, 9, 12 and plain steps between
           f"data.normal={tiny_shards / 'normal'}", f"data.abnormal={tiny_shards / 'abnormal'}", f"run_dir={run}"]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    summary = json.loads((run / "run.json").read_text())
    digests = summary["rank_digests"]  # each rank's own hash of G, G_ema and D, gathered at the end
    assert len(digests) == 2 and digests[0] == digests[1], proc.stderr[-3000:]
    m = load_model(run / "model.safetensors")
    assert m.meta["trained_with"]["world_size"] == 2 and m.meta["images_seen"] >= 256
    assert weights_digest([m.generator, m.discriminator]) == summary["export_digest"]
    assert torch.isfinite(m.generator(torch.randn(2, m.latent_dim))).all()
    # train.log_with defaults to auto: TensorBoard (installed with nsgan[tracking]) through accelerate, in RUN/tb/gan,
    # read back with TensorBoard's own reader: metrics.jsonl's numbers at its steps (images seen), the grids at phase ends
    tb = tensorboard_log(run / "tb" / "gan")
    rows = training_rows(run / "metrics.jsonl")
    assert [step for step, _ in tb["scalars"]["loss_d"]] == [r["images_seen"] for r in rows]
    assert [v for _, v in tb["scalars"]["loss_g"]] == pytest.approx([r["loss_g"] for r in rows], rel=1e-5, abs=1e-6)
    assert [step for step, _, _ in tb["images"]["samples"]] == [64, 128, 256]  # 8 px stable, 16 px fade, the end
    assert [step for step, _, _ in tb["images"]["reals"]] == [0]
    assert len(tensorboard_log(run / "tb")["pids"]) == 1  # one process (the main one) wrote every event file
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_corrupt_tiles_and_truncated_tar_are_skipped_and_counted(tiny_shards, tmp_path):
    """A broken sample inside a shard and a truncated tar: warned, counted in metrics, training goes on."""
    import io
    import shutil
    import tarfile

    from .conftest import TINY

    normal = tmp_path / "normal"
    shutil.copytree(tiny_shards / "normal", normal)
    first = sorted(normal.glob("*.tar"))[0]
    with tarfile.open(normal / "bad-000000.tar", "w") as tar:  # a shard whose samples do not decode
        for i in range(40):
            for ext, data in (("png", b"not a png at all"), ("json", b"{}")):
                info = tarfile.TarInfo(f"broken{i:04d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    data = first.read_bytes()
    (normal / "cut-000000.tar").write_bytes(data[: len(data) // 3 + 100])  # breaks off inside a sample
    _run([*TINY, f"data.normal={normal}", f"data.abnormal={tiny_shards / 'abnormal'}", f"run_dir={tmp_path / 'run'}",
          "model.resolution=16", "data.channels=1"])
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    rows = training_rows(tmp_path / "run" / "metrics.jsonl")
    assert summary["skipped_normal"] > 0
    assert rows[-1]["skipped_normal"] == summary["skipped_normal"]
    assert load_model(tmp_path / "run" / "model.safetensors").meta["images_seen"] >= 256

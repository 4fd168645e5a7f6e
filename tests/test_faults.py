"""Injected faults: kill -9 mid-command, a full disk (RLIMIT_FSIZE) mid-save, two trainings into one folder.

What must hold each time: no output is left looking complete when it is not (final names appear
only by an atomic rename, the report last), the previous state or model stays loadable, a rerun
finishes the job, and a failure the user caused is one line with its exit code.
"""

from __future__ import annotations

import json
import random
import resource
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from nsgan.cli.main import main as cli
from nsgan.data.imageio import write_png

from .conftest import TINY, assert_same_model, subprocess_env

NSGAN = [sys.executable, "-m", "nsgan.cli.main"]
FAST = ["--iterations", "2", "--restarts", "1", "--no-progress"]


def _start(args: list[str], fsize: int | None = None) -> subprocess.Popen:
    def limit():  # a "full disk": any file growing past `fsize` bytes fails with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.Popen([*NSGAN, *args], env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=limit if fsize else None)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    return False


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# ---------------------------------------------------------------------------------------- kill -9


def _tars_complete(folder: Path) -> int:
    """Samples in a shard folder's tars; raises if any tar is cut short."""
    n = 0
    for tar in sorted(folder.glob("*.tar")):
        with tarfile.open(tar) as tf:
            members = tf.getmembers()
            for m in members:
                assert len(tf.extractfile(m).read()) == m.size
        n += len([m for m in members if m.name.endswith(".json")])
    return n


def _check_shard_set(out: Path) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    for name in ("normal", "abnormal"):
        listed = manifest["shards"][name]["files"]
        assert sorted(listed) == sorted(f"{name}/{p.name}" for p in (out / name).glob("*.tar"))
        assert _tars_complete(out / name) == manifest["shards"][name]["tiles"]


@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("many") / "normal"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        write_png(folder / f"img{i:03d}.png", rng.random((96, 96, 1)).astype(np.float32))
    return folder


def test_kill_9_during_shards_leaves_no_shard_set_claiming_incomplete_tars(many_images, tmp_path):
    out = tmp_path / "shards"
    args = ["shards", "--normal", str(many_images), "--tile", "16", "--stride", "8", "--shard-size", "50", "--out", str(out)]
    rng = random.Random(1)
    for attempt in range(2):  # kills at random points of the cutting
        proc = _start(args)
        assert _wait_for(lambda: any(tmp_path.glob(".shards.tmp-*/normal/*.tar")), proc), proc.communicate()
        time.sleep(rng.uniform(0.0, 0.6))
        _kill(proc)
        if out.exists():  # the kill came after the final rename: then it is complete
            _check_shard_set(out)
    rerun = subprocess.run([*NSGAN, *args, "--overwrite"], env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    _check_shard_set(out)
    assert not list(tmp_path.glob(".shards.tmp-*"))  # the killed runs' temp folders were cleared away


def _big_image(path: Path) -> Path:
    write_png(path, np.random.default_rng(3).random((160, 160, 1)).astype(np.float32))
    return path


def test_kill_9_during_score_leaves_no_output_looking_complete(model_file, tmp_path):
    image = _big_image(tmp_path / "img.png")
    out = tmp_path / "out"
    args = ["score", "--model", str(model_file), "--image", str(image), "--out", str(out), "--iterations", "4", "--restarts", "1",
            "--no-progress", "--overwrite"]
    # 1) while the map is being written: its temporary file exists, the final names must not
    proc = _start(args)
    assert _wait_for(lambda: any(out.glob(".img.map.tif.*.tmp")), proc), proc.communicate()
    _kill(proc)
    assert not (out / "img.map.tif").exists() and not (out / "img.json").exists()
    # 2) at random points: the report is written last, so a report means every output is complete
    rng = random.Random(2)
    for _ in range(2):
        proc = _start(args)
        assert _wait_for(lambda: out.is_dir(), proc), proc.communicate()
        time.sleep(rng.uniform(0.0, 1.0))
        _kill(proc)
        if (out / "img.json").exists():
            assert tifffile.imread(out / "img.map.tif").shape == (160, 160)
            assert json.loads((out / "img.json").read_text())["shape"] == [160, 160]
    done = subprocess.run([*NSGAN, *args], env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert tifffile.imread(out / "img.map.tif").shape == (160, 160) and (out / "img.overlay.png").stat().st_size > 0


def test_kill_9_during_calibrate_leaves_the_old_or_the_new_model(model_file, tmp_path):
    from nsgan.models.model_file import load_model, read_metadata

    model = tmp_path / "m.safetensors"
    model.write_bytes(model_file.read_bytes())
    old = model.read_bytes()
    normal = tmp_path / "normal"
    normal.mkdir()
    for i in range(3):
        write_png(normal / f"n{i}.png", np.random.default_rng(i).random((48, 48, 1)).astype(np.float32))
    args = ["calibrate", "--model", str(model), "--normal", str(normal), *FAST]
    rng = random.Random(3)
    for _ in range(2):
        proc = _start(args)
        time.sleep(rng.uniform(1.0, 4.0))
        _kill(proc)
        load_model(model)  # never broken
        assert model.read_bytes() == old or "thresholds" in read_metadata(model)
    done = subprocess.run([*NSGAN, *args], env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert read_metadata(model)["thresholds"]["n_normal"] == 3


# ---------------------------------------------------------------------------------------- full disk


def test_full_disk_during_a_checkpoint_save_keeps_the_last_state_and_says_so(tiny_shards, tmp_path, uninterrupted_tiny_model):
    from nsgan.train.checkpoint import find_latest, load_state

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("seed: 0\n")
    args = ["train", "--config", str(cfg), *TINY, f"data.normal={tiny_shards / 'normal'}", f"data.abnormal={tiny_shards / 'abnormal'}",
            f"run_dir={tmp_path / 'run'}"]
    first = subprocess.run([*NSGAN, *args, "schedule.total_kimg=0.128"], env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    before, model = find_latest(tmp_path / "run"), (tmp_path / "run" / "model.safetensors").read_bytes()
    proc = _start([*args, "--resume"], fsize=200_000)  # a state's tensors are ~380 kB, everything else smaller
    _, err = proc.communicate(timeout=300)
    lines = err.strip().splitlines()
    assert proc.returncode == 5 and len(lines) == 1 and "Traceback" not in err, err
    assert "cannot save the training state" in lines[0] and "File too large" in lines[0] and "--resume" in lines[0]
    assert find_latest(tmp_path / "run") == before and load_state(before)[1]["images_seen"] == 128
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp")) and (tmp_path / "run" / "model.safetensors").read_bytes() == model
    resumed = subprocess.run([*NSGAN, *args, "--resume"], env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_model(tmp_path / "run" / "model.safetensors", uninterrupted_tiny_model)


def test_full_disk_during_scoring_keeps_the_earlier_outputs(model_file, tmp_path):
    image = _big_image(tmp_path / "img.png")
    out = tmp_path / "out"
    args = ["score", "--model", str(model_file), "--image", str(image), "--out", str(out), *FAST]
    assert cli(args) == 0
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = _start([*args, "--overwrite", "--seed", "7"], fsize=20_000)  # the map (~100 kB) cannot be written
    _, err = proc.communicate(timeout=300)
    lines = err.strip().splitlines()
    assert proc.returncode == 5 and len(lines) == 1 and "Traceback" not in err, err
    assert "img.map.tif" in lines[0] and "File too large" in lines[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier  # old set intact, no temp file left


# ---------------------------------------------------------------------------------------- one run folder, one training


def test_a_second_training_into_the_same_run_folder_is_refused_naming_the_first(tiny_shards, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("seed: 0\n")
    run = tmp_path / "run"
    args = ["train", "--config", str(cfg), *TINY, f"data.normal={tiny_shards / 'normal'}", f"data.abnormal={tiny_shards / 'abnormal'}",
            f"run_dir={run}", "schedule.total_kimg=50"]
    first = _start(args)
    try:
        assert _wait_for(lambda: (run / "checkpoints" / "latest.json").exists(), first), first.communicate()
        for extra in ([], ["--resume"]):  # a new run or a resume: both would write the same folder
            assert cli([*args, *extra]) == 5
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and f"pid {first.pid}" in err and "another training" in err, err
        assert first.poll() is None  # the first one was not disturbed
    finally:
        _kill(first)
    # kill -9 released the lock with the process: the run resumes from its last state
    assert cli([*args, "schedule.total_kimg=0.256", "--resume"]) == 0

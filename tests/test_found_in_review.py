"""Defects found in a read of the code (issue 12, section 5); each test failed before its fix."""

from __future__ import annotations

import json
import os
import re
import signal

import numpy as np
import pytest

from nsgan.cli.main import main as cli
from nsgan.train.config import load_config
from nsgan.data.imageio import write_png
from nsgan.train.pipeline import train

from .conftest import REPO, TINY, assert_same_model

FAST = ["--iterations", "2", "--restarts", "1", "--no-progress"]


# -- `nsgan demo --overwrite` and the protocol builders delete only their own earlier output ----------


def test_demo_overwrite_refuses_a_folder_that_is_not_an_earlier_demo(tmp_path, capsys):
    home = tmp_path / "home"  # what `--out ~` or `--out .` would be
    (home / "photos").mkdir(parents=True)
    (home / "photos" / "part.png").write_bytes(b"precious")
    (home / "notes.txt").write_text("mine")
    assert cli(["demo", "--out", str(home), "--overwrite", "schedule.total_kimg=0.01"]) == 5
    err = capsys.readouterr().err.strip()
    assert "not an earlier nsgan demo" in err and str(home) in err and len(err.splitlines()) == 1
    assert (home / "photos" / "part.png").read_bytes() == b"precious" and (home / "notes.txt").read_text() == "mine"


def test_an_earlier_demo_is_recognised_and_a_foreign_file_inside_makes_it_foreign(tmp_path):
    from nsgan.demo import DEMO_MARKER, is_earlier_demo

    out = tmp_path / "demo"
    for name in ("data", "shards", "run", "score"):
        (out / name).mkdir(parents=True)
    (out / DEMO_MARKER).write_text("")
    assert is_earlier_demo(out)
    (out / "thesis.tex").write_text("")
    assert not is_earlier_demo(out)


def _mnist(out, *extra):
    from tools.protocols.__main__ import main

    return main(["mnist", "--out", str(out), "--n-train", "4", "--n-abnormal", "1", "--n-test-good", "2",
                 "--n-test-defect", "2", *extra])


def test_protocol_builder_overwrite_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _mnist(out, "--overwrite") == 5
    assert "not a protocol folder" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_protocol_builder_never_deletes_a_foreign_partial_folder(tmp_path, capsys):
    out, partial = tmp_path / "m", tmp_path / "m.partial"
    partial.mkdir()
    (partial / "keep.txt").write_text("mine")
    assert _mnist(out) == 5
    assert "m.partial" in capsys.readouterr().err and (partial / "keep.txt").read_text() == "mine"
    # its own unfinished build (marker inside) is cleaned up and the build completes
    (partial / "keep.txt").unlink()
    from tools.protocols.common import PARTIAL_MARKER

    (partial / PARTIAL_MARKER).write_text("")
    assert _mnist(out) == 0
    assert (out / "protocol.json").is_file() and not partial.exists() and not (out / PARTIAL_MARKER).exists()


# -- scoring a folder: two images that would write the same outputs -------------------------------------


@pytest.mark.parametrize("names", [("a.png", "a.tif"), ("x__y.png", "x/y.png")])
def test_scoring_a_folder_refuses_two_images_with_the_same_output_names(model_file, tmp_path, capsys, names):
    images = tmp_path / "images"
    for name in names:
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        img = np.random.default_rng(0).random((20, 20, 1)).astype(np.float32)
        if name.endswith(".tif"):
            import tifffile

            tifffile.imwrite(images / name, (img[:, :, 0] * 255).astype(np.uint8))
        else:
            write_png(images / name, img)
    out = tmp_path / "out"
    code = cli(["score", "--model", str(model_file), "--image", str(images), "--out", str(out), "--overwrite", *FAST])
    err = capsys.readouterr().err.strip()
    assert code == 3 and "would write the same outputs" in err and len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


# -- Ctrl-C in one process: stop at a step boundary, so the resume is exact -----------------------------


def test_ctrl_c_mid_step_saves_at_the_step_boundary_and_the_resume_is_exact(tiny_shards, tmp_path, monkeypatch, uninterrupted_tiny_model):
    from nsgan.models.losses import GANLoss

    real, calls = GANLoss.g_loss, {"n": 0}

    def g_loss_with_ctrl_c(self, *args, **kwargs):  # the 5th step, after its D update, before G's
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(GANLoss, "g_loss", g_loss_with_ctrl_c)
    overrides = [*TINY, f"data.normal={tiny_shards / 'normal'}", f"data.abnormal={tiny_shards / 'abnormal'}", f"run_dir={tmp_path / 'run'}"]
    # as in a terminal: a job started in the background (CI) inherits an ignored SIGINT, which training respects
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(load_config(None, overrides))
        handler_after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, outer)
    monkeypatch.setattr(GANLoss, "g_loss", real)
    latest = json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())
    assert latest["images_seen"] == 4 * 16 + 8  # the interrupted 5th step (16 px, batch 8) was finished, then saved
    assert handler_after is signal.default_int_handler  # handler given back
    resumed = train(load_config(None, overrides), resume=True)
    assert_same_model(resumed, uninterrupted_tiny_model)


# -- lost-peer detection: a local GPU failure is not a lost peer ----------------------------------------


@pytest.mark.parametrize("message, lost", [
    ("NCCL error in: ProcessGroupNCCL.cpp:1296, unhandled cuda error, NCCL version 2.18.1", False),
    ("CUDA error: an illegal memory access was encountered (gloo allreduce)", False),
    ("ProcessGroupGloo: CUDA out of memory. Tried to allocate 2.00 GiB", False),
    ("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:41236", True),
    ("[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 60000ms for recv operation", True),
    ("NCCL communicator was aborted on rank 0.", True),
])
def test_lost_peer_is_told_apart_from_a_local_failure(message, lost):
    from nsgan.train.engines import peer_failure

    assert (peer_failure(RuntimeError(message)) is not None) == lost


# -- a model calibrated at one stride and scored at another: said in one line --------------------------


def test_stride_differing_from_the_calibration_is_said_in_one_line(model_file, tmp_path, capsys):
    import shutil

    model = tmp_path / "m.safetensors"
    shutil.copy(model_file, model)
    images = tmp_path / "normal"
    images.mkdir()
    write_png(images / "n.png", np.random.default_rng(1).random((24, 24, 1)).astype(np.float32))
    assert cli(["calibrate", "--model", str(model), "--normal", str(images), "--stride", "8", *FAST]) == 0
    capsys.readouterr()
    assert cli(["score", "--model", str(model), "--image", str(images / "n.png"), "--out", str(tmp_path / "o"), "--stride", "4", *FAST]) == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "stride 8" in warnings[0] and "stride 4" in warnings[0], warnings
    report = json.loads((tmp_path / "o" / "n.json").read_text())
    assert "stride 8" in report["thresholds"]["warning"]
    assert cli(["score", "--model", str(model), "--image", str(images / "n.png"), "--out", str(tmp_path / "p"), "--stride", "8", *FAST]) == 0
    assert "warning" not in capsys.readouterr().err


# -- the README says what evaluate holds in memory; tests pick free ports -------------------------------


def test_readme_does_not_promise_evaluating_maps_larger_than_memory():
    readme = "\n".join(p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    assert "maps\nlarger than memory can be measured" not in readme and "larger than memory can be measured" not in readme.replace("\n", " ")
    assert "each test image's map is held whole" in readme.replace("\n", " ")


def test_no_test_uses_a_fixed_rendezvous_port():
    fixed = []
    for path in (REPO / "tests").glob("*.py"):
        for m in re.finditer(r"main_process_port[\"'],\s*[\"'](\d+)", path.read_text()):
            fixed.append(f"{path.name}: {m.group(1)}")
    assert fixed == []

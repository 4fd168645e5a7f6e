"""The loop every training phase runs through (nsgan/train/phase_runner.py): what it promises any phase.

A small stand-in phase (one weight, a fixed number of images) shows the runner's rules without a
network; the last test holds a real phase (the encoder inside `nsgan train`) to the Ctrl-C promise.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nsgan.common.errors import EXIT_RUNTIME, NsganError
from nsgan.train.config import load_config
from nsgan.train.layout import RunLayout
from nsgan.train.phase_runner import FixedLengthPhase, MetricWindow, PhaseInfo, Progress, run_phase
from nsgan.train.pipeline import train

from .conftest import TINY, assert_same_model


class _Acc:
    """The parts of an Accelerator the runner uses, for one process without trackers."""

    is_main_process, num_processes, log_with, trackers = True, 1, None, []

    def wait_for_everyone(self) -> None:
        pass


class ToyPhase(FixedLengthPhase):
    """w moves towards 1 by a fixed rule; `stats_at(step)` says what each step reports."""

    grid_prefix = "toy"

    def __init__(self, run_dir: Path, total: int = 40, batch: int = 4, log_every: int = 2, checkpoint_kimg: float = 0.016,
                 stats_at=None, progress: Progress | None = None, resumed: bool = False):
        self.cfg = load_config(None, ["data.normal=unused", "train.display=false"])
        self.acc, self.layout, self.resumed = _Acc(), RunLayout(run_dir), resumed
        self.info = PhaseInfo("toy", log_every, checkpoint_kimg, "toy.lr")
        self.progress, self.total, self.batch = progress or Progress(), total, batch
        self.w = torch.nn.Linear(1, 1, bias=False)
        self.stats_at = stats_at or (lambda step: {"loss_toy": 1.0 / (step + 1)})
        self.states: list[int] = []  # images seen at each saved state
        self.grids: list[str] = []

    def step(self) -> dict[str, float]:
        with torch.no_grad():
            self.w.weight.add_(0.1)
        return self.stats_at(self.progress.step)

    def metrics_row(self, img_s: float) -> dict:
        return {"images_seen": self.progress.images_seen, "step": self.progress.step, "img_s": img_s}

    def save_checkpoint(self) -> None:
        self.states.append(self.progress.images_seen)

    def save_grid(self, name: str) -> None:
        self.grids.append(name)

    def trained(self) -> list[torch.nn.Module]:
        return [self.w]


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in RunLayout(run_dir).metrics.read_text().splitlines()]


def test_a_phase_runs_to_its_end_with_rows_states_grids_and_a_digest(tmp_path):
    phase = ToyPhase(tmp_path)
    digests = run_phase(phase)
    assert (phase.progress.images_seen, phase.progress.step) == (40, 10)
    assert len(digests) == 1 and len(digests[0]) == 64
    # a state every 16 images while the phase runs, then the end's (never the end twice)
    assert phase.states == [16, 32, 40]
    assert phase.grids == ["toy-000000kimg.png"] * 3  # the start's, then one beside each periodic state
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10]
    assert list(rows[0]) == ["images_seen", "step", "img_s", "loss_toy"]  # the phase's fields, then the window means
    assert rows[0]["loss_toy"] == round((1 / 1 + 1 / 2) / 2, 6)


def test_a_stat_some_steps_lack_is_averaged_over_the_steps_that_have_it():
    window = MetricWindow()
    window.add({"loss": 1.0, "r1": 3.0}, 8)
    window.add({"loss": 2.0}, 8)
    window.add({"loss": 1.0 / 3}, 8)
    assert window.means() == {"loss": round((3 + 1 / 3) / 3, 6), "r1": 3.0}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_any_non_finite_stat_stops_the_phase_with_the_runtime_exit_code(tmp_path, bad):
    phase = ToyPhase(tmp_path, stats_at=lambda step: {"loss_toy": 0.5, "p_side": bad if step == 3 else 0.1})
    with pytest.raises(NsganError) as err:
        run_phase(phase)
    assert err.value.exit_code == EXIT_RUNTIME
    message = str(err.value)
    assert "toy training diverged" in message and "p_side" in message and "lower toy.lr" in message
    assert len(message.splitlines()) == 1


def test_resuming_drops_the_rows_logged_after_the_state(tmp_path):
    run_phase(ToyPhase(tmp_path, total=24))  # rows at 8, 16, 24 images
    # as after a crash at 24 with the last complete state at 16: the row at 24 was lost progress
    resumed = ToyPhase(tmp_path, total=40, progress=Progress(images_seen=16, step=4), resumed=True)
    run_phase(resumed)
    assert [r["images_seen"] for r in _rows(tmp_path)] == [8, 16, 24, 32, 40]
    assert resumed.grids == ["toy-000000kimg.png"]  # the start's grid only for a phase at images seen 0


def test_ctrl_c_in_a_step_saves_a_state_at_that_step_boundary_and_gives_the_handler_back(tmp_path):
    def stats_at(step):
        if step == 2:  # inside the third step
            os.kill(os.getpid(), signal.SIGINT)
        return {"loss_toy": 1.0}

    phase = ToyPhase(tmp_path, stats_at=stats_at)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_phase(phase)
        after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, outer)
    assert phase.progress.images_seen == 12 and phase.states == [12]  # the third step was finished, then saved
    assert after is signal.default_int_handler


def test_ctrl_c_in_the_encoder_phase_of_nsgan_train_saves_and_the_resume_is_exact(tiny_shards, tmp_path, monkeypatch):
    """Every phase stops at a step boundary, not only the GAN: a first Ctrl-C in the encoder phase keeps the
    step under way, saves the encoder's state, and the resumed run ends with the uninterrupted run's model."""
    from nsgan.train import encoder_loop

    base = [*TINY, f"data.normal={tiny_shards / 'normal'}", f"data.abnormal={tiny_shards / 'abnormal'}",
            "encoder.kimg=0.064", "encoder.batch=8", "encoder.log_every=2"]
    uninterrupted = train(load_config(None, [*base, f"run_dir={tmp_path / 'full'}"]))
    real, calls = encoder_loop.izif_loss, {"n": 0}

    def izif_with_ctrl_c(*args, **kwargs):  # the encoder's 3rd step, before its update
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(encoder_loop, "izif_loss", izif_with_ctrl_c)
    overrides = [*base, f"run_dir={tmp_path / 'split'}"]
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(load_config(None, overrides))
    finally:
        signal.signal(signal.SIGINT, outer)
    monkeypatch.setattr(encoder_loop, "izif_loss", real)
    latest = json.loads(RunLayout(tmp_path / "split").encoder.latest.read_text())
    assert latest["images_seen"] == 3 * 8
    resumed = train(load_config(None, overrides), resume=True)
    assert_same_model(resumed, uninterrupted)


def test_the_fixed_length_hooks_name_grids_by_kimg():
    phase = SimpleNamespace(acc=_Acc(), progress=Progress(images_seen=3000), total=4000, grid_prefix="cmp", grids=[])
    phase.save_grid = phase.grids.append
    assert FixedLengthPhase.next_step(phase) is True
    FixedLengthPhase.saved_periodic(phase)
    FixedLengthPhase.starting(phase)  # not at the start: no grid
    assert phase.grids == ["cmp-000003kimg.png"]

"""Experiment trackers through accelerate (`train.log_with`): which ones, errors at config time, none.

The 2-process run that checks the TensorBoard event files themselves (scalars at metrics.jsonl's
steps, grids at phase ends, one writing process) is test_training.py's two-process test; the
resume after a kill is checked there too, and the encoder's run in test_encoder.py.
"""

from __future__ import annotations

import pytest

from nsgan.train import tracking
from nsgan.cli.main import main as cli
from nsgan.train.config import load_config
from nsgan.common.errors import ConfigError


def _train_cli(tmp_path, overrides, *extra):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("seed: 0\n")
    return cli(["train", "--config", str(cfg), *overrides, *extra])


def test_log_with_takes_a_name_a_list_or_commas_and_defaults_to_auto(tiny_overrides):
    assert load_config(None, tiny_overrides).train.log_with == ["auto"]
    assert load_config(None, [*tiny_overrides, "train.log_with=none"]).train.log_with == ["none"]
    assert load_config(None, [*tiny_overrides, "train.log_with=[tensorboard, wandb]"]).train.log_with == ["tensorboard", "wandb"]
    assert load_config(None, [*tiny_overrides, "train.log_with=tensorboard,mlflow"]).train.log_with == ["tensorboard", "mlflow"]
    with pytest.raises(ConfigError, match="train.log_with.*cannot be combined"):
        load_config(None, [*tiny_overrides, "train.log_with=[none, tensorboard]"])


def test_auto_is_tensorboard_when_installed_else_none(monkeypatch):
    monkeypatch.setattr(tracking, "tensorboard_usable", lambda: True)
    assert tracking.resolve_log_with(["auto"]) == ["tensorboard"]
    monkeypatch.setattr(tracking, "tensorboard_usable", lambda: False)
    assert tracking.resolve_log_with(["auto"]) is None
    assert tracking.resolve_log_with(["none"]) is None and tracking.resolve_log_with([]) is None


def test_hyperparameters_are_the_config_flattened_to_scalars_and_strings(tiny_overrides):
    flat = tracking.flat_hparams(load_config(None, tiny_overrides).to_dict())
    assert flat["loss.gamma"] == 0.2 and flat["model.resolution"] == 16 and flat["schedule.batch.8"] == 16
    assert flat["train.log_with"] == "auto" and flat["train.display"] is False
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())


def test_an_unknown_tracker_is_one_line_exit_2_before_anything_is_written(tiny_overrides, tmp_path, capsys):
    code = _train_cli(tmp_path, tiny_overrides, "train.log_with=tensorbored")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "train.log_with" in err[0] and "'tensorbored'" in err[0] and "tensorboard" in err[0]
    assert not (tmp_path / "run").exists()


def test_a_named_tracker_without_its_package_names_the_package(tiny_overrides, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tracking, "tensorboard_usable", lambda: False)  # as on a machine without nsgan[tracking]
    code = _train_cli(tmp_path, tiny_overrides, "train.log_with=tensorboard")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "train.log_with" in err[0] and "pip install 'nsgan[tracking]'" in err[0]
    assert not (tmp_path / "run").exists()  # the run folder the lock made is removed again
    monkeypatch.setattr(tracking, "_available", lambda name: name == "tensorboard")
    with pytest.raises(ConfigError, match=r"names wandb, but its package \(wandb\) is not installed; pip install wandb"):
        tracking.resolve_log_with(["tensorboard", "wandb"])


def test_log_with_none_writes_no_event_files(tiny_overrides, tmp_path):
    code = _train_cli(tmp_path, [*tiny_overrides, "schedule.total_kimg=0.064", "train.log_with=none"])
    run = tmp_path / "run"
    assert code == 0 and (run / "model.safetensors").is_file() and (run / "metrics.jsonl").read_text()
    assert not (run / "tb").exists() and not list(run.rglob("events.out.tfevents.*"))

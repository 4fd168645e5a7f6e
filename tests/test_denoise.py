"""A comparator trained through the noise (issue 27 item 2, `comparator.denoise: exclude`): on a planted dirty
folder the out-of-fold fold comparators name the dirty images, the final C never draws them and so learns
something else than the C trained on everything; a stopped denoise resumes without retraining finished folds;
the model file and its card say what was left out; bad values are one line with an exit code."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from nsgan.cli.main import main as cli
from nsgan.common.errors import EXIT_USAGE
from nsgan.data.folds import assign_folds, fold_scale, held_out, pooling_scale
from nsgan.data.shards import write_shards
from nsgan.models.model_file import load_model
from nsgan.train import comparator_loop
from nsgan.train.comparator_loop import SOURCES_SEEN
from nsgan.train.config import load_config
from nsgan.train import denoise
from nsgan.train.denoise import DENOISE, FOLD_MODEL, FOLDS, RECORD, SCORES, SUSPECTS, auto_skip, denoise_normals
from nsgan.train.pipeline import train

from .conftest import TINY, smooth_material

N_CLEAN, N_DIRTY = 12, 2
# C and its fold comparators: a few dozen steps of a small C that reads x alone
C_KEYS = ["comparator.reference=none", "comparator.width=8", "comparator.batch=16", "comparator.kimg=1.6",
          "comparator.checkpoint_kimg=0.8", "comparator.denoise_kimg=1.6", "comparator.mil_bags=0"]


def _dirty(img: np.ndarray, rng) -> np.ndarray:
    """A strong, obvious defect: a bright 5×5 square and a dark bar, at full contrast."""
    img = img.copy()
    y, x = rng.integers(3, 24, size=2)
    img[y:y + 5, x:x + 5] = 1.0
    img[(y + 12) % 28:(y + 12) % 28 + 2, 4:28] = 0.0
    return img


@pytest.fixture(scope="module")
def dirty(tmp_path_factory) -> dict:
    """A 'normal' folder with two planted defective images and a tiny model trained by `nsgan train` with denoise."""
    root = tmp_path_factory.mktemp("denoise")
    rng = np.random.default_rng(0)
    folder = root / "good"
    folder.mkdir()
    names = {}
    for i in range(N_CLEAN + N_DIRTY):
        img = smooth_material(rng, 32)
        if i >= N_CLEAN:
            img = _dirty(img, rng)
        rel = f"img{i:02d}.png"
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / rel)
        names[rel] = i >= N_CLEAN
    write_shards(folder, None, None, tile=16, out=root / "shards", stride=8, channels=1, seed=0)
    keys = [*TINY, "loss.gamma=0", "encoder.kimg=0", "train.log_with=none", *C_KEYS, f"data.normal={root / 'shards' / 'normal'}"]
    model = train(load_config(None, [*keys, "comparator.denoise=exclude", f"run_dir={root / 'run'}"]))
    return {"root": root, "folder": folder, "names": names, "model": model, "keys": keys,
            "dirty": sorted(n for n, d in names.items() if d), "run": root / "run" / "comparator"}


def test_the_dirty_images_are_suspects_and_the_final_comparator_never_draws_them(dirty, tmp_path):
    run = dirty["run"]
    suspects = (run / DENOISE / SUSPECTS).read_text().split()
    assert set(dirty["dirty"]) <= set(suspects), suspects  # the planted images are found
    assert len(suspects) <= N_DIRTY + 1  # and not much else
    record = json.loads((run / DENOISE / RECORD).read_text())
    assert record["folds"] == 2 and record["z"] == 2.0 and record["excluded"] == suspects
    assert {r["path"] for r in record["rows"]} == set(dirty["names"])
    # each fold's C drew only the other fold's images, and scored its own
    assignment = assign_folds(dirty["names"], 2, seed=0)
    for fold in (0, 1):
        held = set(held_out(assignment, fold))
        seen = json.loads((run / DENOISE / FOLDS / str(fold) / "comparator" / SOURCES_SEEN).read_text())
        assert set(seen["seen"]) == set(dirty["names"]) - held
        assert set(json.loads((run / DENOISE / FOLDS / str(fold) / SCORES).read_text())["held_out"]) == held
    # the final C: every image but the suspects, never a suspect
    seen = json.loads((run / SOURCES_SEEN).read_text())
    assert set(seen["held_out"]) == set(suspects) and set(seen["seen"]) == set(dirty["names"]) - set(suspects)
    # recorded in the model file and on its card
    m = load_model(dirty["model"])
    d = m.meta["comparator"]["denoise"]
    assert d["excluded"] == suspects and d["excluded_images"] == len(suspects) and d["list_file"].endswith(SUSPECTS)
    assert m.meta["comparator"]["trained_on"]["held_out_images"] == len(suspects)
    card = (dirty["model"].parent / "README.md").read_text()
    assert f"{len(suspects)} of {N_CLEAN + N_DIRTY} normal images (exclude: robust z > 2 out-of-fold, 2 folds" in card
    assert dirty["dirty"][0] in card
    # the same model's C trained on everything (denoise none) learned something else
    plain = tmp_path / "plain" / "model.safetensors"
    plain.parent.mkdir()
    shutil.copyfile(dirty["model"], plain)
    assert cli(["train-comparator", "--model", str(plain), "comparator.denoise=none"]) == 0
    p = load_model(plain)
    assert "denoise" not in p.meta["comparator"] and not (plain.parent / "comparator" / SOURCES_SEEN).exists()
    differ = [k for k, v in m.comparator.state_dict().items() if not torch.equal(v, p.comparator.state_dict()[k])]
    assert differ


def test_a_stopped_denoise_resumes_without_retraining_finished_folds(dirty, tmp_path, monkeypatch, capsys):
    model = tmp_path / "model.safetensors"
    shutil.copyfile(dirty["model"], model)
    assignment = assign_folds(dirty["names"], 2, seed=0)
    trainings = []
    real = comparator_loop.train_comparator

    def stops_at_fold_1(*args, **kwargs):
        held = sorted(kwargs["exclude_sources"])
        trainings.append(held)
        if held == held_out(assignment, 1) and len(trainings) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(comparator_loop, "train_comparator", stops_at_fold_1)  # the folds' trainings, not the outer call
    argv = ["train-comparator", "--model", str(model), "comparator.denoise=exclude"]
    assert cli(argv) != 0
    run = tmp_path / "comparator"
    assert trainings == [held_out(assignment, 0), held_out(assignment, 1)]
    assert (run / DENOISE / FOLDS / "0" / SCORES).is_file() and not (run / DENOISE / FOLDS / "1" / SCORES).exists()
    kept = (run / DENOISE / FOLDS / "0" / FOLD_MODEL).read_bytes()
    capsys.readouterr()
    assert cli(argv) != 0  # a fresh run into a folder holding a begun denoise is refused
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --resume" in err[0], err
    assert cli([*argv, "--resume"]) == 0
    assert trainings[2:] == [held_out(assignment, 1)]  # only the unfinished fold was trained
    assert (run / DENOISE / FOLDS / "0" / FOLD_MODEL).read_bytes() == kept
    assert (run / DENOISE / SUSPECTS).read_text() == (dirty["run"] / DENOISE / SUSPECTS).read_text()


@pytest.mark.parametrize("key, says", [
    ("comparator.denoise=soft", "key 'comparator.denoise' must be one of auto, none, exclude, got 'soft'"),
    ("comparator.denoise_folds=1", "key 'comparator.denoise_folds' must be ≥ 2"),
    ("comparator.denoise_z=0", "key 'comparator.denoise_z' must be a finite robust z-score > 0"),
    ("comparator.denoise_kimg=-1", "key 'comparator.denoise_kimg' must be > 0"),
    ("comparator.denoise_folds=99", "comparator.denoise_folds: 99 folds but the folder holds only 14 image(s)"),
])
def test_bad_denoise_values_are_one_line_with_an_exit_code(dirty, tmp_path, capsys, key, says):
    model = tmp_path / "model.safetensors"
    shutil.copyfile(dirty["model"], model)
    argv = ["train-comparator", "--model", str(model), "comparator.denoise=exclude", key]
    assert cli(argv) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "comparator" / DENOISE).exists()


def test_probability_scores_are_pooled_on_the_logit_scale_where_a_saturated_top_stands_out():
    """40 % of a fold dirty, their C scores piled up near 1 (as at ε 0.4 on visible brick): on the raw scale median and
    MAD put none of them 2 MADs out; on the logit scale the most confident ones are, and no clean image is."""
    rng = np.random.default_rng(0)
    clean, dirty = rng.uniform(0.05, 0.85, 60), 1 - 10 ** rng.uniform(-3.5, -1, 40)
    scores = np.concatenate([clean, dirty])
    assert not (fold_scale(scores) > 2).any()
    z = fold_scale(pooling_scale(scores))
    assert (z[60:] > 2).sum() >= 5 and not (z[:60] > 2).any()
    assert np.array_equal(pooling_scale(np.array([0.5, 3.0])), [0.5, 3.0])  # not probabilities: as they are


def test_nsgan_train_stopped_in_a_fold_resumes_there(dirty, tmp_path, monkeypatch):
    """The pipeline's comparator phase denoises too: `nsgan train --resume` after a stop in fold 1 keeps fold 0."""
    cfg = load_config(None, [*dirty["keys"], "comparator.denoise=exclude", f"run_dir={tmp_path / 'run'}"])
    assignment = assign_folds(dirty["names"], 2, seed=0)
    trainings = []
    real = comparator_loop.train_comparator

    def stops_in_fold_1(*args, **kwargs):
        trainings.append(sorted(kwargs.get("exclude_sources") or ()))
        if trainings[-1] == held_out(assignment, 1) and len(trainings) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(comparator_loop, "train_comparator", stops_in_fold_1)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    fold0 = tmp_path / "run" / "comparator" / DENOISE / FOLDS / "0"
    kept = (fold0 / SCORES).read_bytes()
    train(cfg, resume=True)
    assert trainings[2:] == [held_out(assignment, 1)]  # fold 0 was not trained again
    assert (fold0 / SCORES).read_bytes() == kept
    assert load_model(tmp_path / "run" / "model.safetensors").meta["comparator"]["denoise"]["folds"] == 2


def test_auto_denoise_cuts_folds_only_where_the_folder_can_hold_them(dirty, tmp_path, monkeypatch):
    shards = sorted(str(p) for p in (dirty["root"] / "shards" / "normal").glob("*.tar"))
    auto = load_config(None, [*dirty["keys"], f"run_dir={tmp_path}"])
    assert auto.comparator.denoise == "auto"  # the default

    class FoldTrained(Exception):
        pass

    def train_fold(*args):
        raise FoldTrained

    def run(normal_shards):
        return denoise_normals(auto, normal_shards, tmp_path / "run", dirty["model"], "basis", train_fold)

    skipped = run(shards)
    assert skipped.record["skipped"] == "14 normal images: 2 folds need at least 8 each (16)" and not skipped.excluded
    monkeypatch.setattr(denoise, "MIN_FOLD_IMAGES", 7)
    with pytest.raises(FoldTrained):  # 7 a fold: auto acts as exclude
        run(shards)
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(shards[0], loose)  # a shard without its manifest: no names to cut folds by
    assert "no shard manifest" in run([str(loose / shards[0].rsplit("/", 1)[1])]).record["skipped"]
    assert auto_skip(load_config(None, [*dirty["keys"], "comparator.denoise=none"]), list(dirty["names"])) is None


def test_an_auto_denoise_that_did_not_run_says_so_in_the_model_file_and_card(dirty, tmp_path, capsys):
    model = tmp_path / "model.safetensors"
    shutil.copyfile(dirty["model"], model)
    assert cli(["train-comparator", "--model", str(model), "comparator.denoise=auto", "comparator.kimg=0.032"]) == 0
    assert "comparator.denoise auto trains no folds: 14 normal images" in capsys.readouterr().out
    d = load_model(model).meta["comparator"]["denoise"]
    assert d["mode"] == "auto" and d["excluded"] == [] and d["skipped"].startswith("14 normal images")
    assert not (tmp_path / "comparator" / DENOISE).exists()
    card = (tmp_path / "README.md").read_text()
    assert "none: comparator.denoise auto did not run (14 normal images: 2 folds need at least 8 each (16))" in card

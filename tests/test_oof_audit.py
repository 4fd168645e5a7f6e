"""The out-of-fold audit (issue 27): every image of the training folder is scored by a comparator that never
saw it, trained through the product's comparator trainer; folds are deterministic and balanced; a stopped
k-fold audit resumes without retraining finished folds; bad fold settings are one line with an exit code."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from nsgan.train import fold_comparator
from nsgan.cli.main import main as cli
from nsgan.common.errors import EXIT_DATA, EXIT_USAGE, ConfigError, OutputError
from nsgan.data.folds import assign_folds, fold_scale, fold_z, held_out, read_fold_file
from nsgan.data.shards import write_shards
from nsgan.evaluate.audit import CSV, FOLDS, ROWS, AuditResult, AuditRow, _pool, audit, audit_crossfit, plan_folds
from nsgan.models.model_file import comparator_training_config, load_model, read_metadata
from nsgan.train.comparator_loop import SOURCES_SEEN
from nsgan.train.config import load_config
from nsgan.train.fold_comparator import TRAINED, train_fold
from nsgan.train.pipeline import train

from .conftest import TINY, write_dirty_folder

N_CLEAN, N_DIRTY = 9, 3
# the fold comparators: a few dozen steps of the model's own comparator config
FOLD_OVERRIDES = ["comparator.kimg=0.128", "comparator.checkpoint_kimg=0.064"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A 'normal' folder with hidden defective images (some in a subfolder) and a tiny model with C trained on all of it."""
    root = tmp_path_factory.mktemp("oof")
    rng = np.random.default_rng(0)
    folder = root / "good"
    names = write_dirty_folder(folder, rng, N_CLEAN, N_DIRTY, 32, sub_every=4)
    write_shards(folder, None, None, tile=16, out=root / "shards", stride=8, channels=1, seed=0)
    cfg = load_config(None, [*TINY, "loss.gamma=0", "encoder.kimg=0", "train.log_with=none",
                             "comparator.kimg=0.128", "comparator.reference=none", "comparator.width=8", "comparator.batch=16",
                             f"data.normal={root / 'shards' / 'normal'}", f"run_dir={root / 'run'}"])
    return {"root": root, "folder": folder, "names": names, "model": train(cfg), "cfg": cfg}


def _fold_cfg(trained):
    """The config the CLI's fold comparators get: the model's own with FOLD_OVERRIDES."""
    return load_config(None, [*TINY, "loss.gamma=0", "encoder.kimg=0", "train.log_with=none",
                              "comparator.reference=none", "comparator.width=8", "comparator.batch=16", *FOLD_OVERRIDES,
                              f"data.normal={trained['root'] / 'shards' / 'normal'}", f"run_dir={trained['root'] / 'run'}"])


def test_folds_are_deterministic_and_balanced():
    names = [f"d{i % 3}/img{i:03d}.png" for i in range(23)]
    folds = assign_folds(names, 4, seed=7)
    assert folds == assign_folds(list(reversed(names)), 4, seed=7)  # not the order a disk lists files
    assert sorted(folds) == sorted(names) and set(folds.values()) == {0, 1, 2, 3}
    assert sorted(len(held_out(folds, f)) for f in range(4)) == [5, 6, 6, 6]
    assert assign_folds(names, 4, seed=8) != folds  # the seed moves images between folds
    with pytest.raises(ConfigError, match="at least 2"):
        assign_folds(names, 1)
    with pytest.raises(ConfigError, match="24 folds but the folder holds only 23"):
        assign_folds(names, 24)


def test_a_fold_file_must_name_the_folder_exactly(tmp_path):
    names = ["a.png", "b.png", "c/d.png"]
    f = tmp_path / "folds.json"
    f.write_text(json.dumps({"a.png": 0, "b.png": 1, "c/d.png": 1}))
    assert read_fold_file(f, names) == {"a.png": 0, "b.png": 1, "c/d.png": 1}
    f.write_text(json.dumps({"a.png": 0, "b.png": 1}))
    with pytest.raises(Exception, match="misses 1 image"):
        read_fold_file(f, names)
    f.write_text(json.dumps({"a.png": 0, "b.png": 2, "c/d.png": 2}))
    with pytest.raises(ConfigError, match="fold 1"):
        read_fold_file(f, names)


def test_fold_scale_puts_two_comparators_on_one_scale():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.1, 0.01, 50), rng.normal(5.0, 2.0, 50)  # a quiet and a loud C, the same kind of fold
    a[0], b[0] = 0.2, 25.0  # each fold's one outlier, ten of its spreads out
    za, zb = fold_scale(a), fold_scale(b)
    assert abs(np.median(za)) < 1e-9 and abs(np.median(zb)) < 1e-9
    assert za[0] > np.sort(zb)[-2] and zb[0] > np.sort(za)[-2]  # both outliers above every normal of either fold


def test_the_audit_pools_folds_as_denoise_does_on_the_logit_scale_of_probabilities(tmp_path):
    """One pooling for both out-of-fold paths: a fold whose dirty images pile up near 1 (40 % of it, as at ε 0.4 on
    visible brick) puts none of them 2 MADs out on the raw scale; the audit's pooled rows are `fold_z`, the logit's
    robust z that denoise takes, so the most confident dirty ones stand out and no clean one does."""
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.uniform(0.05, 0.85, 60), 1 - 10 ** rng.uniform(-3.5, -1, 40)])
    rows = [AuditRow(i, f"{i}.png", float(v), 0, None, 0, [8, 8]) for i, v in enumerate(scores)]
    pooled = {r.path: r.score for r in _pool(tmp_path, tmp_path, [(0, AuditResult(tmp_path, rows, [], "", 0))])}
    z = np.array([pooled[f"{i}.png"] for i in range(100)])
    assert np.allclose(z, fold_z(scores)) and not (fold_scale(scores) > 2).any()
    assert (z[60:] > 2).sum() >= 5 and not (z[:60] > 2).any()
    assert np.array_equal(fold_z(np.array([0.5, 3.0, 1.0])), fold_scale(np.array([0.5, 3.0, 1.0])))  # not probabilities


def test_each_image_is_scored_by_a_comparator_that_never_saw_it(trained, tmp_path, capsys):
    out = tmp_path / "oof"
    argv = ["audit", "--model", str(trained["model"]), "--data", str(trained["folder"]), "--out", str(out), "--folds", "2",
            "--fold-seed", "3", "--no-progress", *FOLD_OVERRIDES]
    assert cli(argv) == 0
    assert "out-of-fold (2 folds" in capsys.readouterr().out
    assignment = assign_folds(trained["names"], 2, seed=3)
    with open(out / CSV, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert sorted(t["path"] for t in table) == sorted(trained["names"])
    for fold in (0, 1):
        held = set(held_out(assignment, fold))
        seen = json.loads((out / FOLDS / str(fold) / "comparator" / SOURCES_SEEN).read_text())
        # what the fold's trainer actually drew: only the other fold's images, and all of them
        assert set(seen["held_out"]) == held and set(seen["seen"]) == set(trained["names"]) - held
        fold_rows = {json.loads(line)["path"]: json.loads(line) for line in (out / FOLDS / str(fold) / ROWS).read_text().splitlines()[1:]}
        assert set(fold_rows) == held  # the fold's model scored exactly its held-out images
        for t in (t for t in table if t["path"] in held):
            assert int(t["fold"]) == fold and abs(float(t["raw_score"]) - fold_rows[t["path"]]["score"]) < 1e-5 * (1 + abs(float(t["raw_score"])))
    scores = [float(t["score"]) for t in table]
    assert scores == sorted(scores, reverse=True)
    header = json.loads((out / ROWS).read_text().splitlines()[0])
    assert header["sample"] == "out-of-fold" and header["crossfit"]["folds"] == 2 and header["crossfit"]["fold_seed"] == 3
    page = (out / "index.html").read_text()
    assert "Out-of-fold: each image was scored by a comparator trained on the other folds only" in page
    # the plain audit of the same folder says it is in-sample
    plain = audit(trained["model"], trained["folder"], tmp_path / "plain")
    assert plain.sample == "in-sample" and "In-sample" in (tmp_path / "plain" / "index.html").read_text()


def test_the_folds_retrain_the_models_own_C_not_the_config_of_the_run_that_stored_it(trained, tmp_path, capsys):
    """`nsgan train-comparator` may add C with other settings and other shards than the GAN run stored in the file:
    the fold comparators follow C (its width, kimg and shards), and the in-sample check asks C's folder."""
    import shutil
    other = tmp_path / "good2"
    shutil.copytree(trained["folder"], other)
    write_shards(other, None, None, tile=16, out=tmp_path / "shards2", stride=8, channels=1, seed=0)
    model = tmp_path / "m" / "model.safetensors"
    model.parent.mkdir()
    shutil.copy2(trained["model"], model)
    assert cli(["train-comparator", "--model", str(model), "--run-dir", str(tmp_path / "c"), "comparator.width=4",
                "comparator.kimg=0.064", f"data.normal={tmp_path / 'shards2' / 'normal'}", "seed=5"]) == 0
    meta = read_metadata(model)
    assert meta["config"]["comparator"]["width"] == 8 and meta["comparator"]["config"]["width"] == 4
    tree = comparator_training_config(meta)
    assert tree["comparator"]["width"] == 4 and tree["seed"] == 5 and tree["data"]["normal"].endswith("shards2/normal")
    assert plain_audit_is_in_sample(model, other, tmp_path / "plain")
    out = tmp_path / "oof"
    assert cli(["audit", "--model", str(model), "--data", str(other), "--out", str(out), "--folds", "2", "--no-progress"]) == 0
    for fold in (0, 1):
        fold_meta = read_metadata(out / FOLDS / str(fold) / "model.safetensors")["comparator"]
        assert fold_meta["config"]["width"] == 4 and fold_meta["kimg"] == pytest.approx(0.064, abs=0.02)
        assert fold_meta["data"]["normal"].endswith("shards2/normal")
    # the GAN's folder is not what C (and so the folds) trained on: one line, not folds trained on the wrong images
    assert cli(["audit", "--model", str(model), "--data", str(trained["folder"]), "--out", str(tmp_path / "wrong"),
                "--folds", "2", "--no-progress"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not the folder the comparator's shards were cut from" in err[0] and "good2" in err[0]


def test_by_default_the_training_folder_is_audited_out_of_fold_and_another_folder_by_the_model(trained, tmp_path, capsys):
    """audit.folds defaults to 2 (stored in the model's config): `nsgan audit` with no fold flag cross-fits the folder
    C trained on, and scores any other folder with the model itself (held-out: the model never saw it)."""
    import shutil
    assert load_config(None, [*TINY, "data.normal=x", "loss.gamma=0"]).audit.folds == 2
    assert cli(["audit", "--model", str(trained["model"]), "--data", str(trained["folder"]), "--out", str(tmp_path / "own"),
                "--no-progress"]) == 0
    assert "out-of-fold (2 folds" in capsys.readouterr().out
    assert json.loads((tmp_path / "own" / ROWS).read_text().splitlines()[0])["sample"] == "out-of-fold"
    other = tmp_path / "new-photos"
    shutil.copytree(trained["folder"], other)
    assert cli(["audit", "--model", str(trained["model"]), "--data", str(other), "--out", str(tmp_path / "new"),
                "--no-progress"]) == 0
    assert "out-of-fold" not in capsys.readouterr().out and not (tmp_path / "new" / FOLDS).exists()
    assert json.loads((tmp_path / "new" / ROWS).read_text().splitlines()[0])["sample"] == "held-out"


def plain_audit_is_in_sample(model, folder, out) -> bool:
    return audit(model, folder, out).sample == "in-sample"


def test_a_stopped_kfold_audit_resumes_without_retraining_finished_folds(trained, tmp_path, monkeypatch):
    cfg, out, model = _fold_cfg(trained), tmp_path / "stopped", trained["model"]
    assignment = plan_folds(trained["folder"], 3, seed=1)
    trainings = []
    real = fold_comparator.train_comparator

    def counted(*args, **kwargs):
        trainings.append(sorted(kwargs["exclude_sources"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(fold_comparator, "train_comparator", counted)

    def stops_at_fold_2(fold, held, fold_dir):
        if fold == 2:
            raise KeyboardInterrupt
        return train_fold(model, cfg, "<test>", fold_dir, held)

    with pytest.raises(KeyboardInterrupt):
        audit_crossfit(model, trained["folder"], out, assignment, stops_at_fold_2, split={"fold_seed": 1})
    assert trainings == [held_out(assignment, 0), held_out(assignment, 1)]
    kept = {f: (out / FOLDS / str(f) / "model.safetensors").read_bytes() for f in (0, 1)}
    scored = {f: (out / FOLDS / str(f) / ROWS).read_bytes() for f in (0, 1)}

    def every_fold(fold, held, fold_dir):
        return train_fold(model, cfg, "<test>", fold_dir, held)

    result = audit_crossfit(model, trained["folder"], out, assignment, every_fold, split={"fold_seed": 1})
    assert trainings[2:] == [held_out(assignment, 2)]  # only the unfinished fold was trained
    assert result.scored_now == len(held_out(assignment, 2))  # and only its images scored
    assert all((out / FOLDS / str(f) / "model.safetensors").read_bytes() == kept[f] for f in (0, 1))
    assert all((out / FOLDS / str(f) / ROWS).read_bytes() == scored[f] for f in (0, 1))
    assert sorted(r.path for r in result.rows) == sorted(trained["names"])
    assert all((out / FOLDS / str(f) / TRAINED).is_file() for f in range(3))
    # another split in the same OUT is refused, as another model is
    other = plan_folds(trained["folder"], 3, seed=2)
    with pytest.raises(OutputError, match="an audit of another crossfit"):
        audit_crossfit(model, trained["folder"], out, other, every_fold, split={"fold_seed": 2})


@pytest.mark.parametrize("extra, fold_file, code, says", [
    (["--folds", "99"], None, EXIT_USAGE, "--folds: 99 folds but the folder holds only 12 image(s)"),
    (["--folds", "1"], None, EXIT_USAGE, "--folds: 1 folds; cross-fitting needs at least 2"),
    ([], {"img01.png": 0, "no/such.png": 1}, EXIT_DATA, "names 1 image(s) not in the folder, e.g. no/such.png"),
])
def test_bad_fold_settings_are_one_line_with_an_exit_code(trained, tmp_path, capsys, extra, fold_file, code, says):
    if fold_file is not None:
        names = dict.fromkeys(trained["names"], 0)
        names.update(fold_file)
        (tmp_path / "folds.json").write_text(json.dumps(names))
        extra = ["--fold-file", str(tmp_path / "folds.json")]
    argv = ["audit", "--model", str(trained["model"]), "--data", str(trained["folder"]), "--out", str(tmp_path / "o"),
            "--no-progress", *extra]
    assert cli(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "o").exists()


def test_a_fold_stopped_mid_training_resumes_to_the_same_comparator(trained, tmp_path):
    """A fold whose run left a state but no trained.json (stopped mid-fold) continues that state exactly:
    the same C and the same record of what it saw as a fold trained in one go."""
    full = _fold_cfg(trained)
    half = load_config(None, [*TINY, "loss.gamma=0", "encoder.kimg=0", "train.log_with=none", "comparator.reference=none",
                              "comparator.width=8", "comparator.batch=16", "comparator.kimg=0.064",
                              "comparator.checkpoint_kimg=0.064", f"data.normal={trained['root'] / 'shards' / 'normal'}",
                              f"run_dir={trained['root'] / 'run'}"])
    held = frozenset(held_out(plan_folds(trained["folder"], 2, seed=5), 0))
    whole = train_fold(trained["model"], full, "<test>", tmp_path / "whole", held)
    train_fold(trained["model"], half, "<test>", tmp_path / "split", held)
    (tmp_path / "split" / TRAINED).unlink()  # as if stopped after the half-way state, before the fold was done
    split = train_fold(trained["model"], full, "<test>", tmp_path / "split", held)
    a, b = load_model(whole), load_model(split)
    assert a.meta["comparator"]["images_seen"] == b.meta["comparator"]["images_seen"] == 128
    for (ka, va), (kb, vb) in zip(a.comparator.state_dict().items(), b.comparator.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    seen = [json.loads((tmp_path / d / "comparator" / SOURCES_SEEN).read_text()) for d in ("whole", "split")]
    assert seen[0] == seen[1] and not set(seen[0]["seen"]) & held


def test_the_audit_section_is_validated_at_the_door(tiny_overrides):
    assert load_config(None, [*tiny_overrides, "audit.folds=3", "audit.fold_seed=4"]).audit.folds == 3
    with pytest.raises(ConfigError, match="key 'audit.folds' must be 0 \\(in-sample\\) or a number of folds ≥ 2, got 1"):
        load_config(None, [*tiny_overrides, "audit.folds=1"])
    with pytest.raises(ConfigError, match="unknown key 'audit.k'"):
        load_config(None, [*tiny_overrides, "audit.k=2"])

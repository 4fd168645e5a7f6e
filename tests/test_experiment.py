"""tools/experiments/experiment_noisy.py: the grid runs end to end on tiny budgets, resumes, and reports what it measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tools.experiments import experiment_noisy as ex

TINY_TRAIN = {
    "data": {"channels": 1, "num_workers": 0, "abnormal_fraction": 0.25},
    "model": {"resolution": 16, "latent_dim": 16, "fmap_base": 64, "fmap_max": 16},
    "loss": {"kind": "nsgan", "gamma": 0.0, "r1_gamma": 1.0},
    "schedule": {"start_resolution": 8, "batch": {8: 16, 16: 8}, "default_batch": 8, "lr": 0.002},
    "train": {"mixed_precision": "no", "log_every": 2, "grid_size": 2, "display": False},
}


@pytest.fixture
def tiny_experiment(tmp_path) -> Path:
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(TINY_TRAIN))
    cfg = {
        "seed": 0, "train_config": "train.yaml", "budget_kimg": 0.096, "eps": [0.1], "gammas": [0, "auto"],
        "search": {"iterations": 2, "restarts": 1, "lr": 0.1, "lam": 0.1},
        "detector": {"n_train": 64, "n_test": 32, "kimg": 0.032},
        "protocols": {
            "mnist": {"tile": 16, "shard_stride": 16, "score_stride": 16,
                      "build": {"n_train": 20, "n_abnormal": 4, "n_test_good": 3, "n_test_defect": 3, "size": 32}},
            "textures": {"tile": 16, "shard_stride": 16, "score_stride": 16,
                         "build": {"size": 48, "n_train": 10, "n_abnormal": 4, "n_test_good": 3, "n_test_defect": 3,
                                   "large_size": 0}},
        },
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_grid_runs_resumes_and_writes_the_table(tiny_experiment, tmp_path, capsys):
    out = tmp_path / "out"
    assert ex.main(["--config", str(tiny_experiment), "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert {(r["protocol"], r["gamma_spec"]) for r in rows} == {
        ("mnist", "0"), ("mnist", "auto"), ("textures", "0"), ("textures", "auto")}
    for r in rows:
        assert r["gamma"] == (0.0 if r["gamma_spec"] == "0" else pytest.approx(0.1 / 0.9))
        assert 0.0 <= r["image_auroc"] <= 1.0
        assert (r["pixel_auroc"] is None) == (r["protocol"] == "mnist")  # mnist has image labels only
        assert ("g_other_digit" in r) == (r["protocol"] == "mnist") and 0.0 <= r.get("g_other_digit", 0.0) <= 1.0
        assert ("g_defect_share" in r) == (r["protocol"] == "textures") and 0.0 <= r.get("g_defect_share", 0.0) <= 1.0
    # The textures detector was trained once, at the tile size, and its held-out figures kept with it.
    figures = json.loads((out / "detector" / "detector-16.json").read_text())
    assert figures["kimg"] == 0.032 and 0.0 <= figures["test_auroc"] <= 1.0
    # Same data for both γ: one protocol folder and one shard set per (protocol, ε).
    assert sorted(p.name for p in (out / "data").iterdir()) == ["mnist-eps0.1", "textures-eps0.1"]
    cfg_g = yaml.safe_load((out / "cells" / "textures-eps0.1-gammaauto" / "run" / "config.yaml").read_text())
    cfg_0 = yaml.safe_load((out / "cells" / "textures-eps0.1-gamma0" / "run" / "config.yaml").read_text())
    assert cfg_g["loss"]["gamma"] == pytest.approx(0.1 / 0.9) and cfg_0["loss"]["gamma"] == 0.0
    cfg_g["loss"]["gamma"] = cfg_g["run_dir"] = cfg_0["run_dir"] = 0
    assert cfg_g == cfg_0  # nothing else differs: data, seed, schedule, networks
    table = (out / "results.md").read_text()
    assert "| textures | 0.1 |" in table and "| mnist | 0.1 |" in table and "image auroc γ=auto" in table
    assert (out / "results.png").stat().st_size > 1000
    assert "5-NN classifier calls another digit" in table and "defect detector calls defective" in table
    capsys.readouterr()

    # A finished grid is not silently mixed with a new one ...
    assert ex.main(["--config", str(tiny_experiment), "--out", str(out)]) == 5
    assert "--resume" in capsys.readouterr().err
    # ... and --resume skips every finished cell (nothing retrained or rescored).
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/cell.json")}
    assert ex.main(["--config", str(tiny_experiment), "--out", str(out), "--resume"]) == 0
    assert "finished earlier, skipped" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("cells/*/cell.json")} == stamp

    # A cell killed while scoring (model written, no cell.json) is rescored, not retrained.
    cell = out / "cells" / "textures-eps0.1-gammaauto"
    first = json.loads((cell / "cell.json").read_text())
    (cell / "cell.json").unlink()
    model_time = (cell / "run" / "model.safetensors").stat().st_mtime_ns
    assert ex.main(["--config", str(tiny_experiment), "--out", str(out), "--resume"]) == 0
    again = json.loads((cell / "cell.json").read_text())
    assert (cell / "run" / "model.safetensors").stat().st_mtime_ns == model_time
    assert again["train_s"] == 0.0 and again["image_auroc"] == first["image_auroc"]  # same search, same figures


def test_options_are_checked(tiny_experiment, tmp_path, capsys):
    base = ["--config", str(tiny_experiment), "--out", str(tmp_path / "o")]
    assert ex.main([*base, "--protocols", "caltech"]) == 2
    assert "--protocols" in capsys.readouterr().err
    assert ex.main([*base, "--eps", "0.1,1.5"]) == 2
    assert ex.main([*base, "--gammas", "0,lots"]) == 2
    assert "'lots'" in capsys.readouterr().err


def test_markdown_table_puts_gammas_side_by_side():
    rows = [{"protocol": p, "eps": 0.05, "gamma_spec": g, "image_auroc": a, "pixel_auroc": None, "aupro": None}
            for p, g, a in (("mnist", "0.2", 0.9), ("mnist", "0", 0.8))]
    lines = ex.markdown_table(rows).splitlines()
    assert lines[0].startswith("| protocol | ε | image auroc γ=0 | image auroc γ=0.2 |")
    assert lines[2].startswith("| mnist | 0.05 | 0.800 | 0.900 | – | – |")


def test_runners_sharing_a_folder_claim_cells(tmp_path):
    import subprocess
    import sys

    cell = ex.Cell("mnist", 0.1, "0")
    assert ex.claim(cell, tmp_path)  # this process owns it now
    assert not ex.claim(cell, tmp_path)  # a live owner keeps it
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "cells" / cell.name / "claim.pid").write_text(str(dead.pid))
    assert ex.claim(cell, tmp_path)  # a claim whose process is gone is taken over


def test_ink_pixel_auroc_counts_ink_only_and_matches_sklearn(tmp_path, model_file):
    """The ir_mnist diagnostic: the map's values on ink pixels only, '3' masks as positives."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from nsgan.data.imageio import read_image
    from nsgan.score.options import ScoreOptions
    from nsgan.score.search import SearchConfig
    from tools.protocols.ir_mnist import build_ir_mnist

    data = tmp_path / "ir"
    build_ir_mnist(data, epsilon=0.0, n_train=1, n_abnormal=1, n_test_good=1, n_test_defect=2)
    options = ScoreOptions(stride=16, batch=256, search=SearchConfig(iterations=2, restarts=1, lr=0.1))
    values, labels = ex.ink_pixels(model_file, data, options)
    images = sorted((data / "test").rglob("*.png"))
    assert len(values) == len(labels) == sum(int((read_image(p).max(axis=2) > 0.5).sum()) for p in images)
    masks = sorted((data / "ground_truth").rglob("*_mask.png"))
    assert labels.sum() == sum(int((read_image(m).max(axis=2) > 0.5).sum()) for m in masks)  # every mask pixel is ink
    assert 0 < labels.mean() < 1
    assert ex.ink_pixel_auroc(model_file, data, options) == pytest.approx(roc_auc_score(labels, values), abs=1e-9)


def test_diagnostic_table_lists_each_measured_diagnostic():
    rows = [{"protocol": "ir_mnist", "eps": 0.1, "gamma_spec": g, "ink_pixel_auroc": v} for g, v in (("0", 0.53), ("0.2", 0.44))]
    text = ex.diagnostic_table(rows)
    assert "ink pixels only" in text and "| 0.1 | 0.530 | 0.440 |" in text and "5-NN" not in text


def test_diagnose_names_a_protocol_missing_from_the_config(tmp_path, capsys):
    cell = tmp_path / "out" / "cells" / "ir_mnist-eps0.1-gamma0"
    cell.mkdir(parents=True)
    (cell / "cell.json").write_text(json.dumps({"protocol": "ir_mnist", "eps": 0.1, "gamma_spec": "0", "search": {}}))
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"train_config": "t.yaml", "budget_kimg": 1, "eps": [0.1], "gammas": [0],
                                   "search": {}, "protocols": {"mnist": {"tile": 16}}}))
    assert ex.main(["--config", str(cfg), "--out", str(tmp_path / "out"), "--diagnose"]) == 2
    err = capsys.readouterr().err
    assert "no 'ir_mnist' protocol" in err and "ir_mnist-eps0.1-gamma0" in err and "Traceback" not in err


def test_penalty_forms_get_their_own_cells_columns_and_configs(tiny_experiment, tmp_path):
    cfg = ex.apply_args(ex.load_experiment(tiny_experiment),
                        ex.parse_args(["--out", "x", "--gammas", "0,0.2", "--penalties", "tile,patch_mask,patch_mil"]))
    names = [c.name for c in ex.cells(cfg) if c.protocol == "textures"]
    assert names == ["textures-eps0.1-gamma0", "textures-eps0.1-gamma0.2", "textures-eps0.1-gamma0.2-patch_mask",
                     "textures-eps0.1-gamma0.2-patch_mil"]  # γ = 0 once; tile cells keep their old names
    out = tmp_path / "out"
    assert ex.main(["--config", str(tiny_experiment), "--out", str(out), "--gammas", "0.2", "--penalties",
                    "patch_mask,patch_mil", "--patch-grid", "4", "--mil-k", "2"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert {(r["protocol"], r["penalty"]) for r in rows} == {("textures", "patch_mask"), ("textures", "patch_mil"), ("mnist", "patch_mil")}
    assert not (out / "cells" / "mnist-eps0.1-gamma0.2-patch_mask" / "cell.json").exists()  # mnist has no masks
    run_cfg = yaml.safe_load((out / "cells" / "textures-eps0.1-gamma0.2-patch_mil" / "run" / "config.yaml").read_text())
    assert (run_cfg["loss"]["penalty"], run_cfg["model"]["patch_grid"], run_cfg["loss"]["mil_k"]) == ("patch_mil", 4, 2)
    table = (out / "results.md").read_text()
    assert "aupro γ=0.2 patch_mask" in table and "aupro γ=0.2 patch_mil" in table
    assert ex.main(["--config", str(tiny_experiment), "--out", str(tmp_path / "o2"), "--penalties", "patchy"]) == 2


def test_centred_abnormal_crops_get_their_own_shards_and_share_the_baseline(tiny_experiment, tmp_path):
    cfg = ex.apply_args(ex.load_experiment(tiny_experiment), ex.parse_args(["--out", "x", "--abnormal-centred", "2"]))
    assert [c.name for c in ex.cells(cfg) if c.protocol == "textures"] == ["textures-eps0.1-gamma0", "textures-eps0.1-gammaauto-centred2"]
    out = tmp_path / "out"
    assert ex.main(["--config", str(tiny_experiment), "--out", str(out), "--gammas", "0.2", "--abnormal-centred", "2"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [(r["protocol"], r["centred"]) for r in rows] == [("textures", 2)]  # mnist has no masks to centre on
    manifest = json.loads((out / "shards" / "textures-eps0.1-centred2" / "manifest.json").read_text())
    assert manifest["abnormal_centred"] == 2 and manifest["counts"]["tiles_abnormal"] > 0
    run_cfg = yaml.safe_load((out / "cells" / "textures-eps0.1-gamma0.2-centred2" / "run" / "config.yaml").read_text())
    assert run_cfg["data"]["abnormal"].endswith("textures-eps0.1-centred2/abnormal")
    assert "γ=0.2 centred2" in (out / "results.md").read_text()


def test_seeds_table_sets_runs_side_by_side_and_counts_wins(tmp_path, capsys):
    def run(folder, seed, aupros, mil_image):
        rows = [{"protocol": "textures", "eps": 0.1, "gamma_spec": g, "penalty": pen, "centred": 0, "seed": seed,
                 "image_auroc": 0.5, "pixel_auroc": 0.7, "aupro": a, "g_defect_share": 0.1}
                for (g, pen), a in zip((("0", "tile"), ("0.2", "tile"), ("0.2", "patch_mask")), aupros)]
        rows.append({"protocol": "mnist", "eps": 0.1, "gamma_spec": "0", "penalty": "tile", "centred": 0, "seed": seed,
                     "image_auroc": 0.8, "pixel_auroc": None, "aupro": None})
        rows.append({"protocol": "mnist", "eps": 0.1, "gamma_spec": "0.2", "penalty": "patch_mil", "centred": 0,
                     "seed": seed, "image_auroc": mil_image, "pixel_auroc": None, "aupro": None})
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "results.json").write_text(json.dumps(rows))
        return str(tmp_path / folder)

    folders = [run("s0", 0, (0.4, 0.5, 0.3), 0.9), run("s1", 1, (0.4, 0.3, 0.3), 0.7)]
    assert ex.main(["--out", str(tmp_path / "sum"), "--summarise", ",".join(folders)]) == 0
    text = (tmp_path / "sum" / "seeds.md").read_text()
    assert "| γ=0.2 | 0.500 (0.500, 0.500) | 0.700 (0.700, 0.700) | 0.400 (0.500, 0.300) | 0.100 (0.100, 0.100) | 1 of 2 |" in text
    assert "| γ=0.2 patch_mask | 0.500 (0.500, 0.500) | 0.700 (0.700, 0.700) | 0.300 (0.300, 0.300) | 0.100 (0.100, 0.100) | 0 of 2 |" in text
    assert "| arm | image auroc | pixel auroc | aupro | G draws a defect | aupro > γ=0 in |" in text
    assert "image auroc > γ=0 in" in text and "| γ=0.2 patch_mil | 0.800 (0.900, 0.700) | – | – | – | 1 of 2 |" in text
    assert ex.main(["--out", str(tmp_path / "sum"), "--summarise", str(tmp_path / "nothing")]) == 2
    assert "no results.json" in capsys.readouterr().err

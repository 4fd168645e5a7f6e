"""`nsgan evaluate`: planted defects found, figures agree with an independent computation, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from nsgan.cli.main import main
from nsgan.evaluate.evaluation import collect, evaluate, pick_cases
from nsgan.data.imageio import read_image, write_png
from nsgan.score.options import ScoreOptions
from nsgan.score.scorer import Scorer
from nsgan.score.search import SearchConfig
from .test_search import PatternG, TinyD, clean_image

FAST = ["--iterations", "2", "--restarts", "1", "--no-progress"]


def make_category(root: Path, n_good=4, types=("scratch", "pit"), n_defect=3, size=32, masks=True,
                  protocol: dict | None = None, rgb=False, seed=0) -> Path:
    """test/good: the clean pattern PatternG draws; test/<type>: the same with a bright patch (and its mask)."""
    rng = np.random.default_rng(seed)
    base = clean_image(size, size)[:, :, None]
    if rgb:
        base = np.repeat(base, 3, axis=2)
    (root / "test" / "good").mkdir(parents=True)
    for k in range(n_good):
        write_png(root / "test" / "good" / f"{k:03d}.png", base)
    for t in types:
        (root / "test" / t).mkdir(parents=True)
        if masks:
            (root / "ground_truth" / t).mkdir(parents=True)
        for k in range(n_defect):
            img, mask = base.copy(), np.zeros((size, size), bool)
            y, x = rng.integers(2, size - 8, 2)
            mask[y : y + 5, x : x + 5] = True
            img[mask] = 1.0
            write_png(root / "test" / t / f"{k:03d}.png", img)
            if masks:
                write_png(root / "ground_truth" / t / f"{k:03d}_mask.png", np.where(mask, 255, 0).astype(np.uint8))
    if protocol is not None:
        (root / "protocol.json").write_text(json.dumps(protocol))
    return root


def pattern_options(iterations=60) -> ScoreOptions:
    return ScoreOptions(stride=8, batch=32, search=SearchConfig(iterations=iterations, restarts=1, lr=0.05, patience=10))


def pattern_scorer() -> Scorer:
    return Scorer(PatternG(16), TinyD(), resolution=16, channels=1, options=pattern_options())


def read_scores(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------ what it measures

def test_planted_defects_are_found_and_figures_match_sklearn(tmp_path):
    data = make_category(tmp_path / "cat")
    scorer = pattern_scorer()
    m = evaluate(None, data, tmp_path / "out", scorer.options, scorer=scorer, bins=2000)

    assert m["image"]["auroc"] == 1.0 and m["image"]["f1"] == 1.0
    assert m["image"]["per_type_auroc"] == {"pit": 1.0, "scratch": 1.0}
    assert (m["image"]["n_good"], m["image"]["n_defective"]) == (4, 6)
    assert m["pixel"]["pixel_auroc"] > 0.9 and m["pixel"]["aupro"] > 0.5

    rows = read_scores(tmp_path / "out" / "scores.csv")
    assert [r["path"] for r in rows[:2]] == ["test/good/000.png", "test/good/001.png"]
    assert {r["defect_type"] for r in rows} == {"good", "pit", "scratch"}
    s = np.array([float(r["score"]) for r in rows])
    y = np.array([int(r["label"]) for r in rows])
    assert m["image"]["auroc"] == pytest.approx(roc_auc_score(y, s))

    # Pixel AUROC against sklearn on the very same maps (the search is deterministic per tile).
    maps, gts = [], []
    for r in rows:
        maps.append(scorer.score(read_image(data / r["path"])).map.ravel())
        mpath = data / "ground_truth" / r["defect_type"] / (Path(r["path"]).stem + "_mask.png")
        gts.append(read_image(mpath)[:, :, 0].ravel() > 0.5 if mpath.exists() else np.zeros(32 * 32, bool))
    exact = roc_auc_score(np.concatenate(gts), np.concatenate(maps))
    assert m["pixel"]["pixel_auroc"] == pytest.approx(exact, abs=0.01)

    for name in ("roc.png", "cases.png"):
        with Image.open(tmp_path / "out" / name) as im:
            assert im.format == "PNG" and min(im.size) > 100
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk["image"]["auroc"] == 1.0 and on_disk["search"]["iterations"] == 60
    assert not list((tmp_path / "out").glob(".nsgan-eval-*"))  # temporary maps removed


def test_cli_on_a_real_model_prints_the_table_and_refuses_to_overwrite(tmp_path, model_file, capsys):
    data = make_category(tmp_path / "cat", protocol={"pixel_masks": True})
    out = tmp_path / "out"
    assert main(["evaluate", "--model", str(model_file), "--data", str(data), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "image AUROC" in printed and "AUPRO" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= m["image"]["auroc"] <= 1.0 and 0.0 <= m["pixel"]["aupro"] <= 1.0
    assert len(read_scores(out / "scores.csv")) == 10

    assert main(["evaluate", "--model", str(model_file), "--data", str(data), "--out", str(out), *FAST]) == 5
    assert "metrics.json: exists" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(model_file), "--data", str(data), "--out", str(out), "--overwrite", *FAST]) == 0


def test_image_labels_only_when_the_protocol_says_no_masks(tmp_path):
    data = make_category(tmp_path / "cat", masks=False, protocol={"pixel_masks": False})
    scorer = pattern_scorer()
    m = evaluate(None, data, tmp_path / "out", scorer.options, scorer=scorer)
    assert m["pixel"] is None and m["image"]["auroc"] == 1.0


def test_best_and_worst_cases_are_the_extremes_of_each_label():
    scores = np.array([0.1, 0.5, 0.2, 0.9, 0.3, 0.8])
    labels = np.array([False, False, False, True, True, True])
    got = pick_cases(scores, labels, 1)
    assert got == [(3, "best defective"), (4, "worst defective"), (0, "best good"), (1, "worst good")]


# ------------------------------------------------------------------------------ bad input

def _run_bad(tmp_path, model_file, data, capsys) -> tuple[int, str]:
    out = tmp_path / "out"
    code = main(["evaluate", "--model", str(model_file), "--data", str(data), "--out", str(out), *FAST])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    assert not (out / "metrics.json").exists()
    return code, err


def test_missing_mask_when_the_protocol_promises_masks(tmp_path, model_file, capsys):
    data = make_category(tmp_path / "cat", masks=False, protocol={"pixel_masks": True})
    code, err = _run_bad(tmp_path, model_file, data, capsys)
    assert code == 3 and "test/pit/000.png: no mask" in err


def test_ground_truth_folder_missing_one_file(tmp_path, model_file, capsys):
    data = make_category(tmp_path / "cat")  # no protocol.json: masks expected since ground_truth/ exists
    (data / "ground_truth" / "scratch" / "002_mask.png").unlink()
    code, err = _run_bad(tmp_path, model_file, data, capsys)
    assert code == 3 and "test/scratch/002.png: no mask" in err and "002_mask.png" in err


def test_mask_of_the_wrong_size(tmp_path, model_file, capsys):
    data = make_category(tmp_path / "cat")
    write_png(data / "ground_truth" / "pit" / "001_mask.png", np.zeros((16, 32), np.uint8))
    code, err = _run_bad(tmp_path, model_file, data, capsys)
    assert code == 3 and "pit/001_mask.png: mask is 32x16" in err


@pytest.mark.parametrize("drop, why", [("good", "no good test images"), ("defects", "no defective test images")])
def test_no_good_or_no_defective_images(tmp_path, model_file, capsys, drop, why):
    data = make_category(tmp_path / "cat", n_good=0 if drop == "good" else 3, types=() if drop == "defects" else ("pit",))
    code, err = _run_bad(tmp_path, model_file, data, capsys)
    assert code == 3 and why in err


def test_images_the_model_cannot_take(tmp_path, model_file, capsys):
    data = make_category(tmp_path / "cat", rgb=True)
    code, err = _run_bad(tmp_path, model_file, data, capsys)
    assert code == 3 and "test/good/000.png: image has 3 channel(s), the model expects 1" in err


def test_missing_model_and_missing_folder(tmp_path, model_file, capsys):
    data = make_category(tmp_path / "cat")
    code, err = _run_bad(tmp_path, tmp_path / "nope.safetensors", data, capsys)
    assert code == 4 and "nope.safetensors" in err
    code, err = _run_bad(tmp_path, model_file, tmp_path / "empty", capsys)
    assert code == 3 and "no test folder" in err


def test_collect_reads_protocol_builder_output(tmp_path):
    from tools.protocols.textures import build_textures

    out = tmp_path / "tex"
    build_textures(out, size=64, n_train=2, n_abnormal=1, n_test_good=2, n_test_defect=3, large_size=128, seed=0)
    items, masks = collect(out)
    assert masks and sum(it.defective for it in items) == 3
    assert all(it.mask is not None and it.mask.exists() for it in items if it.defective)
    items, masks = collect(out / "large")  # the full-size pair, for tiled scoring
    assert masks and [(it.kind, it.mask is not None) for it in items] == [("good", False), ("mixed", True)]

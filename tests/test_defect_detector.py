"""tools/experiments/defect_detector.py: the textures tiles it is measured on, the product's C it trains
(`nsgan train-comparator`), and what it counts on real and generated tiles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nsgan.data.imageio import write_png
from nsgan.models.model_file import load_model
from tools.experiments import defect_detector as dd


def test_tiles_are_8_bit_and_every_other_one_holds_one_defect():
    x, y = dd.tiles(8, 32, "train", seed=3)
    assert x.shape == (8, 1, 32, 32) and y.tolist() == [0, 1] * 4
    assert torch.equal(torch.round(x * 255) / 255, x) and 0 <= float(x.min()) and float(x.max()) <= 1
    again, _ = dd.tiles(8, 32, "train", seed=3)
    assert torch.equal(x, again)  # seeded: the same detector every time
    clean, y0 = dd.tiles(8, 32, "train", seed=3, painted=False)
    assert y0.sum() == 0 and torch.equal(clean[0], x[0])  # the same material; nothing painted


@pytest.fixture(scope="module")
def detector(model_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("det")
    det, figures = dd.load_or_train(folder, 16, model_file, log=lambda m: None, n_train=32, n_test=16, kimg=0.064)
    return folder, det, figures


def test_detector_is_the_products_comparator_trained_by_train_comparator(detector):
    folder, det, figures = detector
    carrier = folder / "detector-16.safetensors"
    m = load_model(carrier)
    assert m.comparator is not None and m.meta["comparator"]["images_seen"] == 64  # 0.064 kimg of C, by the product trainer
    assert m.meta["comparator"]["config"]["reference"] == "blur"
    assert figures["kimg"] == 0.064 and json.loads((folder / "detector-16.json").read_text()) == figures
    assert 0.0 <= figures["test_fpr"] <= 1.0 and 0.0 <= figures["test_auroc"] <= 1.0
    assert not (folder / "work-16").exists()  # its tiles and shards are not kept


def test_detector_is_kept_counts_real_tiles_like_shards_and_g_samples(detector, model_file, tmp_path):
    folder, det, figures = detector
    kept, again = dd.load_or_train(folder, 16, None, log=lambda m: None, kimg=999)  # loaded, not retrained
    assert again == figures and kept.threshold == det.threshold
    x, _ = dd.tiles(6, 16, "test", seed=5)
    assert np.array_equal(kept.scores(x), det.scores(x))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for k in range(2):
        write_png(imgs / f"{k}.png", np.random.default_rng(k).random((48, 48, 1)).astype(np.float32))
    share, n = dd.tile_share(imgs, det, 16, 16)
    assert n == 2 * 9 and 0.0 <= share <= 1.0
    assert 0.0 <= dd.defect_share(model_file, det, n=8) <= 1.0


def test_threshold_flags_the_stated_share_of_the_clean_tiles_it_was_set_on(detector):
    _, det, figures = detector
    clean, _ = dd.tiles(8, 16, "test", figures["seed"] + 2, painted=False)  # the n_test // 2 tiles the threshold came from
    assert float(det.flags(clean).mean()) <= dd.FPR_TARGET + 1 / len(clean)


def test_cli_names_a_broken_model_in_one_line(detector, tmp_path, capsys):
    folder, _, _ = detector
    (tmp_path / "broken.safetensors").write_bytes(b"not a model")
    assert dd.main(["--out", str(folder), "--size", "16", "--model", str(tmp_path / "broken.safetensors")]) == 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken.safetensors" in err and "Traceback" not in err


def test_cli_without_a_model_or_a_kept_detector_says_so(tmp_path, capsys):
    assert dd.main(["--out", str(tmp_path / "none"), "--size", "16"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--model" in err

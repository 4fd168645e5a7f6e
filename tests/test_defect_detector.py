"""tools/experiments/defect_detector.py: the textures tiles it learns from, and what it counts on real and generated tiles."""

from __future__ import annotations

import json

import numpy as np
import torch

from nsgan.data.imageio import write_png
from tools.experiments import defect_detector as dd


def test_tiles_are_8_bit_and_every_other_one_holds_one_defect():
    x, y = dd.tiles(8, 32, "train", seed=3)
    assert x.shape == (8, 1, 32, 32) and y.tolist() == [0, 1] * 4
    assert torch.equal(torch.round(x * 255) / 255, x) and 0 <= float(x.min()) and float(x.max()) <= 1
    again, _ = dd.tiles(8, 32, "train", seed=3)
    assert torch.equal(x, again)  # seeded: the same detector every time


def test_detector_is_kept_counts_real_tiles_like_shards_and_g_samples(tmp_path, model_file):
    det, figures = dd.load_or_train(tmp_path / "det", 16, log=lambda m: None, n_train=32, n_test=16, steps=2)
    assert figures["steps"] == 2 and json.loads((tmp_path / "det" / "detector-16.json").read_text()) == figures
    kept, _ = dd.load_or_train(tmp_path / "det", 16, log=lambda m: None, steps=999)  # loaded, not retrained
    assert all(torch.equal(a, b) for a, b in zip(det.state_dict().values(), kept.state_dict().values()))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(2):
        write_png(folder / f"{k}.png", np.random.default_rng(k).random((48, 48, 1)).astype(np.float32))
    share, n = dd.tile_share(folder, det, 16, 16)
    assert n == 2 * 9 and 0.0 <= share <= 1.0
    assert 0.0 <= dd.defect_share(model_file, det, n=8) <= 1.0


def test_cli_names_a_broken_model_in_one_line(tmp_path, capsys):
    dd.load_or_train(tmp_path / "det", 16, log=lambda m: None, n_train=32, n_test=16, steps=2)
    (tmp_path / "broken.safetensors").write_bytes(b"not a model")
    assert dd.main(["--out", str(tmp_path / "det"), "--size", "16", "--model", str(tmp_path / "broken.safetensors")]) == 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken.safetensors" in err and "Traceback" not in err

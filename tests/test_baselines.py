"""The local-contrast floor: its map finds painted defects, and its runner reports evaluate's figures."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from nsgan.score.baselines import LocalContrast, ScoreRule, image_score, local_contrast_map
from nsgan.data.painter import paint_defects
from nsgan.common.errors import ConfigError
from nsgan.evaluate.metrics import PixelMetrics, ScoreRange
from tools.experiments.baseline_contrast import main, run_floor
from tools.protocols.textures import build_textures


def painted_noise(seed: int, size: int = 96):
    """Smooth gray with mild pixel noise, plus two painted micro-defects: (image, mask)."""
    rng = np.random.default_rng(seed)
    img = np.clip(0.5 + 0.03 * rng.standard_normal((size, size, 1)), 0, 1).astype(np.float32)
    painted, mask, _ = paint_defects(img, rng, count=2)
    return painted, mask


def test_map_peaks_on_a_painted_defect():
    pm_maps = []
    for seed in range(3):
        img, mask = painted_noise(seed)
        m = local_contrast_map(img, blur_sigma=2.0, map_sigma=1.0)
        assert m.shape == mask.shape and m.dtype == np.float32
        near = binary_dilation(mask, iterations=2)  # the anti-aliased rim and the blur spread a little
        assert near[np.unravel_index(np.argmax(m), m.shape)]  # the map's peak is on a defect
        pm_maps.append((m, mask))
    rng = ScoreRange()
    for m, _ in pm_maps:
        rng.update(m)
    pm = PixelMetrics(rng.lo, rng.hi)
    for m, mask in pm_maps:
        pm.update(m, mask)
    assert pm.pixel_auroc() > 0.9  # measured 0.999 on these images; a random map gives 0.5


def test_flat_image_gives_a_zero_map_and_channels_are_averaged():
    assert np.allclose(local_contrast_map(np.full((16, 16, 3), 0.3, np.float32), 1.0, 0.0), 0)
    gray = painted_noise(0, size=32)[0]
    rgb = np.repeat(gray, 3, axis=2)
    assert np.allclose(local_contrast_map(rgb, 2.0, 1.0), local_contrast_map(gray, 2.0, 1.0), atol=1e-6)


def test_score_rules_and_bad_settings():
    m = np.zeros((10, 10), np.float32)
    m[3, 4] = 1.0
    assert image_score(m, "max") == 1.0
    assert image_score(m, ScoreRule.QUANTILE, 0.98) == 0.0  # one hot pixel does not move a 98% quantile
    assert LocalContrast(rule="quantile", quantile=0.5).to_dict()["rule"] == "quantile"
    for bad in (dict(blur_sigma=0), dict(map_sigma=-1), dict(rule="mean"), dict(rule="quantile", quantile=0)):
        with pytest.raises(ConfigError):
            LocalContrast(**bad)


@pytest.fixture(scope="module")
def tiny_protocol(tmp_path_factory):
    out = tmp_path_factory.mktemp("floor") / "textures"
    build_textures(out, size=32, n_train=2, n_abnormal=1, n_test_good=4, n_test_defect=6, large_size=0, seed=0)
    return out


def test_runner_writes_evaluates_figures(tiny_protocol, tmp_path, capsys):
    out = tmp_path / "floor"
    assert main(["--data", str(tiny_protocol), "--out", str(out), "--sweep"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"data", "model", "image", "pixel", "seconds"} <= set(metrics)
    assert {"auroc", "f1", "per_type_auroc", "n_good", "n_defective"} <= set(metrics["image"])
    assert {"pixel_auroc", "aupro", "aupro_max_fpr"} <= set(metrics["pixel"])
    assert metrics["image"]["n_good"] == 4 and metrics["image"]["n_defective"] == 6
    assert metrics["floor"] == {"blur_sigma": 2.0, "map_sigma": 1.0, "rule": "max"}
    rows = metrics["sweep"]["rows"]
    assert len(rows) == 12 and set(metrics["sweep"]["best"]) == {"image_auroc", "pixel_auroc", "aupro"}
    default = next(r for r in rows if (r["blur_sigma"], r["map_sigma"]) == (2.0, 1.0))
    assert default["pixel_auroc"] == metrics["pixel"]["pixel_auroc"]  # the sweep row is the same measurement
    assert "test set" in capsys.readouterr().out
    # a second run refuses to replace it, in one line
    assert main(["--data", str(tiny_protocol), "--out", str(out)]) == 5


def test_runner_without_masks_gives_image_figures_only(tiny_protocol, tmp_path):
    proto = json.loads((tiny_protocol / "protocol.json").read_text())
    data = tmp_path / "labels-only"
    shutil.copytree(tiny_protocol / "test", data / "test")
    (data / "protocol.json").write_text(json.dumps({**proto, "pixel_masks": False}))
    metrics = run_floor(data, tmp_path / "out", LocalContrast(rule="quantile", quantile=0.99))
    assert metrics["pixel"] is None and 0 <= metrics["image"]["auroc"] <= 1

"""The image score one false peak cannot topple (issue 25 item 3): the mean of the map's TOP_K highest values, kept
band by band; `auto` picks it for C's map and the map max otherwise; every entry point of the Scorer gives the same
score; a model calibrated with the map max warns when scored with the new default."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nsgan.cli.main import main as cli
from nsgan.data.imageio import write_png
from nsgan.models.comparator import Comparator
from nsgan.models.model_file import update_metadata
from nsgan.score.assembly import TOP_K, MapStats
from nsgan.score.choices import ImageScore, Residual
from nsgan.score.maps import IMAGE_SCORES
from nsgan.score.options import ScoreOptions, resolve_image_score
from nsgan.score.scorer import Scorer

from .conftest import with_untrained_comparator


def _top_k_mean(m: np.ndarray, k: int = TOP_K) -> float:
    v = np.sort(m.astype(np.float64).ravel())
    return float(v[-k:].mean())


@pytest.fixture(scope="module")
def model_with_c(gan_model_with_encoder, tmp_path_factory) -> Path:
    """The conftest's untrained model with E plus an untrained C reading x beside its blur (the product's default)."""
    torch.manual_seed(2)
    c = Comparator(channels=1, reference="blur", width=4, dilations=(1, 2))
    torch.nn.init.normal_(c.head.weight, std=1.0)  # a map with visible structure, not the prior's flat 0.02
    return with_untrained_comparator(gan_model_with_encoder, tmp_path_factory.mktemp("model-c") / "m.safetensors", c)


def test_running_top_k_over_bands_equals_the_top_k_of_the_whole_map():
    m = np.random.default_rng(0).random((203, 37)).astype(np.float32)
    whole = MapStats()
    whole.add(m)
    banded = MapStats()
    for y in range(0, 203, 7):  # bands of 7 rows: 259 px each, more than k, and a short last one
        banded.add(m[y:y + 7])
    assert banded.as_dict() == pytest.approx(whole.as_dict())
    assert banded.as_dict()["top_k_mean"] == whole.as_dict()["top_k_mean"] == _top_k_mean(m)
    single_rows = MapStats()
    for row in m:  # 37 px per block: fewer than k at a time
        single_rows.add(row[None])
    assert single_rows.as_dict()["top_k_mean"] == _top_k_mean(m)
    small = MapStats()
    small.add(m[:2, :5])  # 10 px < k: all of them
    assert small.as_dict()["top_k_mean"] == pytest.approx(float(m[:2, :5].astype(np.float64).mean()))


def test_one_false_peak_moves_the_map_max_but_barely_the_top_k_mean():
    rng = np.random.default_rng(1)
    m = (0.1 + 0.01 * rng.random((128, 128))).astype(np.float32)
    m[60:70, 60:70] = 0.6  # a real defect: 100 px
    before = MapStats()
    before.add(m)
    m[5, 5] = 1.0  # one false peak, one pixel
    after = MapStats()
    after.add(m)
    b, a = before.as_dict(), after.as_dict()
    assert a["max"] - b["max"] == pytest.approx(0.4, abs=1e-6)
    assert a["top_k_mean"] - b["top_k_mean"] == pytest.approx(0.4 / TOP_K, abs=1e-6)  # 1/64 of the peak's excess


def test_auto_resolves_to_top_k_mean_for_C_and_map_max_without(model_with_c, gan_model_with_encoder):
    assert resolve_image_score(ImageScore.AUTO, Residual.COMPARATOR) == ImageScore.TOP_K_MEAN
    assert resolve_image_score("auto", Residual.DETAIL) == ImageScore.MAP_MAX
    assert resolve_image_score("tile", Residual.COMPARATOR) == ImageScore.TILE
    assert ScoreOptions().image_score == ImageScore.AUTO and "auto" not in IMAGE_SCORES
    with_c, without = Scorer.from_file(model_with_c), Scorer.from_file(gan_model_with_encoder)
    assert with_c.options.image_score == ImageScore.TOP_K_MEAN and with_c.map_settings()["image_score"] == "top_k_mean"
    assert without.options.image_score == ImageScore.MAP_MAX
    img = np.random.default_rng(3).random((40, 40)).astype(np.float32)
    r = with_c.score(img)
    assert r.score == pytest.approx(_top_k_mean(r.map), abs=1e-7) and r.score < float(r.map.max())
    r = without.score(img)
    assert r.score == float(r.map.max())
    # C's map, but scored with the detail residual: not what was measured, so the map max
    assert Scorer.from_file(model_with_c, ScoreOptions(residual="detail")).options.image_score == ImageScore.MAP_MAX


def test_score_score_many_and_score_to_files_give_the_same_score(model_with_c, tmp_path):
    rng = np.random.default_rng(4)
    imgs = [rng.random((40, 40)).astype(np.float32), rng.random((24, 56)).astype(np.float32)]
    scorer = Scorer.from_file(model_with_c, ScoreOptions(batches_per_band=1, batch=4))  # several bands per image
    one = [scorer.score(i) for i in imgs]
    many = scorer.score_many(imgs)
    files = []
    for k, img in enumerate(imgs):
        path = tmp_path / f"i{k}.png"
        write_png(path, img[..., None])  # quantised by the PNG: compared with the same file scored in memory
        files.append((scorer.score(path), scorer.score_to_files(path, tmp_path / "out")))
    for o, m in zip(one, many):
        assert o.score == pytest.approx(_top_k_mean(o.map), abs=1e-7)
        assert m.score == pytest.approx(o.score, abs=1e-6)
    for from_path, streamed in files:
        assert streamed.score == pytest.approx(from_path.score, abs=1e-7)


def test_a_model_calibrated_with_the_map_max_warns_under_the_new_default(model_with_c, tmp_path):
    path = tmp_path / "m.safetensors"
    shutil.copy(model_with_c, path)
    old = Scorer.from_file(path)
    update_metadata(path, thresholds={"image": 0.5, "pixel": 0.4, "search": old.options.search.to_dict(), "stride": 16,
                                      "map": {**old.map_settings(), "image_score": "map_max"}})  # as stored before issue 25
    scorer = Scorer.from_file(path)
    assert "other map settings" in scorer.calibration_mismatch()
    result = scorer.score(np.random.default_rng(5).random((32, 32)).astype(np.float32))
    assert "image_score" in result.thresholds["warning"] and result.verdict in ("anomalous", "normal")
    pinned = Scorer.from_file(path, ScoreOptions(image_score="map_max"))
    assert pinned.calibration_mismatch() is None


def test_a_bad_image_score_is_one_line(model_with_c, tmp_path, capsys):
    img = tmp_path / "i.png"
    write_png(img, np.zeros((16, 16, 1), np.float32))
    code = cli(["score", "--model", str(model_with_c), "--image", str(img), "--out", str(tmp_path / "o"),
                "--image-score", "top_k"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--image-score" in err[0] and "top_k_mean" in err[0], err


def test_the_onnx_path_gives_the_torch_score(model_with_c, tmp_path):
    """The exported graph computes the per-tile map only; the image score is made after blending, as with torch."""
    pytest.importorskip("onnxruntime")
    from nsgan.share.onnx_export import export_onnx, scorer_from_onnx

    rep = export_onnx(model_with_c, tmp_path / "m.onnx")
    assert rep.meta["image_score"] == "top_k_mean" and rep.meta["residual"] == "comparator"
    img = np.random.default_rng(6).random((40, 40)).astype(np.float32)
    torch_r = Scorer.from_file(model_with_c).score(img)
    onnx_scorer = scorer_from_onnx(tmp_path / "m.onnx")
    assert onnx_scorer.options.image_score == ImageScore.TOP_K_MEAN
    assert onnx_scorer.score(img).score == pytest.approx(torch_r.score, abs=1e-4)
    pinned = scorer_from_onnx(tmp_path / "m.onnx", ScoreOptions(image_score="map_max"))  # no D either way: allowed
    assert pinned.score(img).score == pytest.approx(float(torch_r.map.max()), abs=1e-4)

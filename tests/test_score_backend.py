"""`nsgan score`'s backend choice and speed report: ONNX Runtime by default on the CPU for a model with an
encoder (exported once into a cache keyed by the model's sha256), torch otherwise; MP/s and where the time went."""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pytest
import tifffile
from PIL import Image

from nsgan.cli.main import main as cli
from nsgan.score.reports import inner_boundary
from nsgan.share import onnx_cache, onnx_export
from nsgan.share.onnx_export import file_sha256


def _image(path, size=64, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8)).save(path)
    return path


def _score(model, image, out, *extra):
    return cli(["score", "--model", str(model), "--image", str(image), "--out", str(out), "--no-progress", "--overwrite", *extra])


def test_summary_prints_megapixels_per_second_and_the_report_says_where_the_time_went(gan_model_with_encoder, tmp_path, capsys):
    image = _image(tmp_path / "a.png", 48)
    assert _score(gan_model_with_encoder, image, tmp_path / "out", "--backend", "torch") == 0
    said = capsys.readouterr().out
    assert "backend: torch (asked for)" in said
    assert "48×48, 0.00 MP in" in said and "MP/s, torch on cpu" in said and "1 image(s), 0.00 MP in" in said
    timing = json.loads((tmp_path / "out" / "a.json").read_text())["timing"]
    assert timing["backend"] == "torch" and timing["megapixels"] == pytest.approx(48 * 48 / 1e6)
    stages = timing["seconds"]
    assert {"read", "cut", "network", "blend", "smooth", "write", "regions", "overlay", "other"} <= stages.keys()
    assert all(v >= 0 for v in stages.values()) and sum(stages.values()) == pytest.approx(timing["wall_s"], abs=0.01)


def test_inner_boundary_equals_skimages_find_boundaries_inner():
    from skimage.segmentation import find_boundaries

    rng = np.random.default_rng(0)
    for _ in range(100):
        m = rng.random((int(rng.integers(1, 25)), int(rng.integers(1, 25)))) > rng.random()
        assert np.array_equal(inner_boundary(m), find_boundaries(m, mode="inner"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NSGAN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(onnx_cache, "ONNX_MIN_TILES", 4)  # the tests' small images count as a large job
    return tmp_path / "cache"


def test_auto_exports_once_into_the_cache_then_reuses_it_and_maps_match_torch(gan_model_with_encoder, tmp_path, cache, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    ro = tmp_path / "hub" / "m.safetensors"  # a model in a read-only folder (a Hub cache): nothing is written beside it
    ro.parent.mkdir()
    shutil.copy(gan_model_with_encoder, ro)
    ro.parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
    image = _image(tmp_path / "a.png", 64)
    try:
        assert _score(ro, image, tmp_path / "torch", "--backend", "torch") == 0
        assert _score(ro, image, tmp_path / "auto") == 0
        said = capsys.readouterr().out
        assert "backend: onnxruntime, exported once to" in said and "onnxruntime on cpu" in said
        files = list(cache.rglob("*.onnx"))
        assert len(files) == 1 and files[0].parent.name == file_sha256(ro)  # keyed by the model file's content
        assert sorted(p.name for p in ro.parent.iterdir()) == ["m.safetensors"]

        def no_export(*a, **k):
            raise AssertionError("exported again")

        export = onnx_export.export_onnx
        monkeypatch.setattr(onnx_export, "export_onnx", no_export)
        assert _score(ro, image, tmp_path / "again") == 0
        assert "backend: onnxruntime, cached export" in capsys.readouterr().out
        monkeypatch.setattr(onnx_export, "export_onnx", export)
    finally:
        ro.parent.chmod(stat.S_IRWXU)
    a, b = tifffile.imread(tmp_path / "torch" / "a.map.tif"), tifffile.imread(tmp_path / "auto" / "a.map.tif")
    assert np.abs(a - b).max() <= 1e-4
    report = json.loads((tmp_path / "auto" / "a.json").read_text())
    assert report["timing"]["backend"] == "onnxruntime" and report["model_sha256"] == json.loads(
        (tmp_path / "torch" / "a.json").read_text())["model_sha256"]  # the .safetensors file's, as with torch
    # a damaged cache file is exported again, not trusted
    files[0].write_bytes(b"not onnx")
    assert _score(gan_model_with_encoder, image, tmp_path / "damaged") == 0
    assert "exported once to" in capsys.readouterr().out and files[0].stat().st_size > 1000


def test_auto_stays_on_torch_for_small_jobs_models_without_encoder_and_an_unwritable_cache(gan_model_with_encoder, model_file, tmp_path,
                                                                                         monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("NSGAN_CACHE_DIR", str(tmp_path / "cache"))
    image = _image(tmp_path / "a.png", 32)
    assert _score(gan_model_with_encoder, image, tmp_path / "small") == 0  # 4 tiles, far below ONNX_MIN_TILES
    assert "backend: torch (4 tiles: an ONNX export would not pay for itself" in capsys.readouterr().out
    monkeypatch.setattr(onnx_cache, "ONNX_MIN_TILES", 4)
    assert _score(model_file, image, tmp_path / "no-e", "--inversion", "search", "--iterations", "2") == 0
    assert "backend: torch (the model has no encoder)" in capsys.readouterr().out
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("NSGAN_CACHE_DIR", str(blocked))
    assert _score(gan_model_with_encoder, image, tmp_path / "blocked-out") == 0
    assert "backend: torch (ONNX export unavailable:" in capsys.readouterr().out
    monkeypatch.setenv("NSGAN_SCORE_BACKEND", "torch")
    monkeypatch.setenv("NSGAN_CACHE_DIR", str(tmp_path / "cache"))
    assert _score(gan_model_with_encoder, image, tmp_path / "env") == 0
    assert "backend: torch (asked for)" in capsys.readouterr().out and not (tmp_path / "cache").exists()


def test_backend_onnx_that_cannot_run_is_a_one_line_error(gan_model_with_encoder, model_file, tmp_path, capsys, monkeypatch):
    image = _image(tmp_path / "a.png", 32)
    assert _score(model_file, image, tmp_path / "o", "--backend", "onnx", "--inversion", "search") == 2
    err = capsys.readouterr().err.strip()
    assert "--backend onnx" in err and "no encoder" in err and len(err.splitlines()) == 1
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    assert _score(gan_model_with_encoder, image, tmp_path / "p") == 0  # auto: a note, then torch
    assert "backend: torch (onnxruntime is not installed" in capsys.readouterr().out
    assert _score(gan_model_with_encoder, image, tmp_path / "q", "--backend", "onnx") == 2
    err = capsys.readouterr().err.strip()
    assert "onnxruntime is not installed" in err and len(err.splitlines()) == 1

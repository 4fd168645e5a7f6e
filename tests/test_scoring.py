"""Scoring whole images: defects found, outputs and verdicts, bad input, 2 processes = 1, calibration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from nsgan.evaluate.calibrate import best_f1_threshold
from nsgan.cli.main import main
from nsgan.models.model_file import read_metadata, save_model
from nsgan.data.imageio import write_png
from nsgan.score.options import ScoreOptions
from nsgan.score.scorer import Scorer
from nsgan.score.search import SearchConfig
from .conftest import free_port
from .test_search import PatternG, TinyD, clean_image

REPO = Path(__file__).resolve().parent.parent
FAST = ["--iterations", "3", "--restarts", "1", "--no-progress"]


def pattern_scorer(**kw) -> Scorer:
    opts = ScoreOptions(stride=16, batch=16, search=SearchConfig(iterations=60, restarts=2, patience=10), **kw)
    return Scorer(PatternG(32), TinyD(), resolution=32, channels=1, options=opts)


@pytest.fixture()
def gray_png(tmp_path) -> Path:
    write_png(tmp_path / "img.png", np.random.default_rng(0).random((40, 52, 1)).astype(np.float32))
    return tmp_path / "img.png"


def test_painted_defect_is_the_top_region_and_clean_image_is_quiet():
    img = clean_image(96, 128)
    bad = img.copy()
    bad[60:65, 40:45] = 1.0  # a 5×5 bright pit
    s = pattern_scorer()
    clean, hit = s.score(img), s.score(bad)
    assert hit.map.shape == (96, 128) and hit.map.dtype == np.float32
    x0, y0, x1, y1 = hit.regions[0].bbox
    assert x0 <= 40 and y0 <= 60 and x1 >= 45 and y1 >= 65 and (x1 - x0) * (y1 - y0) < 200
    assert hit.map[60:65, 40:45].min() > 5 * np.median(hit.map)
    assert clean.map.max() < hit.map[60:65, 40:45].min()
    assert hit.score > clean.score
    assert hit.verdict == "uncalibrated" and "uncalibrated" in hit.thresholds["pixel_source"]
    cal = pattern_scorer()
    cal.thresholds = {"image": (clean.score + hit.score) / 2, "pixel": float(clean.map.max())}
    assert cal.score(bad).verdict == "anomalous" and cal.score(img).verdict == "normal"


def test_constant_image_gives_a_seamless_map():
    g = PatternG(32)
    g.pattern.zero_()  # draws flat gray of any brightness
    opts = ScoreOptions(stride=16, batch=32, search=SearchConfig(iterations=100, restarts=1, patience=100))
    r = Scorer(g, TinyD(), resolution=32, channels=1, options=opts).score(np.full((80, 112), 0.3, np.float32))
    assert r.map.max() < 0.02
    assert np.abs(np.diff(r.map, axis=0)).max() < 0.01 and np.abs(np.diff(r.map, axis=1)).max() < 0.01


def test_cli_writes_map_overlay_report_and_refuses_to_overwrite(model_file, gray_png, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["score", "--model", str(model_file), "--image", str(gray_png), "--out", str(out), *FAST]) == 0
    m = tifffile.imread(out / "img.map.tif")
    assert m.shape == (40, 52) and m.dtype == np.float32 and np.isfinite(m).all()
    rep = json.loads((out / "img.json").read_text())
    assert rep["verdict"] == "uncalibrated" and rep["shape"] == [40, 52]
    assert rep["score"] == pytest.approx(max(0.0, rep["score"])) and rep["map"]["max"] == pytest.approx(float(m.max()))
    assert all(set(r) >= {"bbox", "area", "peak"} for r in rep["regions"])
    from PIL import Image

    assert Image.open(out / "img.overlay.png").mode == "RGB"
    capsys.readouterr()
    assert main(["score", "--model", str(model_file), "--image", str(gray_png), "--out", str(out), *FAST]) == 5
    assert "img.map.tif: exists" in capsys.readouterr().err
    assert main(["score", "--model", str(model_file), "--image", str(gray_png), "--out", str(out), "--overwrite", *FAST]) == 0


def test_folder_and_list_inputs_and_images_smaller_than_a_tile(model_file, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    write_png(src / "a.png", rng.random((7, 9, 1)).astype(np.float32))  # smaller than a 16-px tile
    tifffile.imwrite(src / "sub" / "b.tif", (rng.random((20, 33)) * 65535).astype(np.uint16))
    assert main(["score", "--model", str(model_file), "--image", str(src), "--out", str(tmp_path / "o1"), *FAST]) == 0
    assert tifffile.imread(tmp_path / "o1" / "a.map.tif").shape == (7, 9)
    assert tifffile.imread(tmp_path / "o1" / "sub__b.map.tif").shape == (20, 33)
    (tmp_path / "list.txt").write_text("src/a.png\n# a comment\n" + str(src / "sub" / "b.tif") + "\n")
    assert main(["score", "--model", str(model_file), "--image", str(tmp_path / "list.txt"), "--out", str(tmp_path / "o2"), *FAST]) == 0
    assert sorted(p.name for p in (tmp_path / "o2").glob("*.json")) == ["a.json", "b.json"]


def _nan_model(path: Path) -> Path:
    from nsgan.models.networks import Discriminator, Generator

    g = Generator(16, 1, latent_dim=16, fmap_base=64, fmap_max=16)
    with torch.no_grad():
        next(g.parameters()).fill_(float("nan"))
    return save_model(path, g, Discriminator(16, 1, fmap_base=64, fmap_max=16), {"config": {}, "images_seen": 0})


def test_bad_inputs_give_one_line_errors_with_exit_codes(model_file, gray_png, tmp_path, capsys):
    def run(model, image, out=None):
        capsys.readouterr()
        code = main(["score", "--model", str(model), "--image", str(image), "--out", str(out or tmp_path / "o"), "--overwrite", *FAST])
        err = capsys.readouterr().err.strip()
        assert code == 0 or (len(err.splitlines()) == 1 and "Traceback" not in err)
        return code, err

    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert run(model_file, tmp_path / "corrupt.png")[0] == 3 and "corrupt.png" in run(model_file, tmp_path / "corrupt.png")[1]
    tifffile.imwrite(tmp_path / "i32.tif", np.zeros((20, 20), np.int32))
    code, err = run(model_file, tmp_path / "i32.tif")
    assert code == 3 and "i32.tif: unsupported pixel type" in err
    write_png(tmp_path / "rgb.png", np.zeros((20, 20, 3), np.float32))
    code, err = run(model_file, tmp_path / "rgb.png")
    assert code == 3 and "rgb.png: image has 3 channel(s), the model expects 1" in err
    code, err = run(tmp_path / "missing.safetensors", gray_png)
    assert code == 4 and "missing.safetensors" in err
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    code, err = run(tmp_path / "junk.safetensors", gray_png)
    assert code == 4 and "junk.safetensors" in err
    code, err = run(_nan_model(tmp_path / "nan.safetensors"), gray_png)
    assert code == 6 and "img.png" in err and "NaN" in err
    assert not (tmp_path / "o" / "img.map.tif").exists()  # no silent NaN map left behind
    small = tmp_path / "small"  # images under one search batch of tiles share batches (score_many): same check
    small.mkdir()
    write_png(small / "tiny.png", np.full((9, 9, 1), 0.5, np.float32))
    code, err = run(tmp_path / "nan.safetensors", small, out=tmp_path / "o3")
    assert code == 6 and "tiny.png" in err and "NaN" in err and not (tmp_path / "o3" / "tiny.map.tif").exists()
    (tmp_path / "afile").write_text("")
    code, err = run(model_file, gray_png, out=tmp_path / "afile" / "out")
    assert code == 5 and "afile" in err and "not writable" in err


def _launch(nproc: int, model: Path, image: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    multi = ["--multi_gpu"] if nproc > 1 else []
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *multi, "--num_processes", str(nproc), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(REPO / "launch" / "score.py"), "--model", str(model), "--image", str(image), "--out", str(out), "--batch", "8", *FAST]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def test_two_processes_write_the_same_map_as_one(model_file, tmp_path):
    write_png(tmp_path / "img.png", np.random.default_rng(2).random((61, 75, 1)).astype(np.float32))
    one = _launch(1, model_file, tmp_path / "img.png", tmp_path / "one")
    assert (tmp_path / "one" / "img.map.tif").is_file(), one.stderr[-2000:]
    two = _launch(2, model_file, tmp_path / "img.png", tmp_path / "two")
    # gloo may abort at exit after all work (docs/reliability.md), so the outputs are what is checked
    assert (tmp_path / "two" / "img.map.tif").is_file(), two.stderr[-2000:]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "one" / "img.map.tif"), tifffile.imread(tmp_path / "two" / "img.map.tif"))
    r1, r2 = (json.loads((tmp_path / d / "img.json").read_text()) for d in ("one", "two"))
    assert r1["score"] == r2["score"] and r1["regions"] == r2["regions"]


def test_best_f1_threshold_separates_two_sets():
    t, f1 = best_f1_threshold(np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.6]))
    assert 0.3 <= t < 0.5 and f1 == 1.0


def test_calibrate_stores_thresholds_that_scoring_then_uses(model_file, tmp_path):
    model = tmp_path / "m.safetensors"
    model.write_bytes(model_file.read_bytes())
    rng = np.random.default_rng(3)
    for sub in ("normal", "bad", "masks"):
        (tmp_path / sub).mkdir()
    for i in range(2):
        write_png(tmp_path / "normal" / f"n{i}.png", (0.5 + 0.05 * rng.random((24, 24, 1))).astype(np.float32))
        img = (0.5 + 0.05 * rng.random((24, 24, 1))).astype(np.float32)
        img[8:14, 8:14] = 1.0
        mask = np.zeros((24, 24, 1), np.float32)
        mask[8:14, 8:14] = 1.0
        write_png(tmp_path / "bad" / f"b{i}.png", img)
        write_png(tmp_path / "masks" / f"b{i}_mask.png", mask)
    args = ["calibrate", "--model", str(model), "--normal", str(tmp_path / "normal"), *FAST]
    assert main(args + ["--abnormal", str(tmp_path / "bad"), "--masks", str(tmp_path / "masks")]) == 0
    th = read_metadata(model)["thresholds"]
    assert th["n_normal"] == 2 and th["n_abnormal"] == 2 and "F1" in th["pixel_method"]
    assert th["search"]["iterations"] == 3
    assert main(["score", "--model", str(model), "--image", str(tmp_path / "bad" / "b0.png"), "--out", str(tmp_path / "o"), *FAST]) == 0
    rep = json.loads((tmp_path / "o" / "b0.json").read_text())
    assert rep["verdict"] in ("normal", "anomalous") and rep["thresholds"]["image"] == pytest.approx(th["image"])
    assert rep["thresholds"]["pixel_source"] == "calibrated"
    assert main(["calibrate", "--model", str(model), "--normal", str(tmp_path / "normal"), "--masks", str(tmp_path / "masks"), *FAST]) == 2  # an argument mistake: exit 2


def test_the_model_files_spelling_of_scoring_choices_is_the_enums_value():
    """models sits below score, so model_file spells two choice values as its JSON holds them: they must agree."""
    from nsgan.models import model_file
    from nsgan.score.choices import Inversion, Residual

    assert model_file.COMPARATOR_RESIDUAL == Residual.COMPARATOR and model_file.SEARCH_MODE == Inversion.SEARCH

"""ONNX export of the feed-forward scoring path: what ONNX Runtime computes equals the torch path.

Per tile (batch 1 and 5, so the batch axis is proven dynamic) every output is within the export's
tolerance of the torch scorer's per-tile call; a whole multi-tile image scored through the ONNX file
gives the torch map within the same tolerance (blending and smoothing are weighted means, so they
cannot enlarge a per-pixel difference). Bad inputs end in one line and their exit code.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import onnx  # the `onnx` extra; CI installs it (no skip: a missing extra must fail here, not pass quietly)
import onnxruntime as ort

from nsgan.cli.main import main as cli
from nsgan.models.model_file import update_metadata
from nsgan.share.onnx_export import DEFAULT_OPSET, TILE_OUTPUTS, TOLERANCE, export_onnx, scorer_from_onnx
from nsgan.score.options import ScoreOptions
from nsgan.score.scorer import Scorer

THRESHOLDS = {"image": 0.5, "pixel": 0.2, "map": {"residual": "detail", "map_sigma": 1.0, "image_score": "map_max"}}


@pytest.fixture(scope="module")
def calibrated_e_model(gan_model_with_encoder, tmp_path_factory) -> Path:
    """The encoder fixture model with thresholds stored, so the export must carry them."""
    path = tmp_path_factory.mktemp("onnx-src") / "model.safetensors"
    shutil.copy(gan_model_with_encoder, path)
    update_metadata(path, thresholds=THRESHOLDS)
    return path


@pytest.fixture(scope="module")
def e_export(calibrated_e_model, tmp_path_factory):
    """(report, path) of the default tile-scorer export (detail residual, map_max: no D in the graph)."""
    out = tmp_path_factory.mktemp("onnx-e") / "m.onnx"
    return export_onnx(calibrated_e_model, out), out


@pytest.fixture(scope="module")
def t_export(calibrated_e_model, tmp_path_factory):
    """(report, path) of the other settings: pixel residual and AnoGAN's tile loss (D in the graph)."""
    out = tmp_path_factory.mktemp("onnx-t") / "t.onnx"
    return export_onnx(calibrated_e_model, out, residual="pixel", image_score="tile"), out


EXPORTS = {"e_export": ScoreOptions(), "t_export": ScoreOptions(residual="pixel", image_score="tile")}


@pytest.fixture(scope="module")
def g_export(model_file, tmp_path_factory):
    """(stdout, path) of `nsgan export-onnx` on the model without an encoder."""
    out = tmp_path_factory.mktemp("onnx-g") / "g.onnx"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli(["export-onnx", "--model", str(model_file), "--out", str(out)])
    assert code == 0
    return buf.getvalue(), out


def metadata(path: Path) -> dict:
    return {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}


def session(path: Path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------- export


@pytest.mark.parametrize("export", EXPORTS)
def test_export_with_encoder_is_checked_at_batch_1_and_5_under_the_tolerance(export, request):
    report, path = request.getfixturevalue(export)
    assert path.is_file() and report.kind == "tile-scorer" and report.opset == DEFAULT_OPSET == 18
    assert sorted(report.max_abs_diff) == [1, 5]
    for diffs in report.max_abs_diff.values():
        assert set(diffs) == set(TILE_OUTPUTS)
    assert report.worst <= TOLERANCE == 1e-4
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("export", EXPORTS)
def test_onnx_runtime_equals_the_scorers_own_torch_call(export, calibrated_e_model, n, request):
    """The written file, on fresh tiles, against Scorer.tile_outputs (the call the torch scorer blends)."""
    _, path = request.getfixturevalue(export)
    tiles = np.random.default_rng(n).random((n, 1, 16, 16), dtype=np.float32)
    out = dict(zip(TILE_OUTPUTS, session(path).run(list(TILE_OUTPUTS), {"tile": tiles})))
    assert out["reconstruction"].shape == (n, 1, 16, 16) and out["residual"].shape == (n, 16, 16)
    assert out["score"].shape == (n,) and out["z"].shape == (n, 16)
    res, score = Scorer.from_file(calibrated_e_model, EXPORTS[export]).tile_outputs(tiles, range(n))
    assert np.abs(out["residual"] - res.numpy()).max() <= TOLERANCE
    assert np.abs(out["score"] - score.numpy()).max() <= TOLERANCE
    pixel_term = np.abs(2 * tiles - 1 - out["reconstruction"]).reshape(n, -1).mean(1)
    if export == "e_export":  # the default graph's score is the pixel term alone: D is not in it
        assert np.abs(out["score"] - pixel_term).max() <= TOLERANCE
    else:  # AnoGAN's tile loss: (1 − λ)·pixel term + λ·feature term
        assert np.abs(out["score"] - pixel_term).max() > 10 * TOLERANCE


def test_metadata_carries_nsgan_settings_opset_digest_and_thresholds(e_export, calibrated_e_model):
    _, path = e_export
    model = onnx.load(str(path))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {18}
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert model.graph.input[0].name == "tile" and dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 16, 16]
    assert [o.name for o in model.graph.output] == list(TILE_OUTPUTS)
    meta = metadata(path)
    assert meta["format"] == "nsgan-onnx/1" and meta["kind"] == "tile-scorer" and meta["opset"] == 18
    assert (meta["resolution"], meta["channels"], meta["latent_dim"]) == (16, 1, 16)
    assert meta["source_sha256"] == hashlib.sha256(calibrated_e_model.read_bytes()).hexdigest()
    assert meta["residual"] == "detail" and meta["detail_sigma"] == 1.0 and meta["image_score"] == "map_max"
    assert meta["lam"] is None and "D not in the graph" in meta["score"]
    assert meta["after_blending"] == {"map_sigma": 1.0}
    assert meta["thresholds"] == THRESHOLDS and meta["input"]["range"] == [0.0, 1.0]


def test_export_without_encoder_is_the_generator_and_says_scoring_needs_an_encoder(g_export):
    stdout, path = g_export
    assert "generator only" in stdout and "nsgan train-encoder" in stdout
    assert "max abs difference" in stdout and "opset 18" in stdout
    meta = metadata(path)
    assert meta["kind"] == "generator" and meta["opset"] == 18
    sess = session(path)
    assert [i.name for i in sess.get_inputs()] == ["z"] and [o.name for o in sess.get_outputs()] == ["image"]


def test_generator_export_equals_torch_at_batch_1_and_5(g_export, model_file):
    from nsgan.models.model_file import load_model

    _, path = g_export
    g = load_model(model_file).generator
    sess = session(path)
    for n in (1, 5):
        z = np.random.default_rng(n).standard_normal((n, 16), dtype=np.float32)
        (img,) = sess.run(["image"], {"z": z})
        with torch.no_grad():
            ref = g(torch.from_numpy(z)).numpy()
        assert img.shape == (n, 1, 16, 16) and np.abs(img - ref).max() <= TOLERANCE


# ------------------------------------------------------------------------------------- scoring


@pytest.mark.parametrize("export", EXPORTS)
def test_a_multi_tile_image_scored_with_the_onnx_file_gives_the_torch_map(export, calibrated_e_model, request):
    from dataclasses import replace

    _, path = request.getfixturevalue(export)
    img = np.random.default_rng(3).random((40, 57), dtype=np.float32)  # 4 × 7 tiles of 16 px at stride 8
    # overlapping tiles (blending), several batches with a short last one (batch sizes vary)
    options = replace(EXPORTS[export], batch=5, stride=8)
    a = Scorer.from_file(calibrated_e_model, options).score(img)
    b = scorer_from_onnx(path, options).score(img)
    assert a.tile_scores.shape == b.tile_scores.shape == (4, 7)
    assert a.map.shape == b.map.shape == (40, 57)
    assert np.abs(a.map - b.map).max() <= TOLERANCE
    assert np.abs(a.tile_scores - b.tile_scores).max() <= TOLERANCE
    assert abs(a.score - b.score) <= TOLERANCE and a.verdict == b.verdict != "uncalibrated"
    assert b.thresholds["pixel_source"] == "calibrated"


def test_nsgan_score_onnx_writes_the_same_map_as_the_torch_scorer(e_export, calibrated_e_model, tmp_path, capsys):
    _, path = e_export
    arr = (np.random.default_rng(4).random((33, 48)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "part.png")
    code = cli(["score", "--onnx", str(path), "--image", str(tmp_path / "part.png"), "--out", str(tmp_path / "out"),
                "--no-progress"])
    assert code == 0, capsys.readouterr().err
    got = tifffile.imread(tmp_path / "out" / "part.map.tif")
    ref = Scorer.from_file(calibrated_e_model).score(tmp_path / "part.png").map
    assert got.shape == ref.shape and np.abs(got - ref).max() <= TOLERANCE
    report = json.loads((tmp_path / "out" / "part.json").read_text())
    assert report["model"] == str(path) and report["search"]["mode"] == "encoder"


# ------------------------------------------------------------------------------------- bad inputs


def one_line_error(capsys, code: int, expected: int, command: str, *needles: str) -> None:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    assert code == expected, err
    assert lines[0].startswith(f"nsgan {command}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def score_argv(onnx_path: Path, tmp_path: Path, *extra: str) -> list[str]:
    img = tmp_path / "img.png"
    if not img.exists():
        Image.fromarray((np.random.default_rng(0).random((20, 20)) * 255).astype(np.uint8)).save(img)
    return ["score", "--onnx", str(onnx_path), "--image", str(img), "--out", str(tmp_path / "out"), "--no-progress", *extra]


def test_scoring_with_a_file_that_is_not_onnx(tmp_path, capsys):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not a model at all")
    one_line_error(capsys, cli(score_argv(bad, tmp_path)), 4, "score", str(bad), "not a readable ONNX model")
    assert not (tmp_path / "out").exists()


def test_scoring_with_a_missing_onnx_file(tmp_path, capsys):
    one_line_error(capsys, cli(score_argv(tmp_path / "nope.onnx", tmp_path)), 4, "score", "nope.onnx", "no such ONNX file")


def test_scoring_with_an_onnx_file_nsgan_did_not_export(tmp_path, capsys):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["tile"], ["residual"])], "foreign",
                              [helper.make_tensor_value_info("tile", TensorProto.FLOAT, [None, 1, 16, 16])],
                              [helper.make_tensor_value_info("residual", TensorProto.FLOAT, [None, 1, 16, 16])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(foreign))
    one_line_error(capsys, cli(score_argv(foreign, tmp_path)), 4, "score", str(foreign), "not one nsgan exported")


def test_scoring_with_a_generator_only_export(g_export, tmp_path, capsys):
    _, path = g_export
    one_line_error(capsys, cli(score_argv(path, tmp_path)), 4, "score", "holds only the generator", "nsgan train-encoder")


def test_scoring_without_onnxruntime_installed(e_export, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    one_line_error(capsys, cli(score_argv(e_export[1], tmp_path)), 2, "score", "onnxruntime is not installed", "pip install '.[onnx]'")


def test_exporting_without_onnx_installed(model_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    code = cli(["export-onnx", "--model", str(model_file), "--out", str(tmp_path / "m.onnx")])
    one_line_error(capsys, code, 2, "export-onnx", "onnxscript is not installed", "pip install '.[onnx]'")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("export, extra, needles", [
    ("e_export", ["--inversion", "search"], ["--inversion search", "encoder's one pass"]),
    ("e_export", ["--residual", "pixel"], ["--residual pixel", "'detail' residual"]),
    ("e_export", ["--image-score", "tile"], ["--image-score tile", "no tile loss", "export again with --image-score tile"]),
    ("e_export", ["--precision", "bf16"], ["--precision bf16", "fp32"]),
    ("t_export", ["--residual", "pixel", "--image-score", "tile", "--lam", "0.3"], ["--lam 0.3", "lam 0.1"]),
])
def test_scoring_options_the_onnx_file_does_not_compute(export, tmp_path, capsys, extra, needles, request):
    path = request.getfixturevalue(export)[1]
    one_line_error(capsys, cli(score_argv(path, tmp_path, *extra)), 2, "score", *needles)
    assert not (tmp_path / "out").exists()


def test_lam_does_not_matter_to_the_default_graph(e_export, tmp_path, capsys):
    """No D, no feature term: λ changes nothing the default export computes, so --lam is no mistake there."""
    assert cli(score_argv(e_export[1], tmp_path, "--lam", "0.3")) == 0, capsys.readouterr().err


def test_export_refuses_an_existing_out_an_old_opset_and_a_foreign_model(model_file, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep")
    one_line_error(capsys, cli(["export-onnx", "--model", str(model_file), "--out", str(out)]), 5, "export-onnx",
                   str(out), "--overwrite")
    assert out.read_bytes() == b"keep"
    new = tmp_path / "n.onnx"
    one_line_error(capsys, cli(["export-onnx", "--model", str(model_file), "--out", str(new), "--opset", "17"]), 2,
                   "export-onnx", "--opset", "18")
    one_line_error(capsys, cli(["export-onnx", "--model", str(out), "--out", str(new)]), 4, "export-onnx", str(out))
    assert not new.exists()


def test_export_over_the_tolerance_stops_and_writes_nothing(gan_model_with_encoder, tmp_path, capsys, monkeypatch):
    """A torch reference that differs by 1e-3 (as a broken export would) must stop the export, exit 6."""
    import nsgan.share.onnx_export as ox

    real = ox.torch_tile_outputs

    def off_by_1e3(*args, **kwargs):
        out = real(*args, **kwargs)
        out["residual"] = out["residual"] + 1e-3
        return out

    monkeypatch.setattr(ox, "torch_tile_outputs", off_by_1e3)
    out = tmp_path / "m.onnx"
    code = cli(["export-onnx", "--model", str(gan_model_with_encoder), "--out", str(out)])
    one_line_error(capsys, code, 6, "export-onnx", "'residual'", "batch 1", "tolerance 0.0001", "nothing was written")
    assert list(tmp_path.iterdir()) == []

"""Test-time views (`--tta`, issue 25 item 2): none scores as before, the views are the square's symmetries and
are undone on the maps, a map that is invariant under them is unchanged, torch and ONNX Runtime agree, the
setting travels with the thresholds (a mismatch warns, the card shows it), and bad values are one-line errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nsgan.cli.main import main as cli
from nsgan.common.errors import ConfigError
from nsgan.models.comparator import Comparator
from nsgan.models.model_file import load_model, read_metadata
from nsgan.models.networks import Discriminator, Generator
from nsgan.score import choices  # by module: pytest would collect a class named Test… imported here
from nsgan.score.maps import tile_residual
from nsgan.score.options import ScoreOptions
from nsgan.score.scorer import Scorer
from nsgan.score.search import SearchConfig
from nsgan.score.views import views
from nsgan.share.card import render_card

from .conftest import with_untrained_comparator

ENCODER = SearchConfig(mode="encoder")


def _gd() -> tuple[Generator, Discriminator]:
    torch.manual_seed(0)
    return Generator(16, 1, latent_dim=16, fmap_base=64, fmap_max=16), Discriminator(16, 1, fmap_base=64, fmap_max=16)


def _c_scorer(comparator: Comparator, tta: str, **kw) -> Scorer:
    """A 16-px scorer whose map is C's alone (a C that reads no reconstruction: G, D are never run)."""
    g, d = _gd()
    opts = ScoreOptions(residual="comparator", stride=16, map_sigma=0, tta=tta, **kw)
    return Scorer(g, d, resolution=16, channels=1, options=opts, device="cpu", comparator=comparator)


def _symmetrised(c: Comparator) -> Comparator:
    """C with every 3×3 kernel averaged over the square's 8 symmetries: a C whose map turns with its input."""
    with torch.no_grad():
        for m in c.modules():
            if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3):
                m.weight.copy_(sum(v.apply(m.weight.clone()) for v in views("d4")) / 8)
    return c.eval()


def _image(seed: int = 0, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).random((size, size), dtype=np.float32)


def test_views_are_the_eight_symmetries_of_the_square_and_undo_inverts_them_in_torch_and_numpy():
    a = np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 5, 5)
    assert [len(views(t)) for t in choices.TestTimeAugment if t != "auto"] == [1, 4, 8]
    seen = {v.apply(a).tobytes() for v in views("d4")}
    assert len(seen) == 8  # all distinct: the whole group D4
    assert {np.rot90(a, k, axes=(-2, -1)).tobytes() for k in range(4)} <= seen  # the 90° turns among them
    assert views("flip")[0].identity and all(not v.transpose for v in views("flip"))
    for v in views("d4"):
        np.testing.assert_array_equal(v.undo(v.apply(a)), a)
        np.testing.assert_array_equal(v.apply(torch.from_numpy(a)).numpy(), v.apply(a))  # one view, both kinds of array


def test_none_is_the_one_pass_of_today(gan_model_with_encoder):
    """tta none: the runner's maps are exactly the single pass (C alone; E -> G -> detail), and the map settings the
    thresholds record are those of before the option (no `tta` key), so existing calibrations still match."""
    torch.manual_seed(3)
    c = Comparator(channels=1, reference="blur", width=4, dilations=(1, 2)).eval()
    tiles = np.random.default_rng(1).random((5, 1, 16, 16), dtype=np.float32)
    scorer = _c_scorer(c, "none")
    res, sc = scorer.tile_outputs(tiles, range(5))
    with torch.no_grad():
        want = tile_residual(torch.from_numpy(tiles) * 2.0 - 1.0, None, "comparator", comparator=c).float()
    assert torch.equal(res, want) and torch.equal(sc, want.flatten(1).amax(1))
    assert "tta" not in scorer.map_settings()
    enc = Scorer.from_file(gan_model_with_encoder, ScoreOptions(search=ENCODER))
    m = load_model(gan_model_with_encoder)
    res, _ = enc.tile_outputs(tiles, range(5))
    with torch.no_grad():
        x = torch.from_numpy(tiles) * 2.0 - 1.0
        want = tile_residual(x, m.generator(m.encoder(x)), "detail")
    assert torch.equal(res, want)


def test_d4_of_a_symmetric_comparator_equals_none_and_an_asymmetric_one_differs():
    torch.manual_seed(4)
    img = _image()
    sym = _symmetrised(Comparator(channels=1, reference="blur", width=4, dilations=(1, 2)))
    none = _c_scorer(sym, "none").score(img)
    for tta in ("flip", "d4"):
        got = _c_scorer(sym, tta).score(img)
        np.testing.assert_allclose(got.map, none.map, atol=1e-6)
        assert got.score == pytest.approx(none.score, abs=1e-6)
    torch.manual_seed(5)
    plain = Comparator(channels=1, reference="blur", width=4, dilations=(1, 2)).eval()
    assert not np.allclose(_c_scorer(plain, "d4").score(img).map, _c_scorer(plain, "none").score(img).map, atol=1e-4)
    # a constant image is its own view everywhere: any C gives the same map with and without views
    flat = np.full((32, 32), 0.4, np.float32)
    np.testing.assert_allclose(_c_scorer(plain, "d4").score(flat).map, _c_scorer(plain, "none").score(flat).map, atol=1e-6)


def test_a_planted_asymmetric_defect_lands_where_it_is_with_every_view():
    """A C that answers mostly at the pixel itself, a little at its right neighbour (so the views differ), and an
    L-shaped defect off the tile's centre: each view's map, turned back, peaks on the defect, and so does the mean."""
    c = Comparator(channels=1, reference="none", width=1, dilations=(1,))
    with torch.no_grad():
        conv = c.body[0]
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1], conv.weight[0, 0, 1, 2] = 4.0, 1.0
        conv.bias.zero_()
        c.head.weight.fill_(1.0)
        c.head.bias.fill_(-2.0)
    img = np.full((32, 32), 0.1, np.float32)
    defect = [(5, 20), (6, 20), (7, 20), (7, 21), (7, 22)]  # an L in the top-right tile, off its centre
    for y, x in defect:
        img[y, x] = 1.0
    none = _c_scorer(c, "none").score(img).map
    for tta in ("flip", "d4"):
        got = _c_scorer(c, tta).score(img).map
        hot = set(zip(*np.nonzero(got > 0.5)))
        assert hot == set(defect) == set(zip(*np.nonzero(none > 0.5)))
        assert np.unravel_index(np.argmax(got), got.shape) in defect
        assert got[tuple(np.array(defect).T)].min() > 0.75  # every view answered there, none somewhere else


@pytest.fixture(scope="module")
def model_with_c(gan_model_with_encoder, tmp_path_factory) -> Path:
    """The conftest encoder model plus an untrained C that reads G(E(x)) (so E, G and C are all in the ONNX graph)."""
    torch.manual_seed(6)
    return with_untrained_comparator(gan_model_with_encoder, tmp_path_factory.mktemp("tta-c") / "model.safetensors",
                                     Comparator(channels=1, reference="reconstruction", width=4, dilations=(1, 2)), "tta-test")


def test_torch_and_onnx_runtime_agree_with_views_and_auto_picks_onnx_with_the_same_map(model_with_c, tmp_path, monkeypatch):
    """The views are numpy flips around the one exported graph (E, G, C): `auto` exports it once and draws torch's map."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from nsgan.share import onnx_cache

    img = _image(7, 40)
    path = tmp_path / "img.png"
    Image.fromarray((img * 255).round().astype(np.uint8)).save(path)
    opts = ScoreOptions(search=ENCODER, tta="d4")
    torch_map = Scorer.from_file(model_with_c, opts).score(path)
    assert not np.allclose(torch_map.map, Scorer.from_file(model_with_c, ScoreOptions(search=ENCODER)).score(path).map, atol=1e-4)
    monkeypatch.setattr(onnx_cache, "ONNX_MIN_TILES", 1)
    monkeypatch.setenv("NSGAN_CACHE_DIR", str(tmp_path / "cache"))
    for backend in ("auto", "onnx"):  # auto exports into the cache, onnx loads (and checks) it
        scorer, note = onnx_cache.scorer_for(model_with_c, opts, backend, images=[path])
        assert note.startswith("onnxruntime") and scorer.backend == "onnxruntime", note
        got = scorer.score(path)
        np.testing.assert_allclose(got.map, torch_map.map, atol=1e-4)
        assert got.score == pytest.approx(torch_map.score, abs=1e-4)


def _normals(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray((_image(10 + i, 32) * 255).astype(np.uint8)).save(folder / f"n{i}.png")
    return folder


def test_calibration_stores_the_views_so_scoring_without_them_warns_and_the_card_shows_them(gan_model_with_encoder,
                                                                                              tmp_path, capsys):
    model = tmp_path / "m" / "model.safetensors"
    model.parent.mkdir()
    shutil.copy(gan_model_with_encoder, model)
    normal = _normals(tmp_path / "normal")
    assert cli(["calibrate", "--model", str(model), "--normal", str(normal), "--tta", "flip", "--no-progress"]) == 0
    th = read_metadata(model)["thresholds"]
    assert th["map"]["tta"] == "flip"
    assert Scorer.from_file(model, ScoreOptions(tta="flip")).calibration_mismatch() is None
    assert Scorer.from_file(model).options.tta == "flip"  # the default, auto, scores with the calibrated views
    assert "other map settings" in Scorer.from_file(model, ScoreOptions(tta="none")).calibration_mismatch()
    card = render_card(read_metadata(model))
    assert "--tta flip" in card and "test-time views `flip` averaged" in card
    capsys.readouterr()
    assert cli(["score", "--model", str(model), "--image", str(normal / "n0.png"), "--out", str(tmp_path / "o"),
                "--no-progress", "--tta", "none"]) == 0
    assert "thresholds were calibrated with other map settings" in capsys.readouterr().err
    assert cli(["score", "--model", str(model), "--image", str(normal / "n0.png"), "--out", str(tmp_path / "o2"),
                "--no-progress"]) == 0
    assert "calibrated with other" not in capsys.readouterr().err
    # calibrated without views (an entry as it was before the option): scoring with them warns, without them not
    assert cli(["calibrate", "--model", str(model), "--normal", str(normal), "--no-progress", "--tta", "none"]) == 0
    assert "tta" not in read_metadata(model)["thresholds"]["map"]
    assert Scorer.from_file(model).calibration_mismatch() is None
    assert "other map settings" in Scorer.from_file(model, ScoreOptions(tta="d4")).calibration_mismatch()


def test_bad_values_and_the_latent_search_are_one_line_errors(model_file, gan_model_with_encoder, tmp_path, capsys):
    img = tmp_path / "n" / "n0.png"
    _normals(img.parent, 1)
    for cmd in (["score", "--model", str(gan_model_with_encoder), "--image", str(img), "--out", str(tmp_path / "o")],
                ["evaluate", "--model", str(gan_model_with_encoder), "--data", str(tmp_path), "--out", str(tmp_path / "e")],
                ["calibrate", "--model", str(gan_model_with_encoder), "--normal", str(img.parent)]):
        capsys.readouterr()
        assert cli([*cmd, "--tta", "d8"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "--tta: invalid value 'd8' (one of auto, none, flip, d4)" in err
    with pytest.raises(ConfigError, match="tta: invalid value 'rot'"):
        ScoreOptions(tta="rot")
    # the search (a model without an encoder) and refine: one line naming what to use instead
    capsys.readouterr()
    assert cli(["score", "--model", str(model_file), "--image", str(img), "--out", str(tmp_path / "s"), "--tta", "flip",
                "--iterations", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--tta flip" in err and "inversion mode search" in err and "--tta none" in err
    with pytest.raises(ConfigError, match="inversion mode refine"):
        Scorer.from_file(gan_model_with_encoder, ScoreOptions(search=SearchConfig(mode="refine"), tta="d4"))


def test_comparator_bench_passes_tta_to_cs_maps_and_names_it_in_the_cells_folder(tmp_path):
    from tools.experiments import comparator_bench as cb

    plain = cb.bench_config(cb.parse_args(["--out", str(tmp_path)]))
    flip = cb.bench_config(cb.parse_args(["--out", str(tmp_path), "--tta", "flip", "--width", "32"]))
    assert plain["tta"] == "none" and cb.ctag(plain) == "product"  # the folders of results made before the option
    assert cb.ctag(flip) == "width32-ttaflip"

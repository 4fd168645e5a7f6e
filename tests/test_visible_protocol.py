"""The visible protocol (tools/protocols/visible.py) and its defect maker (visible_defects.py): seeded,
micro-defects under 1% with exact masks, every family visible by the measured rule on every texture,
one family held out of the labelled training images, bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

from nsgan import DataError, texture_image
from tools.protocols.__main__ import main as protocols_main
from tools.protocols import visible as visible_module
from tools.protocols.visible import TEXTURES, build_visible, draw_defective
from tools.protocols.visible_defects import (CONTRAST_MIN, FAMILIES, STRENGTH_MAX, VISIBILITY_MIN, NoPlacement,
                                             make_defects, visibility)

SMALL = dict(size=96, n_train=12, epsilon=0.25, n_abnormal=4, n_test_good=2, n_test_defect=10, max_defects=2)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One small protocol per texture (seed 0), built once."""
    root = tmp_path_factory.mktemp("visible")
    return {t: (root / t, build_visible(root / t, texture=t, seed=0, **SMALL)) for t in TEXTURES}


def _masks(folder: Path):
    return [p for p in sorted(folder.glob("ground_truth*/*/*.png"))]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_same_seed_writes_the_same_folder_and_another_seed_does_not(built, tmp_path):
    folder, _ = built["gravel"]
    build_visible(tmp_path / "again", texture="gravel", seed=0, **SMALL)
    build_visible(tmp_path / "other", texture="gravel", seed=1, **SMALL)
    assert _files(tmp_path / "again") == _files(folder)
    assert _files(tmp_path / "other") != _files(folder)


def test_every_mask_is_non_empty_and_under_one_percent_of_its_image(built):
    for texture, (folder, _) in built.items():
        masks = _masks(folder)
        assert len(masks) == SMALL["n_abnormal"] + SMALL["n_test_defect"], texture
        for path in masks:
            m = np.asarray(Image.open(path)) > 127
            assert 0 < m.sum() < 0.01 * m.size, (texture, path.name, int(m.sum()))


def test_every_defect_on_record_lies_in_the_visibility_band(built):
    for texture, (_, proto) in built.items():
        assert proto["visibility"]["min"] == VISIBILITY_MIN and proto["visibility"]["contrast_min"] == CONTRAST_MIN
        records = [d for group in ("contaminated_train", "labelled_train", "test_defects")
                   for item in proto[group] for d in item["defects"]]
        assert records and all(d["visibility"] >= VISIBILITY_MIN and d["mean_abs_change"] >= CONTRAST_MIN
                               for d in records), texture
        strengths = [min(d["visibility"] / VISIBILITY_MIN, d["mean_abs_change"] / CONTRAST_MIN) for d in records]
        assert max(strengths) <= STRENGTH_MAX + 1e-3, texture  # visible, not glaring
        assert set(proto["visibility"]["by_family"]) == set(FAMILIES), texture


@pytest.mark.parametrize("texture", TEXTURES)
def test_each_family_is_visible_by_the_rule_recomputed_from_the_pixels(texture):
    """Measured again from the clean and defective images, not taken from the maker's own record (both
    bars: visibility against the texture and contrast of full scale); and
    outside the mask (beyond its 2-px soft edge) the image is essentially untouched."""
    rng = np.random.default_rng(7)
    for family in FAMILIES:
        for _ in range(2):
            clean, img, mask, infos = draw_defective(texture, 96, rng, "test", (family,), 1)
            assert [i["family"] for i in infos] == [family]
            assert visibility(clean[:, :, 0], img[:, :, 0], mask) >= VISIBILITY_MIN, (texture, family)
            assert np.abs(img - clean)[:, :, 0][mask].mean() >= CONTRAST_MIN, (texture, family)
            far = ~binary_dilation(mask, iterations=2)
            assert np.abs(img - clean)[:, :, 0][far].max() < 0.08, (texture, family)
            if family == "foreign":
                assert infos[0]["source"] in TEXTURES and infos[0]["source"] != texture


def test_visibility_calls_like_material_about_one_and_no_change_zero():
    """The rule's scale: pasting another piece of the same material changes about as much as the
    texture itself does (≈ 1); the bar of 2.2 asks for more than twice that."""
    rng = np.random.default_rng(0)
    for texture in TEXTURES:
        clean = texture_image(texture, 128, rng, part="test")[:, :, 0].astype(np.float64)
        mask = np.zeros(clean.shape, dtype=bool)
        mask[50:62, 40:52] = True
        pasted = clean.copy()
        pasted[mask] = np.roll(clean, (37, 23), axis=(0, 1))[mask]
        assert 0.5 < visibility(clean, pasted, mask) < 1.6, texture
        assert visibility(clean, clean, mask) == 0.0


def test_the_held_out_family_is_never_labelled_but_is_tested(built):
    for texture, (folder, proto) in built.items():
        hold = proto["holdout"]
        assert hold == "foreign" and hold not in proto["trained_families"]
        labelled = [d["family"] for item in proto["labelled_train"] for d in item["defects"]]
        assert labelled and hold not in labelled, texture
        assert sorted(p.name for p in (folder / "test").iterdir()) == sorted(["good", *FAMILIES])
        assert list((folder / "test" / hold).glob("*.png")) and list((folder / "ground_truth" / hold).glob("*.png"))


def test_another_holdout_moves_out_of_training_and_the_hidden_normals_carry_every_family(tmp_path):
    proto = build_visible(tmp_path / "v", texture="grass", seed=3, holdout="fibre", **{**SMALL, "n_train": 40, "epsilon": 0.5})
    assert proto["holdout"] == "fibre"
    assert "fibre" not in {d["family"] for item in proto["labelled_train"] for d in item["defects"]}
    assert {d["family"] for item in proto["contaminated_train"] for d in item["defects"]} == set(FAMILIES)


def test_round_epsilon_n_train_hidden_defective_images_are_listed_and_unmasked(built):
    for texture, (folder, proto) in built.items():
        hidden = proto["contaminated_train"]
        assert len(hidden) == round(SMALL["epsilon"] * SMALL["n_train"]) == 3, texture
        assert all((folder / h["path"]).is_file() and h["path"].startswith("train/good/") for h in hidden)
        assert len(list((folder / "train" / "good").glob("*.png"))) == SMALL["n_train"]
        assert not (folder / "ground_truth_train" / "good").exists()
        assert proto["counts"]["train/defect"] == SMALL["n_abnormal"]


def test_the_preview_shows_every_family(built):
    folder, proto = built["brick"]
    preview = Image.open(folder / proto["preview"])
    assert preview.mode == "RGB" and preview.size[1] >= len(FAMILIES) * SMALL["size"] * 2


def test_the_cli_builds_it(tmp_path, capsys):
    out = tmp_path / "cli"
    assert protocols_main(["visible", "--out", str(out), "--texture", "grass", "--size", "96", "--n-train", "3",
                           "--n-abnormal", "2", "--n-test-good", "1", "--n-test-defect", "5"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert json.loads((out / "protocol.json").read_text())["protocol"] == "visible"


@pytest.mark.parametrize("argv, named", [
    (["--epsilon", "1.5"], "1.5"),
    (["--holdout", "scratch"], "scratch"),
    (["--families", "foreign,smudge"], "smudge"),
    (["--families", "stain", "--holdout", "stain"], "stain"),
    (["--size", "24"], "24"),
    (["--size", "90", "--max-defects", "2"], "90"),
    (["--max-defects", "0"], "0"),
    (["--n-train", "-1"], "-1"),
])
def test_bad_input_is_one_line_naming_the_value(tmp_path, capsys, argv, named):
    code = protocols_main(["visible", "--out", str(tmp_path / "bad"), *argv])
    err = capsys.readouterr().err
    assert code == DataError("x").exit_code
    assert err.startswith("error: ") and err.count("\n") == 1 and named in err
    assert not (tmp_path / "bad").exists()


def test_a_crop_that_allows_no_placement_is_replaced_and_the_last_failure_is_one_line(monkeypatch):
    """Some crops leave a family no room (a white fibre on bright stones): the builder draws a new crop."""
    real, calls = visible_module.make_defects, []

    def refuses_twice(*args, **kwargs):
        calls.append(1)
        if len(calls) <= 2:
            raise NoPlacement("no fibre defect reached visibility 2.2")
        return real(*args, **kwargs)

    monkeypatch.setattr(visible_module, "make_defects", refuses_twice)
    clean, img, mask, infos = draw_defective("gravel", 96, np.random.default_rng(0), "test", ("stain",), 1)
    assert len(calls) == 3 and mask.any() and infos[0]["family"] == "stain"

    monkeypatch.setattr(visible_module, "make_defects", lambda *a, **k: (_ for _ in ()).throw(NoPlacement("no chip")))
    with pytest.raises(DataError, match="no chip"):
        draw_defective("gravel", 96, np.random.default_rng(0), "test", ("chip",), 1)


def test_the_maker_refuses_a_wrong_image_or_family_in_one_line():
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="unknown defect family 'smudge'"):
        make_defects(np.zeros((64, 64, 1), np.float32) + 0.5, rng, ("smudge",))
    with pytest.raises(DataError, match=r"\(H, W, 1\)"):
        make_defects(np.zeros((64, 64), np.float32), rng, ("stain",))

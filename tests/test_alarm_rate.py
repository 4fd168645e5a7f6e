"""Alarms at a stated false-alarm rate: the exact upper bounds, the region threshold they choose, and the words."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from nsgan.cli.main import main
from nsgan.common.errors import EXIT_DATA, EXIT_UNMET, EXIT_USAGE
from nsgan.data.imageio import write_png
from nsgan.evaluate.alarm_rate import (AlarmChoice, Unreachable, candidate_thresholds, choose_region_threshold,
                                       clopper_pearson_upper, count_alarms, count_regions, images_needed,
                                       megapixels_needed, poisson_upper, regions_per_mp_upper)
from nsgan.models.model_file import read_metadata
from nsgan.score.alarms import ALARMS, NOT_ALARMS_NO_RATE, NOT_ALARMS_UNCALIBRATED
from nsgan.score.regions import find_regions

FAST = ["--inversion", "search", "--iterations", "2", "--restarts", "1", "--no-progress"]


# ------------------------------------------------------------------------------ the bounds

def test_poisson_bound_known_values():
    assert poisson_upper(0, 0.95) == pytest.approx(-math.log(0.05))  # 2.996: the "rule of three"
    for k, table in ((1, 4.744), (2, 6.296), (5, 10.513), (10, 16.962)):  # Garwood's one-sided 95% upper limits
        assert poisson_upper(k, 0.95) == pytest.approx(table, abs=5e-3)
        assert poisson_upper(k, 0.95) == pytest.approx(stats.chi2.ppf(0.95, 2 * k + 2) / 2)
    for k in (0, 1, 3, 20):  # exactness: at the bound, k or fewer events happen with probability 1 − confidence
        assert stats.poisson.cdf(k, poisson_upper(k, 0.9)) == pytest.approx(0.1)
    assert regions_per_mp_upper(0, 12.5, 0.95) == pytest.approx(-math.log(0.05) / 12.5)
    assert megapixels_needed(0.1, 0.95) == pytest.approx(29.957, abs=1e-3)


def test_clopper_pearson_known_values():
    for n in (1, 7, 40, 300):  # 0 of n: 1 − α^(1/n)
        assert clopper_pearson_upper(0, n, 0.95) == pytest.approx(1 - 0.05 ** (1 / n))
    assert clopper_pearson_upper(1, 10, 0.95) == pytest.approx(0.3942, abs=1e-4)
    assert clopper_pearson_upper(10, 10, 0.95) == 1.0
    for k, n in ((0, 5), (2, 30), (9, 40)):  # exactness: P(X ≤ k | n, bound) = 1 − confidence
        assert stats.binom.cdf(k, n, clopper_pearson_upper(k, n, 0.95)) == pytest.approx(0.05)
    assert images_needed(0.05, 0.95) == 59  # the classic "59 good parts with no failure"
    assert clopper_pearson_upper(0, 59, 0.95) <= 0.05 < clopper_pearson_upper(0, 58, 0.95)


# ------------------------------------------------------------------------------ a planted set

PEAKS = (0.95, 0.90, 0.85, 0.80, 0.75, 0.70)  # one 3×3 region each, in images 0, 3, 6, ...


def planted(n: int = 40, side: int = 250, quantised: bool = True, seed: int = 0) -> list[np.ndarray]:
    """Normal maps: background below 0.5 (0.01 steps when quantised, so every distinct value is a candidate),
    six planted regions of known peak, and a single hot pixel (0.99) too small to be a region."""
    rng = np.random.default_rng(seed)
    maps = []
    for i in range(n):
        bg = rng.integers(0, 50, (side, side)) / 100 if quantised else rng.random((side, side)) * 0.5
        maps.append(bg.astype(np.float32))
    for j, peak in enumerate(PEAKS[: (n + 2) // 3]):
        maps[3 * j][side // 2 : side // 2 + 3, side // 2 : side // 2 + 3] = peak
    maps[1][10, 10] = 0.99
    return maps


def test_counts_are_the_regions_scoring_draws():
    maps = planted(n=8)
    for t in (0.49, 0.72, 0.85, 0.9):
        for m in maps:
            assert count_regions(m, t, 4) == len(find_regions([(0, m)], t, 4))
    assert count_alarms(maps, 0.5, 4) == (3, 3) and count_alarms(maps, 0.5, 1) == (4, 4)  # the hot pixel counts only at area 1


def test_region_threshold_meets_the_rate_and_is_the_least_that_does():
    maps = planted()
    mp = 40 * 250 * 250 / 1e6  # 2.5 MP
    rate = 3.0  # per MP: bound(2) = 6.30 / 2.5 = 2.52 passes, bound(3) = 7.75 / 2.5 = 3.10 fails
    choice = choose_region_threshold(maps, 4, 0.95, regions_per_mp=rate)
    assert isinstance(choice, AlarmChoice)
    assert choice.threshold == pytest.approx(0.85)  # above it: the 0.95 and 0.90 regions only
    assert (choice.false_regions, choice.flagged_images, choice.n_images) == (2, 2, 40)
    assert choice.megapixels == pytest.approx(mp) and choice.regions_bound == pytest.approx(poisson_upper(2, 0.95) / mp)
    assert choice.regions_bound <= rate
    # on the set it was chosen on: the rate holds at the threshold and every candidate above it...
    cands = candidate_thresholds(maps)
    assert len(cands) == len(np.unique(np.concatenate([m.ravel() for m in maps])))  # all distinct values: exact
    for t in cands[cands >= choice.threshold]:
        assert regions_per_mp_upper(count_alarms(maps, float(t), 4)[0], mp, 0.95) <= rate
    # ...and at the next lower one, and so at any lower threshold down to it, it does not
    lower = float(cands[cands < choice.threshold][0])
    assert regions_per_mp_upper(count_alarms(maps, lower, 4)[0], mp, 0.95) > rate


def test_flagged_share_and_both_targets():
    maps = planted()
    share = 0.15  # 40 images: 2 flagged gives 0.149, 3 gives 0.180
    assert clopper_pearson_upper(2, 40, 0.95) <= share < clopper_pearson_upper(3, 40, 0.95)
    choice = choose_region_threshold(maps, 4, 0.95, flagged_share=share)
    assert choice.threshold == pytest.approx(0.85) and choice.flagged_images == 2 and choice.flagged_bound <= share
    both = choose_region_threshold(maps, 4, 0.95, regions_per_mp=2.0, flagged_share=share)  # 2.0/MP: 1 region (1.90)
    assert both.threshold == pytest.approx(0.90) and both.false_regions == 1
    # continuous values: a quantile grid, and the chosen threshold still meets the rate on its set
    cont = planted(quantised=False)
    c = choose_region_threshold(cont, 4, 0.95, regions_per_mp=3.0)
    assert regions_per_mp_upper(count_alarms(cont, c.threshold, 4)[0], 2.5, 0.95) <= 3.0 and c.threshold < 0.9


def test_a_target_too_few_normals_cannot_show_is_said():
    maps = planted(n=5, side=64)
    got = choose_region_threshold(maps, 4, 0.95, flagged_share=0.05)
    assert isinstance(got, Unreachable) and "59 held-out normal images" in got.message and "(have 5)" in got.message
    got = choose_region_threshold(maps, 4, 0.95, regions_per_mp=0.1)
    assert isinstance(got, Unreachable) and "30 MP" in got.message


# ------------------------------------------------------------------------------ through the CLI

def _normals(folder: Path, n: int, side: int = 24, seed: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        write_png(folder / f"n{i:02d}.png", (0.5 + 0.05 * rng.random((side, side, 1))).astype(np.float32))
    return folder


def test_calibrate_at_a_rate_writes_the_fields_and_the_words(model_file, tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    model.write_bytes(model_file.read_bytes())
    normal = _normals(tmp_path / "normal", 12)  # 12 × 576 px = 0.0069 MP: 0 regions bound 434 per MP
    assert main(["calibrate", "--model", str(model), "--normal", str(normal), "--false-regions-per-mp", "1000",
                 "--flagged-share", "0.5", *FAST]) == 0
    out = capsys.readouterr().out
    th = read_metadata(model)["thresholds"]
    alarm = th["alarm"]
    assert alarm["target_regions_per_mp"] == 1000 and alarm["target_flagged_share"] == 0.5 and alarm["confidence"] == 0.95
    assert alarm["n_images"] == 12 and alarm["megapixels"] == pytest.approx(12 * 576 / 1e6)
    assert alarm["regions_bound"] == pytest.approx(poisson_upper(alarm["false_regions"], 0.95) / alarm["megapixels"])
    assert alarm["regions_bound"] <= 1000 and alarm["flagged_bound"] <= 0.5 and alarm["min_region_area"] == 4
    assert "false-alarm target" in th["pixel_method"]
    words = f"≤ 1000 false regions per MP at 95% confidence ({alarm['false_regions']} in 0.00691 MP of 12 held-out normal images"
    assert ALARMS + words in out
    body = (tmp_path / "README.md").read_text()
    assert f"| regions | {ALARMS}{words}" in body and "≤ 50% of good images flagged at 95% confidence" in body

    assert main(["score", "--model", str(model), "--image", str(normal / "n00.png"), "--out", str(tmp_path / "o"), *FAST]) == 0
    report = json.loads((tmp_path / "o" / "n00.json").read_text())
    assert report["thresholds"]["alarms"].startswith(ALARMS + words)
    page = (tmp_path / "o" / "index.html").read_text()
    assert "false regions per MP at 95% confidence" in page


def test_uncalibrated_and_quantile_boxes_say_they_are_not_alarms(model_file, tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    model.write_bytes(model_file.read_bytes())
    normal = _normals(tmp_path / "normal", 2)
    assert main(["score", "--model", str(model), "--image", str(normal / "n00.png"), "--out", str(tmp_path / "u"), *FAST]) == 0
    assert f"regions: {NOT_ALARMS_UNCALIBRATED}" in capsys.readouterr().out  # said once on the command line too
    assert json.loads((tmp_path / "u" / "n00.json").read_text())["thresholds"]["alarms"] == NOT_ALARMS_UNCALIBRATED
    assert "boxes are not alarms" in (tmp_path / "u" / "index.html").read_text()
    assert main(["calibrate", "--model", str(model), "--normal", str(normal), *FAST]) == 0
    assert NOT_ALARMS_NO_RATE in capsys.readouterr().out
    assert f"| regions | {NOT_ALARMS_NO_RATE} |" in (tmp_path / "README.md").read_text()
    assert main(["score", "--model", str(model), "--image", str(normal / "n00.png"), "--out", str(tmp_path / "q"), *FAST]) == 0
    assert json.loads((tmp_path / "q" / "n00.json").read_text())["thresholds"]["alarms"] == NOT_ALARMS_NO_RATE


@pytest.mark.parametrize("flags, code, says", [
    (["--false-regions-per-mp", "-0.1"], EXIT_USAGE, "--false-regions-per-mp: -0.1 is not a positive rate"),
    (["--false-regions-per-mp", "nan"], EXIT_USAGE, "--false-regions-per-mp: nan is not a positive rate"),
    (["--flagged-share", "1.5"], EXIT_USAGE, "--flagged-share: 1.5 is not in (0, 1)"),
    (["--false-regions-per-mp", "1000", "--confidence", "1"], EXIT_USAGE, "--confidence: 1 is not in (0, 1)"),
    (["--flagged-share", "0.05"], EXIT_UNMET, "needs ≥ 59 held-out normal images even with 0 flagged (have 3)"),
    (["--false-regions-per-mp", "1"], EXIT_UNMET, "needs ≥ 3 MP of held-out normal images even with 0 regions"),
])
def test_bad_targets_get_one_line_and_an_exit_code(model_file, tmp_path, capsys, flags, code, says):
    model = tmp_path / "m.safetensors"
    model.write_bytes(model_file.read_bytes())
    normal = _normals(tmp_path / "normal", 3)
    assert main(["calibrate", "--model", str(model), "--normal", str(normal), *flags, *FAST]) == code
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "thresholds" not in read_metadata(model)  # nothing written


def test_no_normal_images_is_one_line(model_file, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["calibrate", "--model", str(model_file), "--normal", str(tmp_path / "empty"),
                 "--false-regions-per-mp", "1", *FAST]) == EXIT_DATA
    assert "no images" in capsys.readouterr().err


def test_a_broken_alarm_entry_is_a_broken_model_file():
    from nsgan.common.errors import ModelError
    from nsgan.score.postprocess import Calibration

    good = {"confidence": 0.95, "min_region_area": 4, "n_images": 40, "megapixels": 31.5, "false_regions": 0,
            "flagged_images": 0, "regions_bound": 0.095, "flagged_bound": 0.072, "target_regions_per_mp": 0.1}
    cal = Calibration.from_dict({"pixel": 0.3, "alarm": good})
    assert cal.to_dict()["alarm"] == good and cal.alarm.describe().startswith(
        "≤ 0.1 false regions per MP at 95% confidence (0 in 31.5 MP of 40 held-out normal images; upper bound 0.095 per MP)")
    with pytest.raises(ModelError, match="lacks"):
        Calibration.from_dict({"pixel": 0.3, "alarm": {"confidence": 0.95}})
    with pytest.raises(ModelError, match="n_images not a number"):
        Calibration.from_dict({"pixel": 0.3, "alarm": {**good, "n_images": "40"}})

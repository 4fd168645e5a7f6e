"""Sample quality (PGGAN's multi-scale SWD, the spread across z): the measure itself on real texture crops,
and its place in training: metrics.jsonl, TensorBoard, the model card, exact resume, no effect on the weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from nsgan.common.errors import ConfigError
from nsgan.data.textures import texture_photo
from nsgan.models.model_file import read_metadata
from nsgan.models.sample_quality import QualitySettings, laplacian_pyramid, pyr_up, sample_quality
from nsgan.train.config import load_config
from nsgan.train.pipeline import train

from .conftest import TINY, assert_same_model, tensorboard_log, training_rows

SIDE = 32


def brick_crops(n: int, seed: int, blur: float = 0.0, noise: float = 0.0) -> torch.Tensor:
    """n random 32-px crops of the brick photo in [-1, 1], optionally blurred or with added noise."""
    photo = texture_photo("brick")[:, :, 0]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        y, x = rng.integers(0, photo.shape[0] - SIDE, 2)
        c = photo[y:y + SIDE, x:x + SIDE] * 2 - 1
        c = gaussian_filter(c, blur) if blur else c
        out.append(c + noise * rng.standard_normal(c.shape) if noise else c)
    return torch.tensor(np.stack(out), dtype=torch.float32)[:, None]


@pytest.fixture(scope="module")
def reals() -> torch.Tensor:
    return brick_crops(256, seed=0)


def test_the_pyramid_rebuilds_the_images_and_has_a_level_per_octave_down_to_the_coarsest(reals):
    levels = laplacian_pyramid(reals, 3)
    assert [lv.shape[-1] for lv in levels] == [32, 16, 8]
    rebuilt = levels[2]
    for band in (levels[1], levels[0]):
        rebuilt = band + pyr_up(rebuilt)
    assert torch.allclose(rebuilt, reals, atol=1e-5)
    assert sample_quality(reals[:128], reals).resolutions == (32, 16, 8)
    assert sample_quality(reals[:128], reals, QualitySettings(min_resolution=16)).resolutions == (32, 16)


def test_a_set_against_itself_scores_zero_and_two_draws_of_the_material_score_near_the_reference(reals):
    same = sample_quality(reals[:128], reals)  # the fakes are half A itself
    assert same.swd == pytest.approx((0.0, 0.0, 0.0), abs=1e-6)
    fresh = sample_quality(brick_crops(128, seed=1), reals)  # other crops of the same photo
    one = sample_quality(reals[:1].repeat(128, 1, 1, 1), reals)  # one pattern whatever z
    assert all(0.5 < r < 2.0 for r in fresh.swd_ratio), fresh
    assert all(r > 5.0 for r in one.swd_ratio), one
    assert all(ref < 0.2 * s for ref, s in zip(fresh.swd_real, one.swd))
    assert fresh.swd_real == same.swd_real  # the reference depends on the reals only


def test_swd_grows_with_the_shift_away_from_the_material(reals):
    """Blur, noise and mode collapse, each a little, more, most: the finest level's SWD grows every time."""
    def finest(fakes):
        return sample_quality(fakes, reals).swd[0]

    blurred = [finest(brick_crops(128, seed=1, blur=s)) for s in (0.0, 0.7, 1.5, 3.0)]
    noisy = [finest(brick_crops(128, seed=1, noise=a)) for a in (0.0, 0.05, 0.15, 0.4)]
    fresh = brick_crops(128, seed=1)
    collapsed = []
    for share in (0.0, 0.25, 0.5, 1.0):
        k = int(share * 128)
        collapsed.append(sample_quality(torch.cat([fresh[:1].repeat(k, 1, 1, 1), fresh[k:]]), reals).swd)
    for figures in (blurred, noisy, [c[0] for c in collapsed]):
        assert all(a < b for a, b in zip(figures, figures[1:])), figures
    assert all(a < b for level in range(3) for a, b in zip([c[level] for c in collapsed], [c[level] for c in collapsed][1:])), collapsed


def test_the_spread_across_samples_is_zero_for_one_image_and_one_for_the_material(reals):
    assert sample_quality(reals[:1].repeat(128, 1, 1, 1), reals).diversity == 0.0
    assert sample_quality(brick_crops(128, seed=1), reals).diversity == pytest.approx(1.0, abs=0.1)
    assert sample_quality(brick_crops(128, seed=1, blur=2.0), reals).diversity < 0.9  # blur flattens the material


def test_the_figures_are_the_same_every_time_and_the_global_rng_is_untouched(reals):
    fakes = brick_crops(128, seed=1)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a, b = sample_quality(fakes, reals), sample_quality(fakes, reals)
    assert a == b and torch.equal(torch.get_rng_state(), before)
    other = sample_quality(fakes, reals, QualitySettings(seed=1))
    assert other.swd != a.swd  # other directions and positions: another estimate


def test_quality_keys_are_checked_at_the_door(tiny_overrides):
    for bad, needle in (("quality.samples=1", "quality.samples"), ("quality.repeats=0", "quality.repeats"),
                        ("quality.directions=-3", "quality.directions"), ("quality.sample=8", "unknown key 'quality.sample'")):
        with pytest.raises(ConfigError, match=needle):
            load_config(None, [*tiny_overrides, bad])
    with pytest.raises(ValueError, match="repeats"):
        QualitySettings(repeats=0)


def _quality_rows(run):
    return [r for r in (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()) if r.get("kind") == "sample_quality"]


def _figures(run):
    """The quality rows without the seconds each took."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in _quality_rows(run)]


def test_a_training_run_measures_at_each_phase_end_state_and_the_end_into_metrics_tensorboard_and_the_card(
        tiny_overrides, tmp_path, uninterrupted_tiny_model):
    """TINY: 8 px stable to 64 images, 16 px fade to 128, stable to 256; states every 64. One row per point,
    a state at a phase's edge labelled as the phase's end; the figures are the same as the uninterrupted run's."""
    model = train(load_config(None, tiny_overrides))
    rows = _quality_rows(tmp_path / "run")
    assert [(r["images_seen"], r["at"], r["resolution"]) for r in rows] == [
        (64, "phase_end", 8), (128, "phase_end", 16), (192, "checkpoint", 16), (256, "end", 16)]
    assert rows[1]["alpha"] < 1.0 and rows[-1]["alpha"] == 1.0  # the fade's last step, then stable
    last = rows[-1]
    assert {"swd_16px", "swd_real_16px", "swd_ratio_16px", "swd_8px", "diversity", "samples", "seconds"} <= last.keys()
    assert last["samples"] == 128 and last["swd_ratio_16px"] == pytest.approx(last["swd_16px"] / last["swd_real_16px"], rel=1e-3)
    assert last["swd_16px"] > 0 and last["swd_real_16px"] > 0
    meta = read_metadata(model)
    assert meta["sample_quality"] == {k: v for k, v in last.items() if k != "kind"}
    card = (tmp_path / "run" / "README.md").read_text()
    section = card.split("## Sample quality", 1)[1].split("## ", 1)[0]
    assert "0.256 kimg" in section and "| 16 px |" in section and "| 8 px |" in section and f"{last['diversity']:.2f}×" in section
    tb = tensorboard_log(tmp_path / "run" / "tb" / "gan")
    assert [step for step, _ in tb["scalars"]["sample_quality/swd_16px"]] == [128, 192, 256]
    assert [step for step, _ in tb["scalars"]["loss_d"]] == [r["images_seen"] for r in training_rows(tmp_path / "run" / "metrics.jsonl")]
    assert _figures(uninterrupted_tiny_model.parent) == _figures(tmp_path / "run")  # the same z, reals and directions


def test_measuring_changes_nothing_in_training_and_off_writes_no_rows(tiny_overrides, tmp_path, uninterrupted_tiny_model):
    model = train(load_config(None, [*tiny_overrides, "quality.samples=0"]))
    assert_same_model(model, uninterrupted_tiny_model)  # measured (the fixture) or not: the same weights
    assert _quality_rows(tmp_path / "run") == [] and "sample_quality" not in read_metadata(model)
    assert "Not measured" in (tmp_path / "run" / "README.md").read_text().split("## Sample quality", 1)[1]


def test_a_resumed_run_measures_each_point_once_with_the_same_figures(tiny_overrides, tmp_path, uninterrupted_tiny_model):
    train(load_config(None, [*tiny_overrides, "schedule.total_kimg=0.128"]))  # ends at the 16-px fade's end: measured there
    model = train(load_config(None, tiny_overrides), resume=True)
    assert_same_model(model, uninterrupted_tiny_model)
    resumed = _figures(tmp_path / "run")
    assert [r["images_seen"] for r in resumed] == [64, 128, 192, 256]  # 128: measured before the break, not again after
    assert resumed == _figures(uninterrupted_tiny_model.parent)


def test_the_display_prints_a_measured_row_at_once_and_keeps_its_summary_for_the_progress_line(capsys):
    from nsgan.train.display import TrainingDisplay

    display = TrainingDisplay(1000, enabled=True)  # not a terminal under pytest: plain lines
    display.measured({"kind": "sample_quality", "at": "phase_end", "images_seen": 500, "kimg": 0.5, "resolution": 16,
                      "swd_16px": 80.0, "swd_real_16px": 20.0, "swd_ratio_16px": 4.0, "swd_ratio_8px": 2.5, "diversity": 0.62})
    line = capsys.readouterr().out
    assert "sample quality at kimg 0.5 (16px, phase_end)" in line and "16px:4.0× 8px:2.5×" in line and "spread 0.62×" in line
    assert display.quality.strip() == line.split("):", 1)[1].strip()
    display.close()

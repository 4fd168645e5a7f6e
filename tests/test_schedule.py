"""The progressive schedule is a pure function of images seen: deterministic, monotone, resumable."""

import dataclasses
import json

import pytest

from nsgan.common.errors import ConfigError
from nsgan.train.schedule import Phase, ScheduleConfig, phase_boundaries, schedule, total_images

# 32x32 final: levels 0..3; 2 kimg stable, 1 kimg fade; total 20 kimg
CFG = ScheduleConfig(
    resolution=32,
    stable_kimg=2,
    fade_kimg=1,
    total_kimg=20,
    batch={4: 64, 16: 16},
    default_batch=99,
    lr=0.002,
    lr_per_res={32: 0.001},
)


def run(cfg, world_size=1, start=0, stop_at=None):
    """The training loop's use: one phase per step, images_seen += global batch."""
    phases, seen = [], start
    while True:
        phase = schedule(seen, cfg, world_size)
        phases.append((seen, phase))
        if phase.done or (stop_at is not None and seen >= stop_at):
            return phases
        seen += phase.global_batch


def test_timeline_of_levels_stages_and_alpha():
    at = lambda kimg: schedule(int(kimg * 1000), CFG)  # noqa: E731
    assert (at(0).level, at(0).stage, at(0).alpha, at(0).index) == (0, "stable", 1.0, 0)
    assert (at(1.999).level, at(1.999).stage) == (0, "stable")
    assert (at(2).level, at(2).stage, at(2).alpha, at(2).index) == (1, "fade", 0.0, 1)
    assert at(2.5).alpha == pytest.approx(0.5)
    assert (at(3).level, at(3).stage, at(3).alpha, at(3).index) == (1, "stable", 1.0, 2)
    assert (at(5).level, at(5).stage, at(5).index) == (2, "fade", 3)
    assert (at(8).level, at(8).stage, at(8).index, at(8).resolution) == (3, "fade", 5, 32)
    assert (at(19.9).level, at(19.9).stage, at(19.9).index, at(19.9).done) == (3, "stable", 6, False)
    assert at(20).done and at(25).done and at(25).level == 3
    assert at(2.5).kimg == 2.5


def test_same_input_same_output():
    for seen in (0, 1999, 2000, 2345, 7777, 20000):
        assert schedule(seen, CFG, 2) == schedule(seen, CFG, 2)
    assert schedule(2345, CFG) == schedule(2345, dataclasses.replace(CFG))


@pytest.mark.parametrize("world_size", [1, 3])
def test_resumed_run_equals_uninterrupted_run(world_size):
    whole = run(CFG, world_size)
    for cut in (5, len(whole) // 2, len(whole) - 2):
        seen_at_cut = whole[cut][0]
        first = run(CFG, world_size, stop_at=seen_at_cut)
        second = run(CFG, world_size, start=seen_at_cut)  # a fresh process knows only images_seen
        assert first[:-1] + second == whole


def test_alpha_rises_within_fades_levels_never_go_down_and_done_at_total():
    steps = [p for _, p in run(CFG)]
    for before, after in zip(steps, steps[1:]):
        assert after.level >= before.level and after.index >= before.index
        if after.index == before.index and after.stage == "fade":
            assert after.alpha > before.alpha
    assert all(p.alpha == 1.0 for p in steps if p.stage == "stable")
    assert all(0.0 <= p.alpha < 1.0 for p in steps if p.stage == "fade")
    assert [p.done for p in steps].index(True) == len(steps) - 1
    assert steps[-1].kimg * 1000 >= total_images(CFG) == 20000
    assert sorted({p.index for p in steps}) == list(range(7))


def test_batch_and_lr_per_resolution_use_nearest_smaller_entry():
    by_res = {p.resolution: p for _, p in run(CFG)}
    assert [by_res[r].batch for r in (4, 8, 16, 32)] == [64, 64, 16, 16]
    assert [by_res[r].lr for r in (4, 8, 16, 32)] == [0.002, 0.002, 0.002, 0.001]
    bare = ScheduleConfig(resolution=16, batch={8: 32}, default_batch=12)
    assert [bare.batch_for(r) for r in (4, 8, 16)] == [12, 32, 32]
    assert schedule(0, CFG, world_size=4).global_batch == 4 * 64


def test_fade_zero_skips_fades_and_late_start_resolution():
    cfg = ScheduleConfig(resolution=32, start_resolution=8, stable_kimg=1, fade_kimg=0, total_kimg=10)
    phases = {p.index: p for _, p in run(cfg)}
    assert sorted(phases) == [0, 2, 4] and {p.stage for p in phases.values()} == {"stable"}
    assert schedule(0, cfg).resolution == 8 and schedule(1000, cfg).resolution == 16


def test_stable_zero_fades_level_after_level():
    cfg = ScheduleConfig(resolution=16, stable_kimg=0, fade_kimg=1, total_kimg=5)
    assert (schedule(0, cfg).level, schedule(0, cfg).stage, schedule(0, cfg).index) == (1, "fade", 1)
    assert (schedule(1500, cfg).level, schedule(1500, cfg).alpha) == (2, 0.5)
    assert (schedule(2000, cfg).stage, schedule(2000, cfg).index) == ("stable", 4)
    spans = phase_boundaries(cfg)
    assert [(s.start_kimg, s.end_kimg, s.phase.index) for s in spans] == [(0, 1, 1), (1, 2, 3), (2, 5, 4)]


def test_phase_boundaries_cover_the_run_in_order():
    spans = phase_boundaries(CFG)
    assert [s.phase.index for s in spans] == list(range(7))
    assert spans[0].start_kimg == 0 and spans[-1].end_kimg == 20
    assert all(a.end_kimg == b.start_kimg for a, b in zip(spans, spans[1:]))
    for span in spans:
        assert schedule(round(span.start_kimg * 1000), CFG) == span.phase
        assert isinstance(span.phase, Phase)
    short = phase_boundaries(dataclasses.replace(CFG, total_kimg=2.5))
    assert [(s.start_kimg, s.end_kimg, s.phase.stage) for s in short] == [(0, 2, "stable"), (2, 2.5, "fade")]


def test_config_survives_a_json_round_trip():
    again = ScheduleConfig(**json.loads(json.dumps(dataclasses.asdict(CFG))))  # dict keys become str
    assert again == CFG and again.batch == {4: 64, 16: 16}


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"resolution": 48}, "resolution"),
        ({"resolution": 2}, "resolution"),
        ({"start_resolution": 64}, "start_resolution"),
        ({"start_resolution": 6}, "start_resolution"),
        ({"stable_kimg": 0, "fade_kimg": 0}, "stable_kimg"),
        ({"stable_kimg": -1}, "stable_kimg"),
        ({"fade_kimg": -1}, "fade_kimg"),
        ({"total_kimg": float("nan")}, "total_kimg"),
        ({"default_batch": 0}, "default_batch"),
        ({"lr": 0}, "lr"),
        ({"batch": {12: 8}}, "batch.12"),
        ({"batch": {16: 0}}, "batch.16"),
        ({"batch": {16: 2.5}}, "batch.16"),
        ({"lr_per_res": {8: -0.1}}, "lr_per_res.8"),
        ({"lr_per_res": [1]}, "lr_per_res"),
    ],
)
def test_bad_config_raises_naming_the_field(changes, field):
    kwargs = {"resolution": 32, **changes}
    with pytest.raises(ValueError, match=f"schedule.{field}") as err:
        ScheduleConfig(**kwargs)
    assert isinstance(err.value, ConfigError) and err.value.exit_code == 2
    assert "\n" not in str(err.value)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="images_seen"):
        schedule(-1, CFG)
    with pytest.raises(ValueError, match="world_size"):
        schedule(0, CFG, world_size=0)

"""tools/experiments/comparator_bench.py's protocol switch (issue 25): the visible protocol's folders, families and
the held-out family's gap, on data made here."""

from __future__ import annotations

import json

import pytest

from tools.experiments import comparator_bench as cb

CFG = {"protocol_name": "visible", "visible_protocol": {"size": 96, "epsilon": 0.1, "n_train": 10, "n_abnormal": 2,
                                                         "n_test_good": 2, "n_test_defect": 5}}


def test_visible_cells_have_folders_of_their_own_and_textures_keep_theirs():
    assert cb.cell_name(CFG, "gravel", 2) == "vis-gravel-s2" and cb.cell_name(CFG, "gravel") == "vis-gravel"
    assert cb.cell_name({"protocol_name": "textures"}, "gravel", 2) == "gravel-s2"


def test_build_data_writes_the_visible_protocol_with_its_family_held_out(tmp_path):
    d = cb.build_data(CFG, tmp_path, "brick", 0)
    proto = json.loads((d / "protocol.json").read_text())
    assert d.name == "vis-brick-s0" and proto["holdout"] == "foreign" and "foreign" not in proto["trained_families"]
    assert len(cb.test_items(d)) == 7


def _row(per_kind_image: dict) -> dict:
    return {"per_kind": {k: {"image_auroc": v, "pixel_auroc": v, "aupro": v} for k, v in per_kind_image.items()}}


def test_family_gap_is_the_held_out_family_against_the_mean_of_the_trained_ones():
    data = {"brick": {0: {"C-blur": _row({"foreign": 0.7, "chip": 0.9, "stain": 0.8})},
                      1: {"C-blur": _row({"foreign": 0.9, "chip": 1.0, "stain": 0.9})}}}
    assert cb.kinds_of(data) == ["chip", "foreign", "stain"]
    line = next(x for x in cb.family_gaps(data, ["brick"], [0, 1], "foreign") if x.startswith("| brick |"))
    assert "0.800 / 0.800 / 0.800" in line and "0.900 / 0.900 / 0.900" in line and line.endswith("-0.100 / -0.100 |")


def test_the_visible_protocol_trains_no_held_out_kind_runs():
    args = cb.parse_args(["--out", "x", "--protocol", "visible"])
    cfg = cb.bench_config(args)
    assert cfg["held_out_which"] == "none" and cfg["protocol_name"] == "visible" and "visible_protocol" in cfg
    assert all(held is None for _, held in cb.c_runs(cfg, 0))


def test_rule_scores_read_the_top_of_the_map_and_the_largest_region():
    import numpy as np
    from types import SimpleNamespace

    flat, peaked = np.zeros((32, 32), np.float32), np.zeros((32, 32), np.float32)
    peaked[5, 5] = 1.0  # one false peak: the map max jumps, the top-16 mean barely moves
    rules = cb.rule_scores([flat, peaked], [[], [SimpleNamespace(area=3, peak=0.5), SimpleNamespace(area=1, peak=1.0)]])
    assert rules["top16_mean"].tolist() == [0.0, 1 / 16] and rules["region_area_x_peak"].tolist() == [0.0, 1.5]
    assert rules["map_max"].tolist() == [0.0, 1.0]  # from the map, whatever the scorer's default image score


def test_the_oracle_trains_on_train_good_without_its_dirty_images(tmp_path):
    d = cb.build_data(CFG, tmp_path, "brick", 0)
    dirty = {p["path"].split("/")[-1] for p in json.loads((d / "protocol.json").read_text())["contaminated_train"]}
    clean = cb.clean_normals(d, tmp_path / "clean" / "x")
    names = {p.name for p in clean.iterdir()}
    assert dirty and not names & dirty and names | dirty == {p.name for p in (d / "train" / "good").iterdir()}
    cfg = cb.bench_config(cb.parse_args(["--out", "x", "--protocol", "visible", "--oracle", "--epsilon", "0.4", "--variants", "blur"]))
    assert cb.c_runs(cfg, 0) == [("blur", None), ("blur", cb.CLEAN)] and cfg["visible_protocol"]["epsilon"] == 0.4
    assert cb.cell_name(cfg, "brick", 1) == "vis-brick-eps0.4-s1"


def test_noise_gap_is_oracle_minus_dirty_with_the_seed_spread():
    row = lambda v: {"image_auroc": v, "pixel_auroc": v, "aupro": v}  # noqa: E731
    data = {"brick": {0: {"C-blur": row(0.8), "C-blur-clean": row(0.9)}, 1: {"C-blur": row(0.9), "C-blur-clean": row(0.9)}}}
    line = next(x for x in cb.noise_gap(data, ["brick"], [0, 1]) if x.startswith("| brick |"))
    assert "+0.050 / +0.050 / +0.050" in line and line.endswith("| 0.100 / 0.000 |")


def test_the_robust_c_has_a_folder_of_its_own_and_trains_with_denoise():
    plain = cb.bench_config(cb.parse_args(["--out", "x", "--protocol", "visible"]))
    robust = cb.bench_config(cb.parse_args(["--out", "x", "--protocol", "visible", "--denoise"]))
    assert cb.ctag(plain) == "product" and cb.ctag(robust) == "product-denoise"  # the rows do not mix
    assert not plain["denoise"] and robust["denoise"]

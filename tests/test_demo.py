"""The README's main job, shrunk: data painted, shards, training, export, a scored full-size image."""

from __future__ import annotations

import json

import numpy as np
import tifffile
from scipy import ndimage

from nsgan.cli.main import main as cli
from nsgan.data.imageio import read_image
from nsgan.evaluate.defect_match import match_defects
from nsgan.models.model_file import load_model, read_metadata
from nsgan.share.card import card_path

SMALL = ["model.resolution=16", "model.latent_dim=16", "model.fmap_base=64", "model.fmap_max=16",
         "schedule.start_resolution=8", "schedule.stable_kimg=0.05", "schedule.fade_kimg=0.05",
         "schedule.total_kimg=0.2", "train.checkpoint_kimg=0.1", "train.display=false", "data.num_workers=0",
         "encoder.kimg=0.064", "encoder.batch=8", "comparator.kimg=0.064", "comparator.batch=8"]


TINY_TARGET = ["--holdout", "4", "--false-regions-per-mp", "400"]  # 4 × 64² px = 0.016 MP shows ≥ 183 per MP at best


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli(["demo", "--out", str(out), "--image-size", "64", "--search-iterations", "3", *TINY_TARGET, *SMALL]) == 0
    said = capsys.readouterr().out
    summary = json.loads((out / "demo.json").read_text())
    model = load_model(out / "run" / "model.safetensors")
    assert model.resolution == 16 and model.encoder is not None  # the demo config trains an encoder too
    assert model.comparator is not None and model.comparator.spec.reference == "blur"  # and C, whose map is the default
    assert (out / "run" / "samples" / "final.png").is_file() and (out / "run" / "samples" / "reals.png").is_file()
    assert (out / "score" / "part_full.overlay.png").is_file()
    assert "part_full" in (out / "score" / "index.html").read_text()  # the inspection page, as `nsgan score` writes
    assert 0.0 <= summary["pixel_auroc"] <= 1.0 and "pixel AUROC" in said
    report = json.loads((out / "score" / "part_full.json").read_text())
    assert report["shape"] == [64, 64] and report["score"] == summary["image_score"]
    assert report["search"]["mode"] == "encoder"  # nsgan score's default for a model with an encoder
    assert summary["data"]["hidden_defects"] > 0  # dirty "normal" data, as the method assumes
    assert "part_full.overlay.png" in said
    for step in range(1, 6):
        assert f"{step}/5 " in said

    # calibrated as `nsgan calibrate --false-regions-per-mp 400` does: thresholds with the target in the model file, card refreshed
    th = read_metadata(out / "run" / "model.safetensors")["thresholds"]
    assert th["alarm"]["target_regions_per_mp"] == 400 and th["alarm"]["confidence"] == 0.95
    assert th["alarm"]["n_images"] == 4 and th["alarm"]["regions_bound"] <= 400
    assert len(list((out / "data" / "holdout").glob("*.png"))) == 4
    assert report["thresholds"]["pixel"] == th["pixel"] and report["thresholds"]["alarms"].startswith("boxes are alarms")
    assert "400 false regions per MP" in card_path(out / "run" / "model.safetensors").read_text()

    # found / missed / false regions agree with the report's regions and the painted mask
    mask = read_image(out / "data" / "test" / "part_full_mask.png")[:, :, 0] > 0.5
    d = summary["defects"]
    assert d["defects"] == ndimage.label(mask, structure=np.ones((3, 3)))[1] > 0
    assert d["found"] + d["missed"] == d["defects"] and 0 <= d["found"] <= d["defects"]
    assert d["regions"] == len(report["regions"]) and 0 <= d["false_regions"] <= d["regions"]
    near = ndimage.binary_dilation(mask, structure=np.ones((3, 3)))
    touching = [near[y0:y1, x0:x1].any() for x0, y0, x1, y1 in (r["bbox"] for r in report["regions"])]
    assert d["false_regions"] >= touching.count(False)  # a region whose box misses every defect is false
    amap = tifffile.imread(out / "score" / "part_full.map.tif")
    assert match_defects(amap, th["pixel"], 4, mask).to_dict() == d
    last = said.strip().splitlines()[-1]
    plural = "" if d["false_regions"] == 1 else "s"
    assert last.startswith(f"found {d['found']} of {d['defects']} painted defects")
    assert f"; {d['false_regions']} false region{plural} (calibrated: ≤ 400 false regions per MP at 95% confidence)" in last
    assert last == summary["result"]


def test_demo_refuses_a_target_its_holdout_cannot_show(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli(["demo", "--out", str(out), "--image-size", "64", "--holdout", "4", "--false-regions-per-mp", "10", *SMALL]) == 7
    err = capsys.readouterr().err
    assert "--holdout" in err and len(err.strip().splitlines()) == 1
    assert not (out / "run").exists()  # refused before training


def test_demo_keeps_an_earlier_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    assert cli(["demo", "--out", str(out), *SMALL]) == 5
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "earlier work"

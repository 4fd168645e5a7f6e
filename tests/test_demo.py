"""The README's main job, shrunk: data painted, shards, training, export, a scored full-size image."""

from __future__ import annotations

import json

from nsgan.cli.main import main as cli
from nsgan.models.model_file import load_model

SMALL = ["model.resolution=16", "model.latent_dim=16", "model.fmap_base=64", "model.fmap_max=16",
         "schedule.start_resolution=8", "schedule.stable_kimg=0.05", "schedule.fade_kimg=0.05",
         "schedule.total_kimg=0.2", "train.checkpoint_kimg=0.1", "train.display=false", "data.num_workers=0",
         "encoder.kimg=0.064", "encoder.batch=8", "comparator.kimg=0.064", "comparator.batch=8"]


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli(["demo", "--out", str(out), "--image-size", "64", "--search-iterations", "3", *SMALL]) == 0
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


def test_demo_keeps_an_earlier_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    assert cli(["demo", "--out", str(out), *SMALL]) == 5
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "earlier work"

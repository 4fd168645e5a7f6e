"""The model card beside every exported model (README.md, Hugging Face model-card format).

It is made from the model file's metadata alone: training's export writes it, calibrate and
evaluate rewrite it with what they store in the file (train-encoder's rewrite is checked in
test_encoder.py's two-process encoder run). A README.md nsgan did not write is kept.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from nsgan.share.card import MARKER, calibration_settings, render_card, write_card
from nsgan.cli.main import main as cli
from nsgan.models.model_file import read_metadata

from .test_evaluate import make_category

FAST = ["--inversion", "search", "--iterations", "2", "--restarts", "1", "--no-progress"]


def card_parts(path: Path) -> tuple[dict, str]:
    """(front matter as YAML, Markdown body) of a card."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), text[:200]
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def config_block(body: str) -> dict:
    return yaml.safe_load(body.split("## Config", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0])


@pytest.fixture
def trained_copy(uninterrupted_tiny_model, tmp_path) -> Path:
    """The session's tiny trained model (with its card) in a folder of its own, to calibrate and evaluate."""
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(uninterrupted_tiny_model, folder / "model.safetensors")
    shutil.copy(uninterrupted_tiny_model.parent / "README.md", folder / "README.md")
    return folder / "model.safetensors"


def test_training_export_writes_the_card_from_the_model_metadata(uninterrupted_tiny_model, tiny_shards):
    front, body = card_parts(uninterrupted_tiny_model.parent / "README.md")
    assert front["library_name"] == "nsgan" and {"anomaly-detection", "gan"} <= set(front["tags"])
    assert "model-index" not in front  # not evaluated yet
    assert MARKER in body
    counts = json.loads((tiny_shards / "manifest.json").read_text())["counts"]
    assert f"| normal tiles | {counts['tiles_normal']} " in body and f"| abnormal tiles | {counts['tiles_abnormal']} " in body
    assert "| tile size | 16 px" in body and "| channels | 1 (gray) |" in body
    assert "| images seen | 256 (0.256 kimg) |" in body and "| γ (abnormal penalty) | 0.2: shapes G (and D), which this model's default map reads through G(E(x)) |" in body and "`tile`" in body
    assert "None stored" in body and "Not calibrated" in body and "Not evaluated yet" in body
    assert "nsgan score --model model.safetensors --image IMAGE --out scores/\n" in body
    assert 'Scorer.from_pretrained("PATH_OR_REPO_ID")' in body
    meta = read_metadata(uninterrupted_tiny_model)
    assert config_block(body) == meta["config"]  # the resolved config, as stored in the file
    assert meta["data"]["manifest"]["counts"] == counts
    assert render_card(meta, "model.safetensors", uninterrupted_tiny_model.parent.name) == \
        (uninterrupted_tiny_model.parent / "README.md").read_text()  # regenerated from the metadata alone


def test_calibrate_then_evaluate_rewrite_the_card(trained_copy, tmp_path, capsys):
    normal = tmp_path / "held-out"
    make_category(tmp_path / "cat", n_good=3, n_defect=2)
    shutil.copytree(tmp_path / "cat" / "test" / "good", normal)
    assert cli(["calibrate", "--model", str(trained_copy), "--normal", str(normal), *FAST]) == 0
    card = trained_copy.parent / "README.md"
    th = read_metadata(trained_copy)["thresholds"]
    _, body = card_parts(card)
    assert "Not calibrated" not in body and f"| image threshold | {th['image']:.4g}: " in body
    assert f"| pixel threshold | {th['pixel']:.4g}: " in body
    assert "- inversion: `search`, 2 steps, λ 0.1, lr 0.05, 1 starts" in body and "- tile stride: 16 px" in body  # the default stride: the 16-px tile
    # the card's command scores with the calibration's settings, so the thresholds hold (no mismatch warning)
    command = body.split("```bash\n", 1)[1].split("\n", 1)[0]
    assert command.startswith("nsgan score --model model.safetensors") and "--iterations 2 --restarts 1" in command
    assert calibration_settings(read_metadata(trained_copy))[1] == {"search": {"mode": "search", "iterations": 2, "restarts": 1}}
    img = tmp_path / "cat" / "test" / "good" / "000.png"
    argv = command.replace("model.safetensors", str(trained_copy)).replace("IMAGE", str(img)).replace("scores/", str(tmp_path / "s")).split()
    capsys.readouterr()
    assert cli(argv[1:] + ["--no-progress"]) == 0 and "warning" not in capsys.readouterr().err

    assert cli(["evaluate", "--model", str(trained_copy), "--data", str(tmp_path / "cat"), "--out", str(tmp_path / "ev"), *FAST]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    (record,) = read_metadata(trained_copy)["evaluations"]
    assert record["image_auroc"] == metrics["image"]["auroc"] and record["aupro"] == metrics["pixel"]["aupro"]
    assert record["data"] == str(tmp_path / "cat") and record["search"]["iterations"] == 2
    front, body = card_parts(card)
    (result,) = front["model-index"][0]["results"]
    assert result["task"]["type"] == "anomaly-detection" and result["dataset"]["name"] == "cat"
    values = {m["name"]: m["value"] for m in result["metrics"]}
    assert values["Image AUROC"] == round(metrics["image"]["auroc"], 4)
    assert values["Pixel AUROC"] == round(metrics["pixel"]["pixel_auroc"], 4) and "roc_auc" in front["metrics"]
    assert values["AUPRO (FPR ≤ 0.3)"] == round(metrics["pixel"]["aupro"], 4)
    row = f"| `{tmp_path / 'cat'}` | 3 / 4 | {metrics['image']['auroc']:.4f} | {metrics['pixel']['pixel_auroc']:.4f} | "
    assert row in body and "| search 2 steps |" in body
    assert f"| image threshold | {th['image']:.4g}: " in body  # the thresholds stay on the card
    # a second evaluation of the same folder replaces the record instead of adding one
    assert cli(["evaluate", "--model", str(trained_copy), "--data", str(tmp_path / "cat"), "--out", str(tmp_path / "ev"),
                "--overwrite", *FAST]) == 0
    assert len(read_metadata(trained_copy)["evaluations"]) == 1


def test_a_readme_nsgan_did_not_write_is_kept(model_file, tmp_path, capsys):
    from nsgan.share.card import refresh_card

    model = tmp_path / "model.safetensors"
    shutil.copy(model_file, model)
    mine = "# My model\n\nNotes of my own.\n"
    (tmp_path / "README.md").write_text(mine)
    assert write_card(model) == tmp_path / "MODEL_CARD.md"
    assert (tmp_path / "README.md").read_text() == mine and MARKER in (tmp_path / "MODEL_CARD.md").read_text()
    assert write_card(model) == tmp_path / "MODEL_CARD.md"  # nsgan's own MODEL_CARD.md is rewritten
    (tmp_path / "MODEL_CARD.md").write_text("mine too\n")
    assert refresh_card(model, "calibrate") is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no model card written" in err[0]
    assert (tmp_path / "MODEL_CARD.md").read_text() == "mine too\n" and (tmp_path / "README.md").read_text() == mine


def test_a_model_file_from_before_cards_gets_a_card_too(gan_model_with_encoder):
    _, body = card_parts_text(render_card(read_metadata(gan_model_with_encoder), gan_model_with_encoder.name))
    assert "Not recorded" in body and "Stored: an f-AnoGAN izi_f encoder" in body and "Not stored in the model file" in body


def card_parts_text(text: str) -> tuple[dict, str]:
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def test_a_card_that_cannot_be_written_leaves_the_model_whole_and_warns(model_file, tmp_path, capsys, monkeypatch):
    import nsgan.common.atomic
    from nsgan.common.errors import OutputError

    model = tmp_path / "model.safetensors"
    shutil.copy(model_file, model)
    make_category(tmp_path / "cat", n_good=2, n_defect=1, types=("pit",))

    def refuse(path, text):
        raise OutputError(f"{path}: cannot write (No space left on device)")

    monkeypatch.setattr(nsgan.common.atomic, "atomic_write_text", refuse)
    assert cli(["calibrate", "--model", str(model), "--normal", str(tmp_path / "cat" / "test" / "good"), *FAST]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning" in err[0] and "README.md" in err[0] and "the model file is complete" in err[0]
    assert read_metadata(model)["thresholds"]["n_normal"] == 2 and not (tmp_path / "README.md").exists()


def test_a_new_encoder_drops_figures_measured_with_the_old_one(model_file, tmp_path):
    import torch

    from nsgan.models.encoder import Encoder
    from nsgan.models.model_file import add_encoder, update_metadata

    model = tmp_path / "model.safetensors"
    shutil.copy(model_file, model)
    by_search = {"data": "a", "image_auroc": 0.7, "search": {"mode": "search", "iterations": 5}}
    update_metadata(model, evaluations=[by_search, {"data": "b", "image_auroc": 0.9, "search": {"mode": "encoder"}}])
    torch.manual_seed(0)
    add_encoder(model, Encoder(16, 1, 16, fmap_base=64, fmap_max=16), {"images_seen": 0})
    assert read_metadata(model)["evaluations"] == [by_search]


def test_the_card_says_gamma_does_not_reach_a_default_map_that_reads_neither_g_nor_d(uninterrupted_tiny_model):
    """Issue 27: where the default map is C beside the blur of x, γ must not look like a lever on detection."""
    meta = read_metadata(uninterrupted_tiny_model)
    meta["comparator"] = {"network": {"reference": "blur", "width": 8, "dilations": [1, 2]}, "config": {}, "trained_on": {}}
    body = render_card(meta)
    row = next(line for line in body.splitlines() if line.startswith("| γ (abnormal penalty) |"))
    assert "0.2: shapes G and D only" in row and "reads neither" in row and "does not change what `nsgan score` reports" in row
    meta["comparator"]["network"]["reference"] = "reconstruction"  # C reads G(E(x)): γ reaches the map through G
    row = next(line for line in render_card(meta).splitlines() if line.startswith("| γ (abnormal penalty) |"))
    assert "reads through G(E(x))" in row

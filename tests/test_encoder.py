"""The f-AnoGAN encoder: network shapes, its training (loss, resume, two processes, model file) and
the inversion modes it enables in scoring (encoder = a zero-step refine, one or two processes agree,
a model without E says how to get one, an old model file still scores)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nsgan.cli.main import main as cli
from nsgan.train.config import load_config
from nsgan.models.encoder import Encoder, izif_loss
from nsgan.models.model_file import load_model
from nsgan.score.options import ScoreOptions
from nsgan.score.scorer import Scorer
from nsgan.score.search import SearchConfig
from nsgan.train.pipeline import train
from nsgan.train.common import weights_digest

from .conftest import REPO, TINY, free_port, subprocess_env, tensorboard_log


@pytest.mark.parametrize("resolution,channels", [(4, 1), (8, 3), (32, 1)])
def test_encoder_maps_tiles_to_latents(resolution, channels):
    e = Encoder(resolution, channels, latent_dim=12, fmap_base=64, fmap_max=16)
    z = e(torch.randn(5, channels, resolution, resolution))
    assert z.shape == (5, 12) and torch.isfinite(z).all()
    # batch-independent: a tile's z does not depend on its batch mates
    assert torch.allclose(e(torch.randn(5, channels, resolution, resolution)[:1] * 0 + 0.3)[0],
                          e(torch.full((1, channels, resolution, resolution), 0.3))[0], atol=1e-6)
    with pytest.raises(ValueError, match="expects"):
        e(torch.randn(2, channels, resolution * 2, resolution * 2))


@pytest.fixture(scope="module")
def gan_with_encoder(tiny_shards, tmp_path_factory) -> Path:
    """A tiny GAN trained with the encoder as its last phase (what `encoder.kimg` in a config does)."""
    run = tmp_path_factory.mktemp("enc") / "run"
    train(load_config(None, [*TINY, f"data.normal={tiny_shards / 'normal'}", f"data.abnormal={tiny_shards / 'abnormal'}",
                             f"run_dir={run}", "encoder.kimg=0.256", "encoder.batch=8", "encoder.log_every=2"]))
    return run


def test_training_with_encoder_kimg_adds_E_to_the_model_and_lowers_the_izif_loss(gan_with_encoder):
    run = gan_with_encoder
    m = load_model(run / "model.safetensors")
    assert isinstance(m.encoder, Encoder) and m.meta["encoder"]["images_seen"] == 256
    rows = [json.loads(line) for line in (run / "encoder" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(r["stage"] == "encoder" for r in rows)
    izif = [r["e_image"] + r["e_feature"] for r in rows]  # the izi_f loss itself (κ = 1), without the ziz term
    assert np.mean(izif[-3:]) < 0.8 * np.mean(izif[:3]), izif
    assert np.mean([r["e_latent"] for r in rows[-3:]]) < np.mean([r["e_latent"] for r in rows[:3]])
    assert (run / "encoder" / "samples" / "recon-final.png").is_file()
    # the loss of the stored E on training-like tiles is below that of a fresh E
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    fresh = Encoder(16, 1, m.latent_dim, 64, 16)
    with torch.no_grad():
        trained_loss = izif_loss(m.encoder, m.generator, m.discriminator, x)[0]
        fresh_loss = izif_loss(fresh, m.generator, m.discriminator, x)[0]
    assert trained_loss < fresh_loss


def _model_copy(run: Path, dest: Path, keep_encoder: bool) -> Path:
    """A copy of the run's model file, optionally without its encoder (as a model made before encoders)."""
    from safetensors.torch import load_file, save_file

    from nsgan.models.model_file import read_metadata

    dest.mkdir(parents=True, exist_ok=True)
    target = dest / "model.safetensors"
    shutil.copy(run / "model.safetensors", target)
    if not keep_encoder:
        meta = read_metadata(target)
        meta.pop("encoder")
        tensors = {k: v for k, v in load_file(str(target)).items() if not k.startswith("E.")}
        save_file(tensors, str(target), metadata={k: json.dumps(v) for k, v in meta.items()})
    return target


def _train_encoder(model: Path, run_dir: Path, kimg: float, resume: bool = False) -> int:
    args = ["train-encoder", "--model", str(model), "--run-dir", str(run_dir), f"encoder.kimg={kimg}", "encoder.batch=8",
            "encoder.checkpoint_kimg=0.064", "train.display=false"]
    return cli(args + (["--resume"] if resume else []))


def test_train_encoder_resume_equals_an_uninterrupted_run(gan_with_encoder, tmp_path):
    whole = _model_copy(gan_with_encoder, tmp_path / "whole", keep_encoder=False)
    split = _model_copy(gan_with_encoder, tmp_path / "split", keep_encoder=False)
    assert load_model(whole).encoder is None
    assert _train_encoder(whole, tmp_path / "whole" / "enc", 0.192) == 0
    assert _train_encoder(split, tmp_path / "split" / "enc", 0.096) == 0  # stops mid-way (a state at the end)
    assert _train_encoder(split, tmp_path / "split" / "enc", 0.192) == 5  # no --resume: refuses (exit 5)
    assert _train_encoder(split, tmp_path / "split" / "enc", 0.192, resume=True) == 0
    a, b = load_model(whole).encoder, load_model(split).encoder
    assert weights_digest([a]) == weights_digest([b])
    assert load_model(split).meta["encoder"]["images_seen"] == 192


def test_denoising_encoder_reads_painted_tiles_targets_clean_ones_and_resumes_exactly(gan_with_encoder, tmp_path, monkeypatch):
    """encoder.denoise: E reads tiles with painted defects, the loss pulls G(E(x̃)) to the clean x; resume stays exact."""
    import importlib

    loop = importlib.import_module("nsgan.train.encoder_loop")  # `nsgan.train` the attribute is the function

    seen = []
    real = izif_loss

    def spy(E, G, D, x, kappa=1.0, z=None, ziz=0.0, x_in=None):
        seen.append((x.detach().clone(), None if x_in is None else x_in.detach().clone()))
        return real(E, G, D, x, kappa, z=z, ziz=ziz, x_in=x_in)

    monkeypatch.setattr(loop, "izif_loss", spy)
    runs = {}
    for name, kimg, resume in (("whole", 0.128, False), ("split", 0.064, False), ("split", 0.128, True), ("plain", 0.128, False)):
        model = tmp_path / name / "model.safetensors"
        if not model.exists():
            model = _model_copy(gan_with_encoder, tmp_path / name, keep_encoder=False)
        extra = [] if name == "plain" else ["encoder.denoise=0.5"]
        args = ["train-encoder", "--model", str(model), "--run-dir", str(tmp_path / name / "enc"), f"encoder.kimg={kimg}",
                "encoder.batch=8", "encoder.checkpoint_kimg=0.064", "train.display=false", *extra]
        assert cli(args + (["--resume"] if resume else [])) == 0
        runs[name] = model
    painted = [(x, xi) for x, xi in seen if xi is not None]
    assert painted and len(painted) < len(seen)  # the plain run passed no x_in
    for x, xi in painted:  # half the batch painted (where a defect showed), the other half untouched, the target clean
        assert torch.equal(xi[4:], x[4:]) and not torch.equal(xi[:4], x[:4])
    digest = lambda m: weights_digest([load_model(m).encoder])  # noqa: E731
    assert digest(runs["whole"]) == digest(runs["split"]) != digest(runs["plain"])
    card = (runs["whole"].parent / "README.md").read_text()
    assert "denoising: 50% of each batch" in card
    assert cli(["train-encoder", "--model", str(runs["plain"]), "--run-dir", str(tmp_path / "bad"), "encoder.kimg=0.1",
                "encoder.denoise=1.5"]) != 0


def test_encoder_mode_is_a_zero_step_refine_and_refine_improves_on_it(gan_with_encoder):
    img = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    model = gan_with_encoder / "model.safetensors"
    tile = dict(image_score="tile")  # the AnoGAN tile loss, so the encoder mode computes it too
    enc = Scorer.from_file(model, ScoreOptions(search=SearchConfig(mode="encoder"), **tile)).score(img)
    zero = Scorer.from_file(model, ScoreOptions(search=SearchConfig(mode="refine", iterations=0), **tile)).score(img)
    np.testing.assert_allclose(enc.map, zero.map, atol=1e-6)
    np.testing.assert_allclose(enc.tile_scores, zero.tile_scores, atol=1e-6)
    refined = Scorer.from_file(model, ScoreOptions(search=SearchConfig(mode="refine", iterations=10), **tile)).score(img)
    assert (refined.tile_scores <= enc.tile_scores + 1e-6).all() and refined.tile_scores.mean() < enc.tile_scores.mean()
    # auto picks the encoder for a model that has one
    assert Scorer.from_file(model).options.search.mode == "encoder"


def test_encoder_mode_skips_D_when_the_image_score_is_the_map_and_draws_the_same_map(gan_with_encoder, monkeypatch):
    img = np.random.default_rng(1).random((40, 40)).astype(np.float32)
    model = gan_with_encoder / "model.safetensors"
    with_d = Scorer.from_file(model, ScoreOptions(search=SearchConfig(mode="encoder"), image_score="tile")).score(img)
    fast = Scorer.from_file(model, ScoreOptions(search=SearchConfig(mode="encoder")))
    assert fast.options.image_score == "map_max"

    def no_d(*args, **kwargs):
        raise AssertionError("D was run although no tile loss is needed")

    monkeypatch.setattr(fast.search.D, "features", no_d)
    got = fast.score(img)
    np.testing.assert_allclose(got.map, with_d.map, atol=1e-6)
    assert got.score == pytest.approx(float(got.map.max()))


def test_model_without_encoder_scores_by_search_and_refuses_encoder_modes(model_file, tmp_path, capsys):
    img = tmp_path / "img.png"
    from PIL import Image

    Image.fromarray((np.random.default_rng(1).random((20, 20)) * 255).astype(np.uint8)).save(img)
    assert Scorer.from_file(model_file).options.search.mode == "search"  # auto: an old file keeps scoring
    code = cli(["score", "--model", str(model_file), "--image", str(img), "--out", str(tmp_path / "o"), "--inversion", "encoder",
                "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1 and "no encoder" in err[0] and "nsgan train-encoder" in err[0]
    assert not list((tmp_path / "o").glob("img.*"))
    assert cli(["score", "--model", str(model_file), "--image", str(img), "--out", str(tmp_path / "o"), "--iterations", "3",
                "--no-progress"]) == 0
    report = json.loads((tmp_path / "o" / "img.json").read_text())
    assert report["search"]["mode"] == "search" and report["search"]["iterations"] == 3


def _launch_score(nproc: int, model: Path, image: Path, out: Path, mode: str) -> subprocess.CompletedProcess:
    multi = ["--multi_gpu", "--main_process_port", str(free_port())] if nproc > 1 else []
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *multi, "--num_processes", str(nproc), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "launch" / "score.py"), "--model", str(model),
           "--image", str(image), "--out", str(out), "--inversion", mode, "--iterations", "3", "--batch", "4", "--no-progress"]
    return subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300, cwd=REPO)


@pytest.mark.parametrize("mode", ["encoder", "refine"])
def test_one_and_two_processes_write_the_same_map_in_encoder_modes(gan_with_encoder, tmp_path, mode):
    import tifffile
    from PIL import Image

    Image.fromarray((np.random.default_rng(2).random((48, 40)) * 255).astype(np.uint8)).save(tmp_path / "img.png")
    model = gan_with_encoder / "model.safetensors"
    one = _launch_score(1, model, tmp_path / "img.png", tmp_path / "one", mode)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _launch_score(2, model, tmp_path / "img.png", tmp_path / "two", mode)
    assert (tmp_path / "two" / "img.map.tif").is_file(), two.stderr[-2000:]
    a, b = tifffile.imread(tmp_path / "one" / "img.map.tif"), tifffile.imread(tmp_path / "two" / "img.map.tif")
    np.testing.assert_array_equal(a, b)
    assert json.loads((tmp_path / "two" / "img.json").read_text())["search"]["mode"] == mode


def test_two_processes_train_the_same_encoder(gan_with_encoder, tmp_path):
    """launch/train_encoder.py over 2 gloo processes: gradients averaged, both ranks end equal, E in the file."""
    model = _model_copy(gan_with_encoder, tmp_path, keep_encoder=False)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(REPO / "launch" / "train_encoder.py"), "--model", str(model), "encoder.kimg=0.064", "encoder.batch=8",
           "encoder.log_every=2", "train.display=false"]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    m = load_model(model)
    assert m.encoder is not None, proc.stderr[-3000:]
    assert m.meta["encoder"]["world_size"] == 2 and m.meta["encoder"]["images_seen"] == 64
    assert weights_digest([m.encoder]) == m.meta["encoder"]["digest"]
    # its trackers (train.log_with auto: TensorBoard) log beside the model, as run tb/encoder, from the main process only
    tb = tensorboard_log(model.parent / "tb" / "encoder")
    rows = [json.loads(line) for line in (model.parent / "encoder" / "metrics.jsonl").read_text().splitlines()]
    assert [step for step, _ in tb["scalars"]["loss_e"]] == [r["images_seen"] for r in rows] == [32, 64]
    assert [step for step, _, _ in tb["images"]["reconstructions"]] == [0, 64]
    assert len(tb["pids"]) == 1
    # and the model card beside it is rewritten with the encoder (nsgan/share/card.py)
    card = (model.parent / "README.md").read_text()
    assert "library_name: nsgan" in card and "Stored: an f-AnoGAN izi_f encoder trained for 0.064 kimg (64 normal tiles" in card
    assert proc.returncode == 0, proc.stderr[-3000:]

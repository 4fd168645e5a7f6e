"""The comparator C end to end (issue 20): its phase in `nsgan train` and `nsgan train-comparator`, exact
resume, the model file's rules (C.*, basis digest, what a new encoder drops), scoring with
`--residual comparator` (API = CLI = ONNX Runtime), a model without C unchanged, bad config keys,
and the acceptance test: C trained on some painted kinds finds a kind it never saw, better than the
detail residual on the same model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nsgan.cli.main import main as cli
from nsgan.common.errors import ConfigError, ModelError
from nsgan.models.model_file import load_model, read_metadata
from nsgan.score.assembly import TOP_K
from nsgan.score.options import ScoreOptions
from nsgan.score.scorer import Scorer
from nsgan.train.common import weights_digest
from nsgan.train.config import load_config

from .conftest import TINY

CMP = ["comparator.batch=16", "comparator.log_every=2", "comparator.width=8", "comparator.dilations=[1,2,4,1]"]


@pytest.fixture(scope="module")
def run_with_c(tiny_shards, tmp_path_factory) -> Path:
    """`nsgan train` with the encoder and the comparator as its last two phases."""
    from nsgan.train.pipeline import train

    run = tmp_path_factory.mktemp("cmp") / "run"
    train(load_config(None, [*TINY, f"data.normal={tiny_shards / 'normal'}", f"data.abnormal={tiny_shards / 'abnormal'}",
                             f"run_dir={run}", "encoder.kimg=0.064", "encoder.batch=8", "comparator.kimg=0.128",
                             "comparator.reference=reconstruction", *CMP]))  # the path that reads G(E(x)), in the ONNX graph too
    return run


def _config_file(tmp_path: Path, tiny_shards: Path, *extra: str) -> Path:
    """A config for train-comparator on the conftest models (which store no config of their own)."""
    lines = ["model:", "  resolution: 16", "data:", f"  normal: {tiny_shards / 'normal'}", "  num_workers: 0",
             "train:", "  display: false", "  mixed_precision: 'no'", "  log_with: none", *extra]
    path = tmp_path / "cmp.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _copy(model: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, dest / "model.safetensors")
    return dest / "model.safetensors"


def _train_c(model: Path, config: Path, run_dir: Path, kimg: float, *extra: str, resume: bool = False) -> int:
    args = ["train-comparator", "--model", str(model), "--config", str(config), "--run-dir", str(run_dir),
            f"comparator.kimg={kimg}", "comparator.checkpoint_kimg=0.064", *CMP, *extra]
    return cli(args + (["--resume"] if resume else []))


# -- the phase ------------------------------------------------------------------------------------------------------
def test_nsgan_train_with_comparator_kimg_writes_C_and_its_run_folder(run_with_c):
    m = load_model(run_with_c / "model.safetensors")
    assert m.comparator is not None and m.encoder is not None
    meta = m.meta["comparator"]
    assert meta["images_seen"] == 128 and meta["network"]["width"] == 8 and meta["receptive_field"] == 1 + 2 * 8
    assert weights_digest([m.comparator]) == meta["digest"]
    assert meta["trained_on"]["labelled"]["masked_tiles"] > 0  # the demo's abnormal shards carry masks
    rows = [json.loads(line) for line in (run_with_c / "comparator" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["stage"] == "comparator" and np.isfinite(r["loss_c"]) for r in rows)
    assert (run_with_c / "comparator" / "samples" / "cmp-final.png").is_file()
    assert any((run_with_c / "comparator" / "checkpoints").iterdir())
    assert any((run_with_c / "tb" / "comparator").rglob("events.out.tfevents.*"))
    card = (run_with_c / "README.md").read_text()
    assert "## Comparator" in card and "receptive field 17 px" in card


def test_train_comparator_resume_equals_an_uninterrupted_run(gan_model_with_encoder, tiny_shards, tmp_path):
    cfg = _config_file(tmp_path, tiny_shards)
    whole, split = _copy(gan_model_with_encoder, tmp_path / "whole"), _copy(gan_model_with_encoder, tmp_path / "split")
    assert _train_c(whole, cfg, tmp_path / "whole" / "c", 0.128) == 0
    assert _train_c(split, cfg, tmp_path / "split" / "c", 0.064) == 0  # stops half-way (a state at the end)
    assert _train_c(split, cfg, tmp_path / "split" / "c", 0.128) == 5  # no --resume: refused (exit 5)
    assert _train_c(split, cfg, tmp_path / "split" / "c", 0.128, "comparator.lr=0.01", resume=True) == 2  # changed section
    assert _train_c(split, cfg, tmp_path / "split" / "c", 0.128, resume=True) == 0
    a, b = load_model(whole).comparator, load_model(split).comparator
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert load_model(split).meta["comparator"]["images_seen"] == 128
    assert "Stored: an f-AnoGAN" in (tmp_path / "whole" / "README.md").read_text()


def test_gan_normals_put_G_samples_among_the_normal_tiles_and_resume_exactly(gan_model_with_encoder, tiny_shards, tmp_path):
    """comparator.gan_normals: that share of each step's normal tiles are G(z), quantised like the shards, drawn from
    the rank's generator (so a resumed run redraws them); the card says so and C learns something else than without."""
    from nsgan.data.stream import resolve_shards
    from nsgan.train.comparator_data import ComparatorBatches

    G = load_model(gan_model_with_encoder).generator
    over = [*TINY, f"data.normal={tiny_shards / 'normal'}", "loss.gamma=0", "comparator.paint_fraction=0"]
    shards = resolve_shards(load_config(None, over).data.normal)
    plain = ComparatorBatches(load_config(None, over), G, None, shards, None, 1, 0, 1, torch.device("cpu")).draw()
    mixed = ComparatorBatches(load_config(None, [*over, "comparator.gan_normals=0.25"]), G, None, shards, None, 1, 0, 1,
                              torch.device("cpu"))
    assert mixed.n_gan == 8  # of 32 normal tiles
    b = mixed.draw()
    same = [i for i in range(32) if torch.equal(b.x[i], plain.x[i])]
    assert len(same) == 24 and b.target.sum() == 0  # the other 8 are G's, and G's tiles are normal (target 0)
    levels = ((b.x + 1) * 0.5 * 255)
    assert torch.allclose(levels, levels.round(), atol=1e-3)  # quantised to the shards' 8 bits
    cfg = _config_file(tmp_path, tiny_shards)
    whole, split = _copy(gan_model_with_encoder, tmp_path / "whole"), _copy(gan_model_with_encoder, tmp_path / "split")
    real_only = _copy(gan_model_with_encoder, tmp_path / "real")
    assert _train_c(whole, cfg, tmp_path / "whole" / "c", 0.128, "comparator.gan_normals=0.5") == 0
    assert _train_c(split, cfg, tmp_path / "split" / "c", 0.064, "comparator.gan_normals=0.5") == 0
    assert _train_c(split, cfg, tmp_path / "split" / "c", 0.128, "comparator.gan_normals=0.5", resume=True) == 0
    assert _train_c(real_only, cfg, tmp_path / "real" / "c", 0.128) == 0
    a, b2, r = (load_model(m).comparator.state_dict() for m in (whole, split, real_only))
    assert all(torch.equal(a[k], b2[k]) for k in a)
    assert not all(torch.equal(a[k], r[k]) for k in a)
    assert read_metadata(whole)["comparator"]["trained_on"]["gan_normals"] == 0.5
    assert "G's samples | 0.5 of the normal tiles" in (tmp_path / "whole" / "README.md").read_text()


# -- the model file ---------------------------------------------------------------------------------------------------
def _thresholds(residual: str) -> dict:
    return {"image": 0.5, "pixel": 0.4, "map": {"residual": residual, "map_sigma": 1.0, "image_score": "map_max"},
            "search": {"mode": "encoder"}}


def test_model_file_rules_for_C(run_with_c, tmp_path):
    from safetensors.torch import load_file, save_file

    from nsgan.models.encoder import Encoder
    from nsgan.models.model_file import add_comparator, add_encoder, update_metadata

    path = _copy(run_with_c / "model.safetensors", tmp_path / "a")
    m = load_model(path)
    info = {k: v for k, v in m.meta["comparator"].items() if k != "network"}
    # a new C keeps thresholds made with the detail residual, drops those made with the comparator
    update_metadata(path, thresholds=_thresholds("detail"))
    add_comparator(path, m.comparator, info)
    assert read_metadata(path)["thresholds"]["map"]["residual"] == "detail"
    update_metadata(path, thresholds=_thresholds("comparator"), evaluations=[{"data": "d", "map_settings": {"residual": "comparator"}}])
    add_comparator(path, m.comparator, info)
    assert "thresholds" not in read_metadata(path) and read_metadata(path)["evaluations"] == []
    # a new encoder drops C, its metadata and what was made with it
    update_metadata(path, thresholds={**_thresholds("comparator"), "search": {"mode": "search"}})
    add_encoder(path, Encoder(16, 1, m.latent_dim, 64, 16), {"images_seen": 0})
    meta = read_metadata(path)
    assert "comparator" not in meta and "thresholds" not in meta
    assert not any(k.startswith("C.") for k in load_file(str(path)))
    assert load_model(path).comparator is None
    # a C whose G differs from the one it was trained for is refused, with the fix
    other = _copy(run_with_c / "model.safetensors", tmp_path / "b")
    tensors = load_file(str(other))
    name = next(k for k in tensors if k.startswith("G_ema."))
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, str(other), metadata={k: json.dumps(v) for k, v in read_metadata(other).items()})
    with pytest.raises(ModelError, match="trained for another generator/encoder.*nsgan train-comparator --model"):
        load_model(other)


# -- scoring ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    from nsgan.data.imageio import write_png

    path = tmp_path_factory.mktemp("img") / "img.png"
    write_png(path, np.random.default_rng(0).random((40, 40, 1)).astype(np.float32))
    return path


def test_model_without_C_scores_as_today_and_refuses_residual_comparator(gan_model_with_encoder, image_file, tmp_path, capsys):
    img = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    auto = Scorer.from_file(gan_model_with_encoder).score(img)
    detail = Scorer.from_file(gan_model_with_encoder, ScoreOptions(residual="detail")).score(img)
    np.testing.assert_array_equal(auto.map, detail.map)
    with pytest.raises(ModelError, match="holds no comparator.*nsgan train-comparator --model"):
        Scorer.from_file(gan_model_with_encoder, ScoreOptions(residual="comparator"))
    code = cli(["score", "--model", str(gan_model_with_encoder), "--image", str(image_file), "--out", str(tmp_path / "o"),
                "--residual", "comparator"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == ModelError.exit_code and len(err) == 1 and "train-comparator" in err[0]


def test_comparator_map_is_the_same_from_the_API_the_CLI_and_ONNX_Runtime(run_with_c, image_file, tmp_path):
    import tifffile

    from nsgan.data.imageio import read_image
    from nsgan.share.onnx_export import export_onnx, scorer_from_onnx

    model = run_with_c / "model.safetensors"
    img = read_image(image_file)
    api = Scorer.from_file(model, ScoreOptions(residual="comparator")).score(img)
    np.testing.assert_array_equal(Scorer.from_file(model).score(img).map, api.map)  # auto: C's map, the model has C
    detail = Scorer.from_file(model, ScoreOptions(residual="detail")).score(img)
    assert not np.allclose(api.map, detail.map)
    assert cli(["score", "--model", str(model), "--image", str(image_file), "--out", str(tmp_path / "cli"),
                "--residual", "comparator"]) == 0
    np.testing.assert_allclose(tifffile.imread(tmp_path / "cli" / "img.map.tif"), api.map, atol=1e-6)
    rep = export_onnx(model, tmp_path / "m.onnx", residual="comparator")
    assert rep.meta["residual"] == "comparator" and rep.meta["comparator"]["digest"] == read_metadata(model)["comparator"]["digest"]
    assert rep.worst <= 1e-4
    onnx_map = scorer_from_onnx(tmp_path / "m.onnx").score(img).map  # auto: what the graph computes
    np.testing.assert_allclose(onnx_map, api.map, atol=1e-4)
    with pytest.raises(ConfigError, match="--residual detail"):
        scorer_from_onnx(tmp_path / "m.onnx", ScoreOptions(residual="detail"))


# -- config ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, key", [
    ("comparator.kinds=[scratch,dent]", "comparator.kinds"),
    ("comparator.dilations=[1,16]", "comparator.dilations"),
    ("comparator.reference=rec", "comparator.reference"),
    ("comparator.loss=dice", "comparator.loss"),
    ("comparator.paint_fraction=1.5", "comparator.paint_fraction"),
    ("comparator.gan_normals=1", "comparator.gan_normals"),
    ("comparator.widht=8", "comparator.widht"),
])
def test_bad_comparator_keys_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(None, [*TINY, "data.normal=x", "loss.gamma=0", override])


def test_reconstruction_needs_an_encoder_naming_both_keys(model_file, tiny_shards, tmp_path, capsys):
    with pytest.raises(ConfigError, match="comparator.reference.*encoder.kimg"):
        load_config(None, [*TINY, "data.normal=x", "loss.gamma=0", "comparator.kimg=1", "comparator.reference=reconstruction"])
    load_config(None, [*TINY, "data.normal=x", "loss.gamma=0", "comparator.kimg=1"])  # the default reference, blur: no E needed
    cfg = _config_file(tmp_path, tiny_shards)
    assert cli(["train-comparator", "--model", str(model_file), "--config", str(cfg), "comparator.kimg=0.016",
                "comparator.reference=reconstruction"]) == 2
    assert "comparator.reference" in capsys.readouterr().err
    assert cli(["train-comparator", "--model", str(model_file), "--config", str(cfg)]) == 2  # kimg 0
    assert "comparator.kimg" in capsys.readouterr().err


# -- acceptance: a kind C never saw ------------------------------------------------------------------------------------------
def _crack_test_set(n_defect: int = 24, n_good: int = 8, seed: int = 5) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """64² brick images from the photo's test part: n_defect with one painted crack each (masks), n_good clean."""
    from nsgan.data.painter import paint_defects
    from nsgan.data.textures import texture_image

    rng = np.random.default_rng(seed)
    images, masks = [], []
    for i in range(n_defect + n_good):
        img = texture_image("brick", 64, rng, part="test")
        mask = np.zeros((64, 64), bool)
        if i < n_defect:
            img, mask, _ = paint_defects(img, rng, kinds=("crack",), count=1, max_area_frac=0.01)
        images.append(np.round(img * 255) / 255)
        masks.append(mask)
    return images, masks


def held_out_auroc(model: Path, tiny_shards: Path, tmp: Path, seed: int, kimg: float = 6.4, reference: str = "none",
                   lr: float = 0.003) -> tuple[float, float]:
    """Train C (width 8) on scratches, pits and blobs only, then the pixel AUROC on painted cracks of C's map and
    of the detail residual, same model, same images: (comparator, detail)."""
    from sklearn.metrics import roc_auc_score

    path = _copy(model, tmp / f"acc{seed}")
    cfg = _config_file(tmp, tiny_shards, "comparator:", "  kinds: [scratch, pit]", "  blob: true", "  labelled_fraction: 0",
                       "  mil_bags: 0", "  batch: 32", "  width: 8", "  log_every: 50", f"  reference: {reference}",
                       f"  lr: {lr}", f"seed: {seed}")
    assert cli(["train-comparator", "--model", str(path), "--config", str(cfg), "--run-dir", str(tmp / f"c{seed}"),
                f"comparator.kimg={kimg}"]) == 0
    images, masks = _crack_test_set()
    y = np.concatenate([m.ravel() for m in masks])
    out = []
    for residual in ("comparator", "detail"):
        scorer = Scorer.from_file(path, ScoreOptions(residual=residual))
        maps = [scorer.score(img).map for img in images]
        out.append(float(roc_auc_score(y, np.concatenate([m.ravel() for m in maps]))))
    return out[0], out[1]


# The tiny G and E are untrained: G(E(x)) is noise, so this C reads x alone (reference none) and the test checks the
# machinery and generalisation across kinds, not what G adds (that is tools/experiments/comparator_bench.py's job).
# Here, with reference reconstruction, the noise channels made C worse than chance on the held-out cracks (pixel
# AUROC 0.41-0.49 at 12.8 kimg, lr 0.001 or 0.003), and lr 0.001 learned slower (0.86 at 12.8 kimg, reference none).
# Five local seeds (0-4) of held_out_auroc as below (6.4 kimg, lr 0.003, width 8; 2 shared cores, 29-37 s each):
#   comparator 0.9466 0.9401 0.9640 0.9713 0.9259 · detail residual 0.5982 (same model and images every seed)
ACCEPT_BOUND = 0.87  # min 0.9259 − 0.05, rounded down
ACCEPT_MARGIN_OVER_DETAIL = 0.25  # smallest gap seen 0.328, less a margin


def test_comparator_finds_a_kind_it_never_saw(gan_model_with_encoder, tiny_shards, tmp_path):
    c, d = held_out_auroc(gan_model_with_encoder, tiny_shards, tmp_path, seed=0)
    assert c >= ACCEPT_BOUND, (c, d)
    assert c >= d + ACCEPT_MARGIN_OVER_DETAIL, (c, d)


# -- labelled defects: masked tiles and image-labelled bags --------------------------------------------------------------
@pytest.fixture(scope="module")
def bag_shards(tmp_path_factory) -> Path:
    """Shards whose abnormal images carry no masks: their tiles can only be learned from as bags."""
    from nsgan.data.shards import write_shards
    from nsgan.demo import build_dataset

    root = tmp_path_factory.mktemp("bags")
    build_dataset(root / "data", n_normal=4, n_abnormal=2, size=64, seed=3)
    write_shards(root / "data" / "normal", root / "data" / "abnormal", None, tile=16, out=root / "shards", stride=16,
                 channels=1, seed=0)
    return root / "shards"


def test_labelled_tiles_without_masks_become_one_bag_per_image(bag_shards, tiny_shards):
    from nsgan.data.labelled import read_labelled
    from nsgan.data.stream import resolve_shards

    bags = read_labelled(resolve_shards(bag_shards / "abnormal"), 16, 1, 1000)
    assert bags.masked.shape[0] == 0 and len(bags.bags) == 2 and [b.shape for b in bags.bags] == [(16, 1, 16, 16)] * 2
    assert len(set(bags.bag_sources)) == 2
    masked = read_labelled(resolve_shards(tiny_shards / "abnormal"), 16, 1, 1000)
    assert masked.masked.shape[0] > 0 and not masked.bags and masked.masks.any(axis=(1, 2, 3)).all()
    with pytest.raises(ConfigError, match="comparator.max_labelled_tiles"):
        read_labelled(resolve_shards(bag_shards / "abnormal"), 16, 1, 20)


def test_bags_train_through_the_multiple_instance_loss(gan_model_with_encoder, bag_shards, tmp_path):
    model = _copy(gan_model_with_encoder, tmp_path / "m")
    cfg = _config_file(tmp_path, bag_shards)
    assert cli(["train-comparator", "--model", str(model), "--config", str(cfg), f"data.abnormal={bag_shards / 'abnormal'}",
                "comparator.kimg=0.032", *CMP]) == 0
    rows = [json.loads(line) for line in (tmp_path / "m" / "comparator" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss_mil"]) and r["loss_mil"] > 0 for r in rows)
    on = read_metadata(model)["comparator"]["trained_on"]
    assert on["mil_bags"] == 1 and on["labelled"]["bags"] == 2 and on["labelled_fraction"] == 0.0


def test_two_processes_train_the_same_comparator(gan_model_with_encoder, tiny_shards, tmp_path):
    """launch/train_comparator.py over 2 gloo processes: gradients averaged, both ranks end equal, C in the file."""
    import subprocess
    import sys

    from .conftest import REPO, free_port, subprocess_env

    model = _copy(gan_model_with_encoder, tmp_path / "m")
    cfg = _config_file(tmp_path, tiny_shards)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(REPO / "launch" / "train_comparator.py"), "--model", str(model), "--config", str(cfg),
           f"data.abnormal={tiny_shards / 'abnormal'}", "comparator.kimg=0.064", *CMP]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = load_model(model)
    assert m.meta["comparator"]["world_size"] == 2 and m.meta["comparator"]["images_seen"] == 64
    assert weights_digest([m.comparator]) == m.meta["comparator"]["digest"]


def test_calibrate_evaluate_and_launch_score_carry_the_comparator(run_with_c, image_file, tmp_path, capsys):
    """The thresholds record the comparator's map (and which C); evaluate measures it; launch/score.py draws the API's map."""
    import subprocess
    import sys

    import tifffile

    from .conftest import REPO, subprocess_env
    from .test_evaluate import make_category

    model = _copy(run_with_c / "model.safetensors", tmp_path / "m")
    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(image_file, good / "a.png")
    assert cli(["calibrate", "--model", str(model), "--normal", str(good), "--residual", "comparator", "--no-progress"]) == 0
    th = read_metadata(model)["thresholds"]
    assert th["map"]["residual"] == "comparator" and th["map"]["comparator_digest"] == read_metadata(model)["comparator"]["digest"]
    assert Scorer.from_file(model, ScoreOptions(residual="comparator")).calibration_mismatch() is None
    assert Scorer.from_file(model).calibration_mismatch() is None  # auto = C's map: what was calibrated
    assert "other map settings" in Scorer.from_file(model, ScoreOptions(residual="detail")).calibration_mismatch()
    data = make_category(tmp_path / "cat", size=16, protocol={"pixel_masks": True})
    assert cli(["evaluate", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "ev"), "--residual", "comparator"]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["map_settings"]["residual"] == "comparator"
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "score.py"), "--model", str(model), "--image", str(image_file),
                           "--out", str(tmp_path / "launch"), "--residual", "comparator"],
                          env=subprocess_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    api = Scorer.from_file(model, ScoreOptions(residual="comparator")).score(image_file).map
    np.testing.assert_allclose(tifffile.imread(tmp_path / "launch" / "img.map.tif"), api, atol=1e-6)


def test_a_tile_no_defect_shows_on_stays_plain_instead_of_stopping_the_run(tiny_shards):
    from nsgan.common.errors import DataError
    from nsgan.data.stream import resolve_shards
    from nsgan.train.comparator_data import ComparatorBatches

    cfg = load_config(None, [*TINY, f"data.normal={tiny_shards / 'normal'}", "loss.gamma=0"])
    b = ComparatorBatches(cfg, None, None, resolve_shards(cfg.data.normal), None, 1, 0, 1, torch.device("cpu"))
    real = b.synth.apply

    def apply(tiles, rng):  # as SyntheticDefects does when every try leaves a tile's quantised pixels unchanged
        if any(t.max() == t.min() for t in tiles):
            raise DataError("synthetic defects: could not paint a visible pit on a tile within 14 px")
        return real(tiles, rng)

    b.synth.apply = apply
    tiles = np.random.default_rng(0).random((4, 1, 16, 16)).astype(np.float32)
    tiles[2] = 1.0  # white, flat
    painted, masks, tags = b.paint(tiles)
    assert tags[2] == "normal" and not masks[2].any() and np.array_equal(painted[2], tiles[2])
    assert all(t != "normal" and m.any() for i, (t, m) in enumerate(zip(tags, masks)) if i != 2)


def test_a_comparator_that_reads_no_reconstruction_scores_without_E_and_G(gan_model_with_encoder, tiny_shards, image_file,
                                                                           tmp_path, capsys, monkeypatch):
    """reference blur: the scorer runs C alone (G is never called), its map is C's own, the ONNX export (E, G, C)
    still passes its check and draws the same map, and `auto` keeps such a model on torch, saying why."""
    from nsgan.data.imageio import read_image
    from nsgan.share import onnx_cache
    from nsgan.share.onnx_export import export_onnx, scorer_from_onnx

    model = _copy(gan_model_with_encoder, tmp_path / "m")
    cfg = _config_file(tmp_path, tiny_shards)
    assert _train_c(model, cfg, tmp_path / "c", 0.064, "comparator.reference=blur") == 0
    m = load_model(model)
    img = read_image(image_file)[:32, :32]  # four 16-px tiles side by side
    opts = ScoreOptions(residual="comparator", stride=16, map_sigma=0)
    scorer = Scorer.from_file(model, opts)

    def no_g(*a, **k):
        raise AssertionError("G ran for a comparator that reads no reconstruction")

    monkeypatch.setattr(scorer.search.G, "forward", no_g)
    got = scorer.score(img)
    tiles = np.stack([img[y:y + 16, x:x + 16] for y in (0, 16) for x in (0, 16)]).transpose(0, 3, 1, 2)
    with torch.no_grad():
        c_map = torch.sigmoid(m.comparator(torch.from_numpy(np.ascontiguousarray(tiles)) * 2 - 1))[:, 0].numpy()
    want = np.block([[c_map[0], c_map[1]], [c_map[2], c_map[3]]])
    np.testing.assert_allclose(got.map, want, atol=1e-6)
    # the default image score for C's map (issue 25): the mean of its TOP_K highest pixels (1024 here)
    assert got.score == pytest.approx(float(np.sort(want.ravel().astype(np.float64))[-TOP_K:].mean()), abs=1e-6)
    monkeypatch.undo()
    rep = export_onnx(model, tmp_path / "m.onnx")
    assert rep.meta["residual"] == "comparator" and rep.worst <= 1e-4
    np.testing.assert_allclose(scorer_from_onnx(tmp_path / "m.onnx", opts).score(img).map, got.map, atol=1e-4)
    monkeypatch.setattr(onnx_cache, "ONNX_MIN_TILES", 1)
    monkeypatch.setenv("NSGAN_CACHE_DIR", str(tmp_path / "cache"))
    assert cli(["score", "--model", str(model), "--image", str(image_file), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert "torch (the comparator reads x beside 'blur', not G(E(x))" in capsys.readouterr().out


def test_the_live_display_shows_the_comparator_phase(gan_model_with_encoder, tiny_shards, tmp_path, capsys):
    """The display is on by default (configs/demo.yaml); the comparator's rows have no fade-in α, which once stopped
    `nsgan demo` with a KeyError at its last phase."""
    from nsgan.train.display import TrainingDisplay

    model = _copy(gan_model_with_encoder, tmp_path / "m")
    assert _train_c(model, _config_file(tmp_path, tiny_shards), tmp_path / "c", 0.064, "train.display=true") == 0
    d = TrainingDisplay(1000, enabled=True, label="comparator")
    d.last_plain = -10.0
    d.update({"images_seen": 320, "kimg": 0.32, "resolution": 16, "img_s": 100.0, "loss_c": 0.5})
    assert "[comparator] 16px kimg 0.3/1 100 img/s c=0.500" in capsys.readouterr().out

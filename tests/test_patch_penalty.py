"""The abnormal penalty where the defect is: D's patch logits, the masked and multiple-instance
forms, masks through shards and streams, centred abnormal crops, old model files, two processes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nsgan.train.config import load_config
from nsgan.data.stream import ShardStream
from nsgan.common.errors import ConfigError, NsganError
from nsgan.models.model_file import load_model, read_metadata, save_model
from nsgan.models.losses import GANLoss, patch_mask
from nsgan.models.networks import Discriminator, Generator
from nsgan.data.shards import write_shards

from .conftest import REPO, TINY, free_port, subprocess_env, training_rows

PATCH = ["loss.penalty=patch_mask", "model.patch_grid=8"]


# ----------------------------------------------------------------------------- the patch head


@pytest.mark.parametrize("patch_grid", [4, 8, 16])
def test_patch_logits_shape_at_every_level_and_under_fade_in(patch_grid):
    torch.manual_seed(0)
    d = Discriminator(32, 1, fmap_base=64, fmap_max=16, patch_grid=patch_grid)
    for level in range(d.max_level + 1):
        res = 4 * 2**level
        side = 4 if level == 0 else min(patch_grid, res // 2)
        for alpha in (0.0, 0.4, 1.0):
            x = torch.randn(3, 1, res, res)
            logits, patches = d(x, level, alpha, patches=True)
            assert patches.shape == (3, 1, side, side), (level, alpha)
            assert torch.equal(logits, d(x, level, alpha))  # the global logit is the same pass's
            assert torch.isfinite(patches).all()


def test_patch_logits_are_local_and_the_feature_layer_is_unchanged():
    torch.manual_seed(0)
    d = Discriminator(32, 1, fmap_base=64, fmap_max=16, patch_grid=8)
    x = torch.randn(2, 1, 32, 32)
    y = x.clone()
    y[:, :, :2, :2] += 3.0  # a blemish in the top-left corner
    _, px = d(x, patches=True)
    _, py = d(y, patches=True)
    changed = (px - py).abs()[0, 0] > 1e-6
    assert changed[0, 0] and not changed[4:, 4:].any()  # far patches do not see it
    plain = Discriminator(32, 1, fmap_base=64, fmap_max=16)
    missing, unexpected = plain.load_state_dict(d.state_dict(), strict=False)
    assert not missing and all(k.startswith("patch_out.") for k in unexpected)
    assert torch.equal(plain.features(x), d.features(x))  # search and encoder see the same layer
    assert torch.equal(plain(x), d(x))


def test_patch_head_is_refused_where_it_cannot_be():
    with pytest.raises(ValueError, match="patch_grid"):
        Discriminator(16, 1, fmap_base=64, fmap_max=16, patch_grid=16)  # needs side ≤ resolution / 2
    with pytest.raises(ValueError, match="patch_grid"):
        Discriminator(16, 1, fmap_base=64, fmap_max=16, patch_grid=6)
    with pytest.raises(ValueError, match="no patch head"):
        Discriminator(16, 1, fmap_base=64, fmap_max=16)(torch.randn(1, 1, 16, 16), patches=True)


# ----------------------------------------------------------------------------- the penalty forms


class Recording(torch.nn.Module):
    """Wraps D and keeps the patch logits of each forward, with their gradients."""

    def __init__(self, d):
        super().__init__()
        self.d, self.patches = d, []

    def forward(self, x, level=None, alpha=1.0, patches=False):
        out = self.d(x, level, alpha, patches=patches)
        if patches:
            out[1].retain_grad()
            self.patches.append(out[1])
        return out


def test_masked_penalty_touches_only_masked_patches_in_a_d_step():
    """One D step (real, fake, abnormal, R1): the abnormal tile's patch logits are pushed down
    exactly at the patches that touch its mask, and up (as real) everywhere else."""
    torch.manual_seed(0)
    d = Recording(Discriminator(16, 1, fmap_base=64, fmap_max=16, patch_grid=8))
    real, fake, abnormal = torch.rand(4, 1, 16, 16) - 0.5, torch.randn(4, 1, 16, 16), torch.rand(2, 1, 16, 16) - 0.5
    mask = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    mask[0, 0, 3, 5] = True  # one pixel: patch (1, 2) of the 8x8 grid (2-px cells)
    mask[1, 0, 8:12, 0:3] = True  # patches (4..5, 0..1)
    loss = GANLoss("nsgan", gamma=0.5, r1_gamma=1.0, penalty="patch_mask")
    value, stats = loss.d_loss(d, real, fake, abnormal, level=2, alpha=1.0, abnormal_mask=mask)
    value.backward()
    grad = d.patches[2].grad[:, 0]  # forwards: real, fake, abnormal
    hit = torch.zeros(2, 8, 8, dtype=torch.bool)
    hit[0, 1, 2] = True
    hit[1, 4:6, 0:2] = True
    assert torch.equal(patch_mask(mask, 8)[:, 0], hit)
    assert (grad[hit] > 0).all()  # descent lowers D there: abnormal
    assert (grad[~hit] < 0).all()  # and raises it elsewhere: normal material counts as real
    p = d.patches[2].detach()[:, 0]
    sp = torch.nn.functional.softplus
    assert torch.allclose(loss.abnormal_patch_term(d.patches[2].detach(), mask)[0], sp(p[hit]).mean() + sp(-p[~hit]).mean())
    assert set(stats) >= {"d_real", "d_fake", "p_real", "p_fake", "d_abnormal", "r1"}


def test_mil_picks_the_k_least_real_patches():
    logits = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    loss = GANLoss("nsgan", gamma=1.0, penalty="patch_mil", mil_k=3)
    term, shown = loss.abnormal_patch_term(logits)
    term.backward()
    flat, grad = logits.detach().flatten(1), logits.grad.flatten(1)
    lowest = flat.argsort(dim=1)[:, :3]
    picked = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, lowest, True)
    assert (grad[picked] > 0).all() and (grad[~picked] == 0).all()
    least = flat.gather(1, lowest)
    assert torch.allclose(term, torch.nn.functional.softplus(least).mean())
    assert torch.allclose(shown, least.mean())


def test_patch_forms_reach_g_through_the_patch_logits_and_tile_form_is_unchanged():
    torch.manual_seed(0)
    d = Recording(Discriminator(16, 1, fmap_base=64, fmap_max=16, patch_grid=4))
    g = Generator(16, 1, latent_dim=8, fmap_base=64, fmap_max=16)
    fake = g(torch.randn(4, 8))
    value, _ = GANLoss("nsgan", penalty="patch_mil").g_loss(d, fake)
    value.backward()
    assert d.patches and d.patches[0].grad is not None and any(p.grad is not None for p in g.parameters())
    tile = GANLoss("nsgan", gamma=0.2)
    x = torch.rand(2, 1, 16, 16)
    ref, _ = tile.d_loss(d.d, x, x * 0.5, x.flip(2), level=2)
    assert not tile.uses_patches and torch.isfinite(ref)
    with pytest.raises(ValueError, match="masks"):
        GANLoss("nsgan", gamma=0.2, penalty="patch_mask").d_loss(d, x, x, x, level=2)
    with pytest.raises(ValueError, match="nsgan"):
        GANLoss("wgangp", penalty="patch_mil")


@pytest.mark.parametrize("extra, needle", [
    (["loss.penalty=patch_mask"], "model.patch_grid"),  # a patch form without a patch head
    (["model.patch_grid=8"], "loss.penalty is tile"),  # a head nobody trains
    ([*PATCH, "loss.kind=wgangp"], "loss.kind nsgan"),
    (["loss.penalty=patch_mil", "model.patch_grid=4", "loss.mil_k=17"], "loss.mil_k"),
    (["loss.penalty=patch_mil", "model.patch_grid=16"], "model.patch_grid"),  # 16-px tiles: at most 8
    (["loss.penalty=patches"], "loss.penalty"),
])
def test_config_keys_are_checked_with_one_line_errors(tiny_overrides, extra, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        load_config(None, [*tiny_overrides, *extra])
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- masks through shards and streams


def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _scratched(root: Path, size: int = 64, seed: int = 0) -> tuple[Path, Path, Path, np.ndarray]:
    """Dim noise images; the abnormal one has two white defects (a 3x6 bar and a 2x2 dot) and their mask."""
    rng = np.random.default_rng(seed)
    normal, abnormal, masks = root / "n", root / "a", root / "m"
    for i in range(2):
        _save(normal / f"ok{i}.png", rng.integers(0, 150, (size, size), dtype=np.uint8))
    img = rng.integers(0, 150, (size, size), dtype=np.uint8)
    mask = np.zeros((size, size), bool)
    mask[10:13, 20:26] = True
    mask[45:47, 50:52] = True
    img[mask] = 255
    _save(abnormal / "d.png", img)
    _save(masks / "d_mask.png", mask.astype(np.uint8) * 255)
    return normal, abnormal, masks, mask


def _samples(folder: Path) -> list[dict]:
    out: dict[str, dict] = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                out.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return list(out.values())


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_masks_travel_with_abnormal_tiles_into_the_stream(tmp_path):
    normal, abnormal, masks, _ = _scratched(tmp_path)
    manifest = write_shards(normal, abnormal, masks, tile=16, out=tmp_path / "s", stride=16, channels=1)
    ab = _samples(tmp_path / "s" / "abnormal")
    assert len(ab) == manifest["counts"]["tiles_abnormal"] == manifest["counts"]["tiles_abnormal_with_mask"] > 0
    assert all("mask.png" in s for s in ab) and not any("mask.png" in s for s in _samples(tmp_path / "s" / "normal"))
    stream = ShardStream(tmp_path / "s" / "abnormal", tile=16, channels=1, batch=len(ab), seed=0, num_workers=0, masks=True)
    batch = next(iter(stream))
    assert batch.masks.shape == (len(ab), 1, 16, 16) and batch.masks.dtype == torch.bool
    assert torch.equal(batch.masks, batch.images > 0.99)  # the white defect pixels are exactly the mask
    plain = ShardStream(tmp_path / "s" / "normal", tile=16, channels=1, batch=4, seed=0, num_workers=0)
    assert next(iter(plain)).masks is None

    old = write_shards(normal, abnormal, tile=16, out=tmp_path / "old", stride=16, channels=1)  # no masks: old layout
    assert old["counts"]["tiles_abnormal_with_mask"] == 0
    whole = next(iter(ShardStream(tmp_path / "old" / "abnormal", tile=16, channels=1, batch=4, seed=0, num_workers=0, masks=True)))
    assert whole.masks.all()  # a tile-level label only: the whole tile counts as the defect


def test_centred_crops_contain_their_mask_component(tmp_path):
    normal, abnormal, masks, mask = _scratched(tmp_path)
    manifest = write_shards(normal, abnormal, masks, tile=16, out=tmp_path / "c", stride=16, channels=1,
                            abnormal_centred=4, centre_jitter=3, seed=5)
    ab = _samples(tmp_path / "c" / "abnormal")
    assert manifest["counts"]["tiles_abnormal"] == len(ab) == 2 * 4 and manifest["abnormal_centred"] == 4
    boxes = [(slice(10, 13), slice(20, 26)), (slice(45, 47), slice(50, 52))]
    inside = {0: [], 1: []}
    for s in ab:
        meta = json.loads(s["json"])
        x, y = meta["x"], meta["y"]
        assert meta["centred"] and meta["label"] == "abnormal"
        assert np.array_equal(_png(s["mask.png"]) > 0, mask[y:y + 16, x:x + 16])
        for i, (ys, xs) in enumerate(boxes):
            if y <= ys.start and ys.stop <= y + 16 and x <= xs.start and xs.stop <= x + 16:
                inside[i].append((x, y))
    assert len(inside[0]) == 4 and len(inside[1]) == 4  # every crop holds its whole component
    assert len(set(inside[0])) > 1  # jittered, not one position four times
    for x, y in inside[0]:  # and near the component's centre: at most the jitter away
        assert abs(y + 8 - 11.5) <= 3.5 + 1 and abs(x + 8 - 23) <= 3 + 1
    # the grid's tiles that touch the mask are left out; those off it are still normal material
    assert manifest["counts"]["tiles_normal_from_defective"] == 16 - 2
    with pytest.raises(NsganError, match="--abnormal-masks"):
        write_shards(normal, abnormal, tile=16, out=tmp_path / "x", abnormal_centred=2)


# ----------------------------------------------------------------------------- old files, training, two processes


def test_model_file_from_before_the_patch_head_loads_and_scores(model_file, tmp_path):
    """The conftest model has no patch head: its metadata and tensors are the pre-patch format."""
    from nsgan.score.options import ScoreOptions
    from nsgan.score.scorer import Scorer
    from nsgan.score.search import SearchConfig

    meta = read_metadata(model_file)
    assert "patch_grid" not in meta["discriminator"]
    opts = ScoreOptions(stride=16, batch=8, search=SearchConfig(iterations=2, restarts=1))
    image = np.random.default_rng(0).random((24, 40, 1)).astype(np.float32)
    old = Scorer.from_file(model_file, opts).score(image)
    assert np.isfinite(old.map).all() and old.map.shape == (24, 40)

    m = load_model(model_file)
    d = Discriminator(16, 1, fmap_base=64, fmap_max=16, patch_grid=8)
    d.load_state_dict(m.discriminator.state_dict(), strict=False)  # same trunk, plus a head
    new_file = save_model(tmp_path / "p.safetensors", m.generator, d, {"config": {}, "images_seen": 0})
    assert read_metadata(new_file)["discriminator"]["patch_grid"] == 8
    new = Scorer.from_file(new_file, opts).score(image)
    assert load_model(new_file).discriminator.patch_grid == 8
    assert np.array_equal(new.map, old.map) and new.score == old.score  # the head does not touch scoring


def test_mil_training_exports_a_model_that_scores(tiny_overrides, tmp_path):
    from nsgan.score.options import ScoreOptions
    from nsgan.score.scorer import Scorer
    from nsgan.score.search import SearchConfig
    from nsgan.train.pipeline import train

    path = train(load_config(None, [*tiny_overrides, "loss.penalty=patch_mil", "model.patch_grid=4", "loss.mil_k=2",
                                    "schedule.total_kimg=0.192"]))
    rows = training_rows(tmp_path / "run" / "metrics.jsonl")
    assert all(np.isfinite(r["d_abnormal"]) and "p_real" in r for r in rows)
    m = load_model(path)
    assert m.discriminator.patch_grid == 4
    result = Scorer.from_file(path, ScoreOptions(stride=16, batch=8, search=SearchConfig(iterations=2, restarts=1))).score(
        np.random.default_rng(0).random((16, 32, 1)).astype(np.float32))
    assert np.isfinite(result.map).all()


def test_patch_mask_on_shards_without_masks_is_a_config_error(tmp_path, capsys):
    from nsgan.cli.main import main as cli

    normal, abnormal, _, _ = _scratched(tmp_path)
    write_shards(normal, abnormal, tile=16, out=tmp_path / "s", stride=16, channels=1)
    (tmp_path / "cfg.yaml").write_text("seed: 0\n")
    code = cli(["train", "--config", str(tmp_path / "cfg.yaml"), *TINY, *PATCH, f"data.normal={tmp_path / 's' / 'normal'}", f"data.abnormal={tmp_path / 's' / 'abnormal'}",
                f"run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and "loss.penalty" in err and "--abnormal-masks" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_two_processes_with_the_patch_head_end_with_identical_weights(tiny_shards, tmp_path):
    """DDP over gloo, masked penalty: R1 on both outputs in the one backward, and the patch head's
    per-level 1x1 convs (4x4 at 8 px, 8x8 at 16 px) left unused in some phases."""
    from nsgan.train.common import weights_digest

    run, cfg = tmp_path / "run", tmp_path / "cfg.yaml"
    cfg.write_text("seed: 0\n")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), str(REPO / "launch" / "train.py"),
           "--config", str(cfg), *TINY, *PATCH, f"data.normal={tiny_shards / 'normal'}", f"data.abnormal={tiny_shards / 'abnormal'}",
           f"run_dir={run}"]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    summary = json.loads((run / "run.json").read_text())
    digests = summary["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1], proc.stderr[-3000:]
    m = load_model(run / "model.safetensors")
    assert m.discriminator.patch_grid == 8 and m.meta["images_seen"] >= 256
    assert weights_digest([m.generator, m.discriminator]) == summary["export_digest"]
    rows = training_rows(run / "metrics.jsonl")
    assert rows[-1]["resolution"] == 16 and np.isfinite(rows[-1]["d_abnormal"]) and np.isfinite(rows[-1]["p_real"])
    assert proc.returncode == 0, proc.stderr[-3000:]

"""Augmentation of what D sees (DiffAugment / ADA): differentiable, real and fake alike, off at inference, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from nsgan.common.errors import ConfigError
from nsgan.models.augment import TRANSFORMS, AdaptiveP, Augmenter
from nsgan.models.model_file import load_model, save_model
from nsgan.train.config import load_config
from nsgan.train.gan_loop import Trainer, schedule_config
from nsgan.train.pipeline import train
from nsgan.train.schedule import schedule

from .conftest import TINY, training_rows


def _augmenter(policy, p=1.0, seed=0, **kw) -> Augmenter:
    return Augmenter(policy, p, torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_every_transform_changes_images_and_passes_gradients_to_them(name):
    x = torch.rand(16, 3, 16, 16, requires_grad=True)
    y = _augmenter([name])(x * 2 - 1)
    assert y.shape == x.shape and not torch.equal(y, x * 2 - 1)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the gradient reaches the input: G learns through it


def test_p_zero_is_the_identity_and_draws_as_many_numbers_as_p_one():
    x = torch.randn(8, 3, 16, 16)
    off, on = _augmenter(TRANSFORMS, p=0.0), _augmenter(TRANSFORMS, p=1.0)
    assert torch.equal(off(x), x)
    on(x)
    # the same stream position whatever p is: an adaptive p that moved does not shift the later draws
    assert torch.equal(off.generator.get_state(), on.generator.get_state())


def test_saturation_leaves_gray_images_alone():
    x = torch.randn(8, 1, 16, 16)
    assert torch.equal(_augmenter(["saturation"])(x), x)


def test_each_image_is_drawn_on_its_own_and_a_seed_repeats_them():
    x = torch.randn(1, 1, 16, 16).expand(32, 1, 16, 16).contiguous()
    y = _augmenter(["translation", "turn", "cutout", "brightness"])(x)
    assert len({tuple(img.flatten().tolist()) for img in y}) > 16  # one copy of an image, many different views
    assert torch.equal(y, _augmenter(["translation", "turn", "cutout", "brightness"])(x))


def test_a_defect_mask_moves_with_its_tile():
    """A 32-px mask beside an 8-px tile (a tile faded to a lower level): after flips, turns, shifts and
    cutout the pooled mask covers exactly the pixels that still show the defect."""
    full = torch.zeros(16, 1, 32, 32)
    full[:, :, 4:12, 16:28] = 1.0  # the defect, on 4-px blocks
    full[8:, :, 20:32, 0:8] = 1.0
    tile = F.avg_pool2d(full * 2 - 1, 4)  # +1 on the defect, -1 elsewhere
    aug = _augmenter(["flip", "turn", "translation", "cutout"], translation=0.25)
    moved, mask = aug(tile, full)
    assert mask.shape == full.shape and not torch.equal(mask, full)
    assert torch.equal(moved == 1, F.avg_pool2d(mask, 4) == 1)


def test_adaptive_p_rises_while_d_is_sure_of_the_reals_and_falls_otherwise():
    ada = AdaptiveP(target=0.6, speed_kimg=0.1, p_max=0.8, interval=2)
    p = 0.0
    for step in range(6):  # D calls every real real: r_t = 1 > 0.6
        ada.observe(1.0, 16)
        if ada.due(step):
            p = ada.adjust(p, ada.sign_sum, ada.count)
    assert p == pytest.approx(min(0.8, 3 * 32 / 100)) and ada.r_t == 1.0
    for step in range(6, 8):  # D unsure: r_t = 0.2 < 0.6
        ada.observe(0.2, 16)
        if ada.due(step):
            p = ada.adjust(p, ada.sign_sum, ada.count)
    assert p == pytest.approx(0.8 - 32 / 100)
    for step in range(8, 30):
        ada.observe(-1.0, 16)
        if ada.due(step):
            p = ada.adjust(p, ada.sign_sum, ada.count)
    assert p == 0.0  # clamped


@pytest.mark.parametrize("bad, needle", [
    (["augment.policy=[translation, mirror]"], "augment.policy"),
    (["augment.p=1.5"], "augment.p"),
    (["augment.padding=wrap"], "augment.padding"),
    (["augment.adaptive=true", "augment.p=0.9"], "augment.p"),
    (["augment.adaptive=true", "loss.kind=wgangp"], "augment.adaptive"),
    (["augment.speed=3"], "unknown key 'augment.speed'"),
])
def test_bad_augment_keys_are_one_line_errors_naming_the_key(bad, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")) as err:
        load_config(None, ["data.normal=x", *bad])
    assert "\n" not in str(err.value)


def _d_inputs(tiny_shards, tmp_path, extra):
    """D's inputs in one training step of the tiny config: [(call, images)], D step then G step."""
    cfg = load_config(None, [*TINY, f"data.normal={tiny_shards / 'normal'}", f"data.abnormal={tiny_shards / 'abnormal'}",
                             f"run_dir={tmp_path / 'run'}", "loss.r1_every=1", *extra])
    trainer = Trainer(cfg, "<test>")
    seen = []
    hook = trainer.D_raw.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        trainer.step(schedule(0, schedule_config(cfg), 1))
    finally:
        hook.remove()
    return seen


def test_reals_fakes_and_abnormal_tiles_reach_d_augmented_alike(tiny_shards, tmp_path):
    """With cutout at p = 1 every image D sees in a step (reals, the D step's fakes, the abnormal tiles,
    the G step's fakes) holds a square of exact zeros; without augmentation none does."""
    on = _d_inputs(tiny_shards, tmp_path / "on", ["augment.policy=[cutout]", "augment.p=1", "augment.cutout=0.5"])
    off = _d_inputs(tiny_shards, tmp_path / "off", [])
    assert len(on) == len(off) == 4  # real, fake, abnormal (D step), fake (G step)
    side = on[0].shape[-1]
    least = (side // 4) ** 2  # a square of side/2 hanging over a corner keeps a quarter of itself
    for images in on:
        assert ((images == 0).flatten(1).sum(dim=1) >= least).all()
    for images in off:
        assert ((images == 0).flatten(1).sum(dim=1) < least).all()


def test_scoring_is_the_same_whatever_the_augment_section_says(uninterrupted_tiny_model, tmp_path):
    from nsgan.score.options import ScoreOptions
    from nsgan.score.scorer import Scorer
    from nsgan.score.search import SearchConfig

    m = load_model(uninterrupted_tiny_model)
    meta = json.loads(json.dumps(m.meta))
    meta["config"]["augment"] = {**meta["config"].get("augment", {}), "p": 1.0, "adaptive": True, "p_max": 1.0}
    on = save_model(tmp_path / "on.safetensors", m.generator, m.discriminator, meta)
    img = np.random.default_rng(0).random((40, 40), dtype=np.float32)
    opts = ScoreOptions(search=SearchConfig(iterations=3, restarts=1))
    a, b = Scorer.from_file(uninterrupted_tiny_model, opts).score(img), Scorer.from_file(on, opts).score(img)
    assert a.score == b.score and np.array_equal(a.map, b.map) and np.array_equal(a.tile_scores, b.tile_scores)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    d = load_model(on).discriminator
    assert torch.equal(d(x), d(x))  # the model's D draws nothing


def test_resume_with_adaptive_augmentation_equals_the_uninterrupted_run(tiny_shards, tmp_path, uninterrupted_tiny_model):
    """p moves every 3 D steps (speed 0.05 kimg); the split stops after 4 steps, mid-window: the
    augmentation stream, p and the window's sums must all come back for the weights to match."""
    base = [*TINY, "train.log_every=1", f"data.normal={tiny_shards / 'normal'}", f"data.abnormal={tiny_shards / 'abnormal'}",
            "augment.p=0.3", "augment.adaptive=true", "augment.speed_kimg=0.05", "augment.adjust_every=3", "augment.padding=reflect"]
    full = train(load_config(None, [*base, f"run_dir={tmp_path / 'full'}"]))
    train(load_config(None, [*base, f"run_dir={tmp_path / 'split'}", "schedule.total_kimg=0.064"]))
    split = train(load_config(None, [*base, f"run_dir={tmp_path / 'split'}"]), resume=True)
    a, b = load_file(str(full)), load_file(str(split))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    def ps(run):
        return [(r["step"], r["augment_p"]) for r in training_rows(tmp_path / run / "metrics.jsonl")]

    assert ps("full") == ps("split")
    assert len({p for _, p in ps("full")}) > 2  # p moved
    plain = load_file(str(uninterrupted_tiny_model))  # the same run without augmentation
    assert any(not torch.equal(a[k], plain[k]) for k in a), "augmentation had no effect"

"""PGGAN networks: shapes at every level, exact fade-in continuity, batch-independent features."""

import json

import pytest
import torch
import torch.nn.functional as F

from nsgan.models.networks import (
    Discriminator,
    EqualizedConv2d,
    EqualizedLinear,
    Generator,
    fade_real,
    minibatch_stddev,
    network_kwargs,
    num_features,
)

TINY = dict(fmap_base=64, fmap_max=32)


def tiny_pair(resolution=32, channels=1, seed=0):
    torch.manual_seed(seed)
    return (
        Generator(resolution, channels, latent_dim=16, **TINY),
        Discriminator(resolution, channels, **TINY),
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_at_every_level_up_to_1024(channels):
    G, D = tiny_pair(1024, channels)
    assert G.max_level == D.max_level == 8
    z = torch.randn(2, 16)
    with torch.no_grad():
        for level in range(G.max_level + 1):
            res = 4 * 2**level
            for alpha in (0.5, 1.0):
                img = G(z, level, alpha)
                assert img.shape == (2, channels, res, res)
                logits, feats = D.forward_with_features(img, level, alpha)
                assert logits.shape == (2,)
                assert feats.shape == (2, num_features(0, **TINY) * 16)
                assert torch.isfinite(img).all() and torch.isfinite(logits).all()
        assert G(z).shape == (2, channels, 1024, 1024)  # level None = final level


@pytest.mark.parametrize("level", [1, 2, 3])
def test_generator_fade_in_starts_at_previous_level_upsampled(level):
    G, _ = tiny_pair()
    z = torch.randn(3, 16)
    with torch.no_grad():
        faded = G(z, level, alpha=0.0)
        previous = G(z, level - 1, alpha=1.0)
    assert torch.equal(faded, F.interpolate(previous, scale_factor=2, mode="nearest"))


@pytest.mark.parametrize("level", [1, 2, 3])
def test_discriminator_fade_in_starts_at_previous_level_on_pooled_input(level):
    _, D = tiny_pair(channels=3)
    res = 4 * 2**level
    x = torch.randn(4, 3, res, res)
    with torch.no_grad():
        assert torch.equal(D(x, level, alpha=0.0), D(F.avg_pool2d(x, 2), level - 1, alpha=1.0))
        assert torch.equal(D.features(x, level, 0.0), D.features(F.avg_pool2d(x, 2), level - 1))


def test_fade_moves_output_between_levels():
    G, _ = tiny_pair()
    z = torch.randn(2, 16)
    with torch.no_grad():
        a0, a_half, a1 = (G(z, 2, a) for a in (0.0, 0.5, 1.0))
    assert not torch.allclose(a0, a1)
    torch.testing.assert_close(a_half, (a0 + a1) / 2)


def test_features_do_not_depend_on_batch_but_logits_do():
    _, D = tiny_pair()
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        alone_logit, alone_feat = D.forward_with_features(x[0:1])
        batch_logit, batch_feat = D.forward_with_features(x)
    torch.testing.assert_close(alone_feat[0], batch_feat[0], rtol=1e-5, atol=1e-6)
    # the minibatch-stddev layer is live: the logit does see the other samples
    assert not torch.allclose(alone_logit[0], batch_logit[0], atol=1e-4)


def test_minibatch_stddev_groups_and_odd_batches():
    x = torch.randn(6, 2, 4, 4)
    out = minibatch_stddev(x, 4)  # 6 is not divisible by 4: falls back to groups of 3
    assert out.shape == (6, 3, 4, 4)
    groups = x.reshape(3, 2, 2, 4, 4)  # sample i is in group i % 2
    expected = groups.std(dim=0, unbiased=False).mean(dim=(1, 2, 3))
    torch.testing.assert_close(out[:, 2, 0, 0], expected.repeat(3), rtol=1e-4, atol=1e-6)
    assert minibatch_stddev(x[:1], 4)[:, 2].abs().max() < 1e-3  # single sample: ~0, no NaN


def test_equalized_lr_stores_unit_variance_weights_and_scales_at_runtime():
    torch.manual_seed(0)
    conv, dense = EqualizedConv2d(64, 64, 3), EqualizedLinear(512, 256)
    for layer, fan_in in ((conv, 64 * 9), (dense, 512)):
        w = layer.weight.detach()
        assert abs(w.mean().item()) < 0.02 and abs(w.std().item() - 1.0) < 0.02
        assert layer.scale == pytest.approx(2**0.5 / fan_in**0.5)
    x = torch.randn(2, 64, 5, 5)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight * conv.scale, conv.bias, padding=1))
    # all layers of the networks are equalized ones (no stray default-initialised layers)
    G, D = tiny_pair()
    for net in (G, D):
        leaves = [m for m in net.modules() if not list(m.children())]
        assert leaves and all(isinstance(m, (EqualizedConv2d, EqualizedLinear)) for m in leaves)


def test_widths_follow_pggan_rule_and_never_vanish():
    assert [num_features(k, 8192, 512) for k in range(9)] == [512, 512, 512, 512, 256, 128, 64, 32, 16]
    assert num_features(8, 64, 32) == 1


def test_fade_real_pools_and_fades_like_the_generator():
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert torch.equal(fade_real(x, 3, 1.0), x)
    lvl2 = fade_real(x, 2, 1.0)
    torch.testing.assert_close(lvl2, F.avg_pool2d(x, 2))
    # alpha = 0: the level's image is its previous level upsampled, as G's output at alpha = 0
    torch.testing.assert_close(
        fade_real(x, 2, 0.0), F.interpolate(F.avg_pool2d(x, 4), scale_factor=2, mode="nearest")
    )
    with pytest.raises(ValueError):
        fade_real(torch.rand(1, 1, 24, 24), 2, 1.0)


def test_all_levels_have_parameters_from_the_start():
    G, D = tiny_pair(32)
    assert len(G.to_rgb) == len(D.from_rgb) == 4
    # a level-0 step leaves the higher levels untouched (DDP: find_unused_parameters)
    G(torch.randn(2, 16), 0).sum().backward()
    assert G.to_rgb[3].weight.grad is None and G.to_rgb[0].weight.grad is not None


def test_network_kwargs_rebuild_the_same_shapes():
    G, D = tiny_pair(16, 3)
    for net in (G, D):
        kwargs = json.loads(json.dumps(network_kwargs(net)))
        clone = type(net)(**kwargs)
        assert {k: v.shape for k, v in clone.state_dict().items()} == {
            k: v.shape for k, v in net.state_dict().items()
        }
    with pytest.raises(TypeError):
        network_kwargs(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("resolution", [0, 2, 3, 48, 100, 1000, 4.0, True])
def test_bad_resolution_raises(resolution):
    with pytest.raises(ValueError, match="resolution"):
        Generator(resolution, 1)
    with pytest.raises(ValueError, match="resolution"):
        Discriminator(resolution, 1)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="channels"):
        Generator(32, 2)
    G, D = tiny_pair(16)
    with pytest.raises(ValueError, match="level"):
        G(torch.randn(1, 16), level=3)
    with pytest.raises(ValueError, match="alpha"):
        G(torch.randn(1, 16), level=1, alpha=1.5)
    with pytest.raises(ValueError, match="expects"):
        D(torch.randn(1, 1, 16, 16), level=1)

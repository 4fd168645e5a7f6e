"""Batched AnoGAN latent search: finds the latent that draws a tile, per-tile independence, seeds, early stop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nsgan.common.errors import ConfigError
from nsgan.score.search import LatentSearch, SearchConfig, start_latents


class PatternG(torch.nn.Module):
    """A generator that draws a fixed texture (period 8) shifted by one brightness w·z: it can draw clean tiles exactly."""

    def __init__(self, tile: int, channels: int = 1, latent_dim: int = 8):
        super().__init__()
        self.latent_dim, self.channels, self.resolution = latent_dim, channels, tile
        i = torch.arange(tile, dtype=torch.float32)
        p = 0.4 * torch.sin(2 * math.pi * i / 8)[:, None] * torch.cos(2 * math.pi * i / 8)[None, :]
        self.register_buffer("pattern", p.expand(channels, tile, tile).clone())
        self.w = torch.nn.Parameter(torch.ones(latent_dim) / math.sqrt(latent_dim))

    def forward(self, z, level=None, alpha=1.0):
        return self.pattern[None] + (z @ self.w)[:, None, None, None]


class TinyD(torch.nn.Module):
    """Batch-independent features: a fixed random conv, pooled."""

    def __init__(self, channels: int = 1):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.conv = torch.nn.Conv2d(channels, 4, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.3)

    def features(self, x, level=None, alpha=1.0):
        return torch.nn.functional.adaptive_avg_pool2d(torch.nn.functional.leaky_relu(self.conv(x), 0.2), 4).flatten(1)


def clean_image(height: int, width: int) -> np.ndarray:
    """The texture PatternG draws at offset 0, as an image in [0, 1]: any tile on an 8-px grid matches it exactly."""
    y, x = np.mgrid[0:height, 0:width]
    p = 0.4 * np.sin(2 * np.pi * y / 8) * np.cos(2 * np.pi * x / 8)
    return (0.5 + 0.5 * p).astype(np.float32)





def tiles_from(g: PatternG, offsets) -> torch.Tensor:
    return g.pattern[None] + torch.tensor(offsets, dtype=torch.float32)[:, None, None, None]


def test_search_finds_the_latent_that_draws_each_tile_and_flags_a_defect():
    g, d = PatternG(16), TinyD()
    x = tiles_from(g, [0.0, 0.5, -0.7, 0.0])
    x[3, 0, 4:8, 4:8] += 0.8  # a bright defect in tile 3
    out = LatentSearch(g, d, SearchConfig(iterations=150, lr=0.05, restarts=2)).search(x, range(4))
    assert out.scores[:3].max() < 0.03
    assert out.scores[3] > 3 * out.scores[:3].max()
    assert out.residuals.shape == (4, 16, 16) and out.reconstructions.shape == (4, 1, 16, 16)
    assert out.residuals[:3].max() < 0.05
    r3 = out.residuals[3]
    assert r3[4:8, 4:8].min() > 0.3 and r3.flatten().topk(16).indices.tolist() == sorted(
        (r3.flatten().topk(16).indices).tolist(), key=lambda i: -r3.flatten()[i].item())
    assert set((r3 > 0.3).nonzero()[:, 0].tolist()) == {4, 5, 6, 7}


def test_starts_depend_only_on_the_global_tile_index():
    a = start_latents([5, 6, 7], restarts=2, latent_dim=4, seed=3)
    b = start_latents([7], restarts=2, latent_dim=4, seed=3)
    assert torch.equal(a[4:6], b)
    assert not torch.equal(start_latents([7], 2, 4, seed=4), b)


def test_batched_search_equals_searching_each_tile_alone():
    g, d = PatternG(16), TinyD()
    x = tiles_from(g, [0.1, -0.3, 0.6])
    x[1, 0, :3, :3] = 0.9
    cfg = SearchConfig(iterations=40, restarts=2, patience=5)
    s = LatentSearch(g, d, cfg)
    together = s.search(x, [10, 11, 12])
    for k in range(3):
        alone = s.search(x[k : k + 1], [10 + k])
        torch.testing.assert_close(alone.scores[0], together.scores[k], atol=1e-5, rtol=0)
        torch.testing.assert_close(alone.residuals[0], together.residuals[k], atol=1e-5, rtol=0)
        assert alone.steps[0] == together.steps[k]


def test_more_random_starts_are_never_worse():
    g, d = PatternG(16), TinyD()
    x = tiles_from(g, [0.3, -0.2])
    one = LatentSearch(g, d, SearchConfig(iterations=5, restarts=1)).search(x, [0, 1])
    four = LatentSearch(g, d, SearchConfig(iterations=5, restarts=4)).search(x, [0, 1])
    assert (four.scores <= one.scores + 1e-7).all()  # the first start is shared, others can only help


def test_early_stop_ends_tiles_that_stop_improving():
    g, d = PatternG(16), TinyD()
    out = LatentSearch(g, d, SearchConfig(iterations=400, restarts=1, patience=3, lr=0.05)).search(tiles_from(g, [0.0, 0.2]), [0, 1])
    assert (out.steps < 400).all() and (out.steps > 3).all()


def test_networks_stay_frozen_and_unchanged():
    g, d = PatternG(16), TinyD()
    before = [p.clone() for p in list(g.parameters()) + list(d.parameters())]
    LatentSearch(g, d, SearchConfig(iterations=5)).search(tiles_from(g, [0.2]), [0])
    after = list(g.parameters()) + list(d.parameters())
    assert all(not p.requires_grad for p in after)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert not g.training and not d.training


def test_real_networks_are_reproducible_in_fp32_and_run_in_bf16():
    from nsgan.models.networks import Discriminator, Generator

    torch.manual_seed(0)
    g = Generator(16, 1, latent_dim=16, fmap_base=64, fmap_max=16)
    d = Discriminator(16, 1, fmap_base=64, fmap_max=16)
    with torch.no_grad():
        x = g(torch.randn(3, 16)).clamp(-1, 1)
    s = LatentSearch(g, d, SearchConfig(iterations=4, restarts=2))
    a, b = s.search(x, [0, 1, 2]), s.search(x, [0, 1, 2])
    assert torch.equal(a.scores, b.scores) and torch.equal(a.residuals, b.residuals)
    bf = LatentSearch(g, d, SearchConfig(iterations=4, restarts=2, precision="bf16")).search(x, [0, 1, 2])
    assert torch.isfinite(bf.scores).all() and bf.residuals.dtype == torch.float32
    torch.testing.assert_close(bf.scores, a.scores, atol=0.05, rtol=0.1)


@pytest.mark.parametrize("key,value", [("lam", 1.5), ("iterations", 0), ("precision", "fp16"), ("restarts", 0)])
def test_bad_search_settings_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"search.{key}"):
        SearchConfig(**{key: value})

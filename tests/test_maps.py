"""Map post-processing: streamed smoothing equals whole-map smoothing, the detail residual is the
residual minus its local mean, and the scorer's image score follows the chosen rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from nsgan.common.errors import ConfigError
from nsgan.score.maps import detail_residual, smooth_stream
from nsgan.score.options import ScoreOptions
from nsgan.score.scorer import Scorer
from nsgan.score.search import SearchConfig


@pytest.mark.parametrize("h,w,sigma,blocks", [(100, 37, 4.0, [7, 20, 1, 72]), (5, 9, 4.0, [2, 3]), (64, 64, 2.0, [64]),
                                              (33, 20, 1.5, [1] * 33), (9, 7, 1.0, [4, 5]), (10, 7, 1.0, [3, 3, 4]),
                                              (200, 11, 1.0, [64, 64, 64, 8])])
def test_streamed_smoothing_equals_smoothing_the_whole_map(h, w, sigma, blocks):
    m = np.random.default_rng(0).random((h, w)).astype(np.float32)
    starts = np.cumsum([0] + blocks[:-1])
    out, expect_first = np.zeros_like(m), 0
    for first, rows in smooth_stream(((int(y), m[y:y + b]) for y, b in zip(starts, blocks)), h, sigma):
        assert first == expect_first  # in order, no gaps
        out[first:first + rows.shape[0]] = rows
        expect_first += rows.shape[0]
    assert expect_first == h
    np.testing.assert_allclose(out, gaussian_filter(m.astype(np.float64), sigma, mode="reflect", truncate=4.0), atol=1e-6)


def test_detail_residual_is_the_residual_minus_its_local_mean():
    x, rec = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    d = (x - rec).numpy()
    expect = np.abs(d - gaussian_filter(d.astype(np.float64), (0, 0, 1, 1), mode="mirror")).mean(1) / 2
    np.testing.assert_allclose(detail_residual(x, rec).numpy(), expect, atol=1e-6)
    # a smooth offset leaves (almost) nothing; a sharp dot stays
    flat = torch.zeros(1, 1, 32, 32)
    assert detail_residual(flat + 0.5, flat).max() < 1e-6
    dot = flat.clone()
    dot[0, 0, 16, 16] = 1.0
    assert detail_residual(dot, flat)[0, 16, 16] > 0.3


def test_image_score_rules_and_smoothing_in_the_scorer(model_file):
    img = np.random.default_rng(3).random((40, 40)).astype(np.float32)
    search = SearchConfig(mode="search", iterations=2, restarts=1)
    raw = Scorer.from_file(model_file, ScoreOptions(search=search, residual="pixel", map_sigma=0.0, image_score="tile")).score(img)
    assert raw.score == pytest.approx(float(raw.tile_scores.max()))  # AnoGAN's rule stays available
    sm = Scorer.from_file(model_file, ScoreOptions(search=search, residual="pixel", map_sigma=2.0, image_score="map_max")).score(img)
    np.testing.assert_allclose(sm.map, gaussian_filter(raw.map.astype(np.float64), 2.0, mode="reflect"), atol=1e-5)
    assert sm.score == pytest.approx(float(sm.map.max()))
    with pytest.raises(ConfigError, match="image_score"):
        ScoreOptions(image_score="mean")
    with pytest.raises(ConfigError, match="residual"):
        ScoreOptions(residual="ssim")


@pytest.mark.parametrize("mode", ["search", "encoder"])
def test_many_small_images_share_batches_and_score_as_when_alone(model_file, gan_model_with_encoder, mode):
    model = gan_model_with_encoder if mode == "encoder" else model_file
    rng = np.random.default_rng(4)
    images = [rng.random((h, w)).astype(np.float32) for h, w in [(16, 16), (24, 40), (9, 30), (70, 70), (32, 16)]]
    search = SearchConfig(mode=mode, iterations=3 if mode == "search" else None, restarts=1)
    scorer = Scorer.from_file(model, ScoreOptions(search=search, batch=12, map_sigma=1.0, image_score="map_max"))
    together = list(scorer.score_all(images))  # (70, 70) has more tiles than a batch: scored alone
    assert len(together) == len(images)
    for img, r in zip(images, together):
        alone = scorer.score(img)
        np.testing.assert_allclose(r.map, alone.map, atol=1e-5)
        np.testing.assert_allclose(r.tile_scores, alone.tile_scores, atol=1e-5)
        assert r.score == pytest.approx(alone.score, abs=1e-5)

"""The comparator's training data (painter blur, blobs, SyntheticDefects) and its loss (issue 20)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from nsgan.common.errors import DataError
from nsgan.data import painter
from nsgan.data.blobs import MIN_CHANGE, paint_blob, paint_blob_image, perlin
from nsgan.data.synthetic import SyntheticDefects
from nsgan.models.comparator_loss import ComparatorLoss, dice_loss, focal_loss, mil_loss

# sha256 of _painter_digest() computed with the painter as it was before issue 20 (commit 60f7e39):
# protocols, the demo and the tests' shards depend on these exact pixels and RNG draws.
PAINTER_DIGEST = "069d82691a4767730edb0c30ee7cf5006277c6c227fb0a59ffef25414e3605ae"


def _painter_digest(**kw) -> str:
    h = hashlib.sha256()
    base = np.random.default_rng(7).random((40, 40, 1)).astype(np.float32)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        out, mask, infos = painter.paint_defects(base, rng, count=3, max_area_frac=0.03)
        h.update(out.tobytes()); h.update(mask.tobytes()); h.update(repr(infos).encode())
        for k in painter.KINDS:
            o, m, _ = getattr(painter, "paint_" + k)(base, rng, **kw)
            h.update(o.tobytes()); h.update(m.tobytes())
    return h.hexdigest()


def test_painter_without_blur_is_bit_identical_to_before():
    assert _painter_digest() == PAINTER_DIGEST
    assert _painter_digest(blur=0.0) == PAINTER_DIGEST


def test_painter_blur_keeps_the_mask_and_spreads_the_change():
    img = np.full((32, 32, 1), 0.5, np.float32)
    sharp, m0, _ = painter.paint_scratch(img, np.random.default_rng(3), max_area=40, contrast=0.3, sign=1)
    soft, m1, info = painter.paint_scratch(img, np.random.default_rng(3), max_area=40, contrast=0.3, sign=1, blur=1.0)
    assert (m0 == m1).all() and info["blur"] == 1.0
    assert (soft != img).sum() > (sharp != img).sum()  # blur spreads the change beyond the stroke
    assert (soft[m1] != 0.5).all()  # every mask pixel still changes


def _tiles(n=24, t=32, seed=0):
    rng = np.random.default_rng(seed)
    return (np.round(rng.random((n, 1, t, t)) * 0.6 * 255 + 40) / 255).astype(np.float32)


def test_synthetic_defects_mask_bounds_determinism_and_quantisation():
    tiles = _tiles()
    s = SyntheticDefects()
    out, masks, tags = s.apply(tiles, np.random.default_rng(1))
    assert out.shape == tiles.shape and out.dtype == np.float32 and masks.shape == (24, 1, 32, 32)
    assert len(tags) == 24 and set(tags) <= {"scratch", "pit", "crack", "blob:shift", "blob:swap", "blob:gain"}
    area = masks.reshape(24, -1).sum(1)
    assert (area >= 1).all() and (area <= math.ceil(0.06 * 32 * 32) - 1).all()
    assert not (masks[:, 0] & (out == tiles)[:, 0]).any()  # mask ⊆ changed pixels
    assert np.array_equal(np.round(out * 255) / 255, out)  # quantised to 8 bit
    again = s.apply(tiles, np.random.default_rng(1))
    assert np.array_equal(again[0], out) and np.array_equal(again[1], masks) and again[2] == tags
    other = s.apply(tiles, np.random.default_rng(2))
    assert not np.array_equal(other[0], out)


def test_synthetic_defects_kind_subsets_and_blob_only():
    tiles = _tiles(12)
    _, _, tags = SyntheticDefects(kinds=(), blob=True).apply(tiles, np.random.default_rng(0))
    assert all(t.startswith("blob:") for t in tags)
    _, _, tags = SyntheticDefects(kinds=("pit",), blob=False).apply(tiles, np.random.default_rng(0))
    assert set(tags) == {"pit"}
    _, _, tags = SyntheticDefects(kinds=("scratch", "crack"), blob_fraction=0.0).apply(tiles, np.random.default_rng(0))
    assert "pit" not in tags and not any(t.startswith("blob") for t in tags)
    with pytest.raises(DataError, match="nothing to paint"):
        SyntheticDefects(kinds=(), blob=False)
    with pytest.raises(DataError, match="unknown kind"):
        SyntheticDefects(kinds=("dent",))
    with pytest.raises(DataError, match="cannot hold"):
        SyntheticDefects().apply(_tiles(2, t=8), np.random.default_rng(0))


def test_unquantised_output_when_bit_depth_zero():
    out, _, _ = SyntheticDefects(bit_depth=0, blur=(1.0,)).apply(_tiles(8), np.random.default_rng(0))
    assert not np.array_equal(np.round(out * 255) / 255, out)


def test_blob_bounds_mask_within_change_and_seed():
    rng = np.random.default_rng(0)
    tile = rng.random((1, 32, 32)).astype(np.float32)
    other = rng.random((1, 32, 32)).astype(np.float32)
    for fill in ("shift", "swap", "gain"):
        for seed in range(5):
            out, mask, info = paint_blob(tile, np.random.default_rng(seed), 40, fill, other)
            assert 5 <= mask.sum() <= 40 and info["area"] == mask.sum()
            assert (np.abs(out - tile)[0][mask] >= MIN_CHANGE).all()
            again = paint_blob(tile, np.random.default_rng(seed), 40, fill, other)
            assert np.array_equal(again[0], out) and np.array_equal(again[1], mask)
    # flat material: a shifted copy changes nothing, so the blob falls back to a visible offset
    flat = np.full((1, 32, 32), 0.5, np.float32)
    out, mask, info = paint_blob(flat, np.random.default_rng(0), 30, "shift")
    assert info["fill"] == "offset" and mask.sum() >= 5
    img, mask, _ = paint_blob_image(np.random.default_rng(1).random((64, 64, 1)).astype(np.float32),
                                    np.random.default_rng(2), 0.01)
    assert img.shape == (64, 64, 1) and 5 <= mask.sum() <= 40
    noise = perlin((16, 16), (3, 3), np.random.default_rng(0))
    assert noise.shape == (16, 16) and np.abs(noise).max() <= 1.5 and noise.std() > 0.05


def test_focal_and_dice_hand_values():
    logits = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2)
    target = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    # pixel 1: p = 0.5, y = 1: 0.75 · 0.5² · ln 2; pixel 2: p = σ(2), y = 0: 0.25 · σ(2)² · (2 + ln(1 + e^-2))
    s2 = 1 / (1 + math.exp(-2))
    want = (0.75 * 0.25 * math.log(2) + 0.25 * s2**2 * (2 + math.log1p(math.exp(-2)))) / 2
    assert float(focal_loss(logits, target, 2.0, 0.75)) == pytest.approx(want, rel=1e-5)
    # Dice: Σpy = 0.5, Σp = 0.5 + σ(2), Σy = 1 → 1 − 2/(2.5 + σ(2))
    assert float(dice_loss(logits, target)) == pytest.approx(1 - 2 / (2.5 + s2), rel=1e-5)
    # an all-normal tile adds no Dice term
    both = torch.cat([logits, logits]), torch.cat([target, torch.zeros_like(target)])
    assert float(dice_loss(*both)) == pytest.approx(1 - 2 / (2.5 + s2), rel=1e-5)
    assert float(dice_loss(logits, torch.zeros_like(target))) == 0.0
    loss, stats = ComparatorLoss("focal_dice")(logits, target)
    assert float(loss) == pytest.approx(want + 1 - 2 / (2.5 + s2), rel=1e-5)
    assert stats["p_defect"] == pytest.approx(0.5) and stats["loss_dice"] > 0
    bce, _ = ComparatorLoss("bce", pos_weight=10)(logits, target)
    assert float(bce) == pytest.approx((10 * math.log(2) + 2 + math.log1p(math.exp(-2))) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="must be one of"):
        ComparatorLoss("hinge")


def test_mil_fires_on_the_hot_tile_of_a_bag_and_punishes_a_cold_one():
    bag = torch.full((9, 1, 8, 8), -6.0)
    bag[4, 0, 2:6, 2:6] = 6.0  # one tile of nine holds the defect (16 pixels)
    assert float(mil_loss(bag, True, k=16)) < 0.01  # the hot pixels carry the bag
    assert float(mil_loss(bag, False, k=16)) > 5.0  # a normal image must not have them
    cold = torch.full((9, 1, 8, 8), -6.0)
    assert float(mil_loss(cold, True, k=16)) > 5.0 and float(mil_loss(cold, False, k=16)) < 0.01
    # the gradient reaches only the top-k pixels
    x = bag.clone().requires_grad_(True)
    mil_loss(x, False, k=16).backward()
    assert int((x.grad != 0).sum()) == 16 and float(x.grad[4, 0, 2:6, 2:6].abs().min()) > 0
    assert float(ComparatorLoss(mil_k=16, mil_weight=2).mil(bag, False)) == pytest.approx(2 * float(mil_loss(bag, False, 16)))


def test_textures_protocol_blob_test_images_leave_the_other_draws_unchanged(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tools.protocols.textures import build_textures

    kw = dict(size=32, n_train=6, n_abnormal=3, n_test_good=2, n_test_defect=3, large_size=48, large_defects=2,
              epsilon=0.2, seed=4)
    build_textures(tmp_path / "a", **kw)
    proto = build_textures(tmp_path / "b", n_test_blob=3, **kw)

    def files(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.png")}

    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    blob = {k for k in b if "/blob/" in k}
    assert {k for k in blob if k.startswith("test/")} == {f"test/blob/{i:05d}.png" for i in range(3)}
    assert {k: v for k, v in b.items() if k not in blob} == a  # every other file byte for byte
    assert len(proto["labelled_train"]) == 3 and all(e["kinds"] for e in proto["labelled_train"])
    from nsgan.data.imageio import read_image

    for i in range(3):
        m = read_image(tmp_path / "b" / "ground_truth" / "blob" / f"{i:05d}_mask.png")[:, :, 0] > 0.5
        assert 5 <= m.sum() <= 10  # under 1% of 32² (ceil(10.24) - 1 = 10 px), at least the 5-px minimum


def test_the_mil_term_pools_the_plain_normal_tiles_into_one_negative_bag():
    """Positive bags (whole labelled images) against one bag of all plain normal tiles of the step, weighted 0.1 by
    default (1.0 made C fire on normal texture in the audit loop: docs/comparator.md)."""
    logits = torch.randn(7, 1, 8, 8)
    loss = ComparatorLoss()
    assert loss.mil_weight == 0.1
    got = loss.mil_term(logits, [(3, 5), (5, 7)], (0, 3))
    pos = (mil_loss(logits[3:5], True, 16) + mil_loss(logits[5:7], True, 16)) / 2
    want = 0.5 * 0.1 * (pos + mil_loss(logits[0:3], False, 16))
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    per_tile = torch.stack([mil_loss(logits[i:i + 1], False, 16) for i in range(3)]).mean()
    assert float(mil_loss(logits[0:3], False, 16)) != pytest.approx(float(per_tile))  # not the per-tile mean it replaced
    assert float(loss.mil_term(logits, [(3, 5)], (0, 0))) == pytest.approx(0.5 * 0.1 * float(mil_loss(logits[3:5], True, 16)))


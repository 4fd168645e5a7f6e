"""The painter's promises: small masks, changes only where the mask says, same seed same defects."""

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from nsgan.data.painter import KINDS, paint_crack, paint_defects, paint_pit, paint_scratch
from nsgan.common.errors import DataError
from nsgan.data.textures import TEXTURES, texture_image, texture_photo


def _flat(h=96, w=96, c=1, value=0.5):
    return np.full((h, w, c), value, dtype=np.float32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [(28, 28), (64, 96), (300, 300)])
def test_mask_stays_under_one_percent(kind, size):
    rng = np.random.default_rng(1)
    count = 1 if size[0] < 64 else 3  # 1% of 28x28 is 7 px: room for one defect
    for _ in range(5):
        _, mask, infos = paint_defects(_flat(*size), rng, kinds=(kind,), count=count)
        assert 0 < mask.sum() < 0.01 * mask.size
        assert all(info["kind"] == kind for info in infos)


def test_changes_only_inside_or_next_to_mask_and_visible():
    rng = np.random.default_rng(2)
    for _ in range(10):
        img = texture_image("gravel", 128, rng)
        out, mask, infos = paint_defects(img, rng, count=3)
        diff = np.abs(out - img)[:, :, 0]
        near = binary_dilation(mask, iterations=2)
        assert diff[~near].max(initial=0) == 0
        assert diff[~mask].max(initial=0) <= 0.1 + 1e-6  # the anti-aliased rim is faint
        # Visible but subtle: typical change inside the mask in the 0.15-0.4 contrast band
        # (clipping at black/white can only make it smaller).
        assert 0.05 < np.median(diff[mask]) <= 0.4 + 1e-6
        for info in infos:
            x0, y0, x1, y1 = info["bbox"]
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128 and info["area"] > 0
            assert mask[y0:y1, x0:x1].sum() >= info["area"]


def test_same_seed_same_defects_and_input_untouched():
    img = texture_image("brick", 80, np.random.default_rng(0))
    before = img.copy()
    a = paint_defects(img, np.random.default_rng(7), count=3)
    b = paint_defects(img, np.random.default_rng(7), count=3)
    c = paint_defects(img, np.random.default_rng(8), count=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[1], c[1])
    assert np.array_equal(img, before)


@pytest.mark.parametrize("painter", [paint_scratch, paint_pit, paint_crack])
def test_single_painters_on_rgb(painter):
    rng = np.random.default_rng(3)
    img = _flat(64, 64, 3, 0.6)
    out, mask, info = painter(img, rng, max_area=60)
    assert out.shape == img.shape and out.dtype == np.float32 and mask.shape == (64, 64)
    assert 0 < info["area"] == mask.sum()
    assert out.min() >= 0 and out.max() <= 1
    # Gray defects on RGB: the same change in every channel.
    assert np.allclose(out[..., 0], out[..., 1]) and np.allclose(out[..., 1], out[..., 2])


def test_scratch_is_thin():
    rng = np.random.default_rng(4)
    for _ in range(10):
        _, mask, info = paint_scratch(_flat(200, 200), rng, max_area=300)
        assert 1 <= info["width"] <= 3
        # A stroke 3 px wide or less: mask area about length × (width + 0.5), never a blob.
        assert info["area"] <= 3.5 * (info["length"] + 4)


def test_bad_arguments_are_data_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="unknown defect kind"):
        paint_defects(_flat(), rng, kinds=("dent",))
    with pytest.raises(DataError, match="cannot hold"):
        paint_defects(_flat(10, 10), rng)
    with pytest.raises(DataError, match="expected an"):
        paint_defects(np.zeros((10, 10)), rng)


@pytest.mark.parametrize("name", TEXTURES)
def test_texture_photos_load_offline(name):
    photo = texture_photo(name)
    assert photo.ndim == 3 and photo.shape[2] == 1 and min(photo.shape[:2]) >= 256
    assert photo.dtype == np.float32 and 0 <= photo.min() < photo.max() <= 1


def test_texture_image_sizes_and_seed():
    img = texture_image("grass", (40, 70), np.random.default_rng(5))
    assert img.shape == (40, 70, 1) and img.dtype == np.float32
    big = texture_image("grass", (700, 1100), np.random.default_rng(5))
    assert big.shape == (700, 1100, 1) and big.std() > 0.05
    assert np.array_equal(texture_image("grass", 32, np.random.default_rng(9)),
                          texture_image("grass", 32, np.random.default_rng(9)))
    # A crop comes from the photo (up to flips/turns): its values are a subset of the photo's.
    assert np.isin(img, texture_photo("grass")).all()


@pytest.mark.parametrize("fraction, size", [(0.25, 64), (0.5, 256)])  # 0.5 and 256: the demo's test image, unmirrored
def test_train_and_test_parts_do_not_share_material(fraction, size):
    photo = texture_photo("brick")[:, :, 0]
    split = int(round(photo.shape[0] * (1 - fraction)))
    rng = np.random.default_rng(1)
    for part, rows in (("train", photo[:split]), ("test", photo[split:])):
        img = texture_image("brick", size, rng, part=part, holdout_fraction=fraction)[:, :, 0]
        views = [np.rot90(v, k) for v in (rows, rows[:, ::-1]) for k in range(4)]
        assert any(_contains(v, img) for v in views)


def test_a_holdout_fraction_outside_0_1_is_a_data_error():
    with pytest.raises(DataError, match="holdout_fraction.*1.5"):
        texture_image("brick", 32, np.random.default_rng(0), part="test", holdout_fraction=1.5)


def _contains(big, small):
    """Whether `small` occurs as a contiguous crop of `big`."""
    h, w = small.shape
    if big.shape[0] < h or big.shape[1] < w:
        return False
    corner = np.lib.stride_tricks.sliding_window_view(big[: big.shape[0] - h + 1 + 3, : big.shape[1] - w + 1 + 3], (4, 4))
    ys, xs = np.nonzero((corner == small[:4, :4]).all(axis=(2, 3)))
    return any(np.array_equal(big[y : y + h, x : x + w], small) for y, x in zip(ys, xs))


def test_unknown_texture_is_a_data_error():
    with pytest.raises(DataError, match="unknown texture 'marble'.*brick"):
        texture_photo("marble")

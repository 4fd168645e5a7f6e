"""Real texture photos that ship inside scikit-image, as endless normal material.

The demo and the texture protocol need many normal images of any size without a download.
scikit-image bundles a few 512×512 grayscale texture photos in its wheel (not fetched via pooch),
so they load offline. `texture_image` cuts random crops with flips and 90° turns (symmetries that
keep a photo looking like the same material) and mirror-tiles the photo when asked for more pixels
than it has, which avoids seams.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import skimage.data

from nsgan.common.errors import DataError
from nsgan.data.imageio import to_unit_float

# Texture photos bundled in the scikit-image wheel itself (skimage/data/*.png), checked offline.
TEXTURES = ("brick", "grass", "gravel")
PARTS = ("all", "train", "test")
HOLDOUT_FRACTION = 0.25  # bottom share of each photo reserved for test images


@lru_cache(maxsize=None)
def _load(name: str) -> np.ndarray:
    try:
        arr = getattr(skimage.data, name)()
    except Exception as exc:  # a stripped install or a fetcher that wants the network
        raise DataError(f"texture {name!r}: scikit-image could not load it offline ({type(exc).__name__}: {exc})") from None
    img = to_unit_float(np.asarray(arr), f"skimage.data.{name}")
    if img.shape[2] == 3:
        img = (img @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]
    img.setflags(write=False)
    return img


def texture_photo(name: str) -> np.ndarray:
    """The whole photo as float32 (H, W, 1) in [0, 1]; DataError for a name not in TEXTURES."""
    if name not in TEXTURES:
        raise DataError(f"unknown texture {name!r}; available: {', '.join(TEXTURES)}")
    return _load(name).copy()


def _size_hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise DataError(f"texture size must be positive, got {size!r}")
    return h, w


def texture_image(name: str, size, rng: np.random.Generator, part: str = "all",
                  holdout_fraction: float = HOLDOUT_FRACTION) -> np.ndarray:
    """A random (H, W, 1) view of the texture: crop, flip and 90° turn; mirror-tiled when larger.

    `size` is an int (square) or (height, width). `part` keeps test material unseen in training:
    "train" draws from the photo's top (1 - holdout_fraction), "test" from the rest, "all" from all of it.
    A mirror-tiled view has mirror lines (doubled joints, chevrons) a detector rightly finds odd: ask for a
    view that fits its part (a larger `holdout_fraction` gives the test part more rows).
    """
    photo = texture_photo(name)[:, :, 0]
    if part not in PARTS:
        raise DataError(f"texture part must be one of {', '.join(PARTS)}, got {part!r}")
    if not 0 < holdout_fraction < 1:
        raise DataError(f"texture holdout_fraction must be between 0 and 1, got {holdout_fraction!r}")
    split = int(round(photo.shape[0] * (1 - holdout_fraction)))
    if part == "train":
        photo = photo[:split]
    elif part == "test":
        photo = photo[split:]
    h, w = _size_hw(size)
    photo = np.rot90(photo, k=int(rng.integers(4)))
    if rng.random() < 0.5:
        photo = photo[:, ::-1]
    ph, pw = photo.shape
    if h > ph or w > pw:
        # Mirror padding repeats the photo reflected, so tiles meet without a seam.
        reps_h, reps_w = -(-h // ph) + 1, -(-w // pw) + 1
        photo = np.pad(photo, ((0, (reps_h - 1) * ph), (0, (reps_w - 1) * pw)), mode="symmetric")
        ph, pw = photo.shape
    y = int(rng.integers(ph - h + 1))
    x = int(rng.integers(pw - w + 1))
    return np.ascontiguousarray(photo[y : y + h, x : x + w, None], dtype=np.float32)

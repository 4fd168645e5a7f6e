"""Blob defects: Perlin-noise shapes filled with displaced material, a shape family the painter never draws.

A comparator trained only on the painter's strokes learns to find the painter's strokes. DRAEM
(Zavrtanik et al. 2021) and CutPaste (Li et al. 2021) teach "not this material" instead with irregular
regions whose content is real material in the wrong place; this module draws such regions on a tile:

- shape: gradient (Perlin) noise on a random 2-8-cell lattice per side; the blob grows from the noise's
  peak to exactly the asked number of connected pixels, highest noise first (a level set of it), edge
  softened (σ 0.5);
- fill (FILLS): `shift` — the same tile rolled by at least a quarter of its side and turned/flipped
  (the material, displaced); `swap` — another tile (another part of the image); `gain` — the material
  with its gain and offset changed (x · U[0.6, 1.4] + U[−0.2, 0.2]).

x' = (1 − β·m)·x + β·m·fill with β ∈ U[0.5, 1]. The ground truth is m ≥ 0.5 where the tile actually
changed by at least `MIN_CHANGE`: a blob that happens to copy matching material there is not a defect.
Every function takes a `numpy.random.Generator`: the same state draws the same blob.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
from scipy.ndimage import gaussian_filter

from nsgan.common.errors import DataError

FAMILY = "blob"
FILLS = ("shift", "swap", "gain")
MIN_CHANGE = 0.03  # a mask pixel must change by at least this much (of full scale)
MIN_AREA = 5
_MAX_TRIES = 12


def perlin(shape: tuple[int, int], cells: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Gradient noise (H, W) float32 on a `cells` = (rows, cols) lattice, roughly in [-1, 1]."""
    h, w = shape
    cy, cx = cells
    angles = rng.uniform(0, 2 * np.pi, size=(cy + 1, cx + 1))
    gy, gx = np.sin(angles), np.cos(angles)
    y = (np.arange(h) + 0.5) / h * cy
    x = (np.arange(w) + 0.5) / w * cx
    yi, xi = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = (y - yi)[:, None], (x - xi)[None, :]
    y0, x0 = yi[:, None], xi[None, :]

    def dot(dy, dx):
        return gy[y0 + dy, x0 + dx] * (fy - dy) + gx[y0 + dy, x0 + dx] * (fx - dx)

    def fade(t):
        return t * t * t * (t * (t * 6 - 15) + 10)

    uy, ux = fade(fy), fade(fx)
    top = dot(0, 0) * (1 - ux) + dot(0, 1) * ux
    bottom = dot(1, 0) * (1 - ux) + dot(1, 1) * ux
    return (top * (1 - uy) + bottom * uy).astype(np.float32)


def blob_shape(shape: tuple[int, int], area: int, rng: np.random.Generator) -> np.ndarray:
    """A soft blob (H, W) in [0, 1]: `area` connected pixels grown from the noise peak, σ-0.5 edge."""
    h, w = shape
    cells = (int(rng.integers(2, 9)), int(rng.integers(2, 9)))
    noise = perlin((h, w), cells, rng)
    area = int(min(max(area, 1), h * w))
    # Grow from the noise's peak, always taking the highest neighbour: exactly `area` connected pixels
    # whose outline follows the noise's level lines (a thresholded blob, never fragmented).
    hard = np.zeros((h, w), dtype=bool)
    start = np.unravel_index(int(np.argmax(noise)), (h, w))
    heap = [(-float(noise[start]), int(start[0]), int(start[1]))]
    queued = {start}
    while heap and int(hard.sum()) < area:
        _, y, x = heapq.heappop(heap)
        hard[y, x] = True
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= ny < h and 0 <= nx < w and (ny, nx) not in queued:
                queued.add((ny, nx))
                heapq.heappush(heap, (-float(noise[ny, nx]), ny, nx))
    soft = gaussian_filter(hard.astype(np.float32), 0.5, mode="constant")
    # The edge is soft, but m >= 0.5 is exactly the hard shape, so the mask follows the geometry.
    return np.where(hard, np.maximum(soft, 0.5), np.minimum(soft, 0.49)).astype(np.float32)


def _fill(tile: np.ndarray, kind: str, rng: np.random.Generator, other: np.ndarray | None) -> np.ndarray:
    """The content (C, T, T) a blob shows: the material displaced, another tile, or a gain change."""
    c, h, w = tile.shape
    if kind == "swap" and other is not None:
        return other
    if kind in ("shift", "swap"):  # swap without another tile falls back to a displaced copy
        dy = int(rng.integers(max(1, h // 4), h - max(1, h // 4) + 1))
        dx = int(rng.integers(max(1, w // 4), w - max(1, w // 4) + 1))
        out = np.roll(tile, (dy, dx), axis=(1, 2))
        k = int(rng.integers(4))
        if h == w and k:
            out = np.rot90(out, k, axes=(1, 2))
        if rng.random() < 0.5:
            out = out[:, :, ::-1]
        return np.ascontiguousarray(out)
    if kind == "gain":
        return np.clip(tile * rng.uniform(0.6, 1.4) + rng.uniform(-0.2, 0.2), 0.0, 1.0)
    raise DataError(f"blob fill must be one of {', '.join(FILLS)}, got {kind!r}")


def paint_blob(tile: np.ndarray, rng: np.random.Generator, max_area: int, fill: str = "shift",
               other: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """One blob on a (C, T, T) tile in [0, 1], its mask at most `max_area` pixels.

    Returns (tile', mask (T, T) bool, info {kind "blob", fill, area, bbox}). Redraws up to 12 times when
    fewer than MIN_AREA mask pixels change (e.g. a shifted copy of flat material); after that the fill
    becomes an offset of ±0.3 away from the local brightness, which always shows.
    """
    tile = np.asarray(tile, dtype=np.float32)
    if tile.ndim != 3:
        raise DataError(f"blob painter: expected a (C, T, T) tile, got shape {tile.shape}")
    _, h, w = tile.shape
    if max_area < MIN_AREA:
        raise DataError(f"blob painter: a {w}x{h} tile cannot hold a blob of {MIN_AREA}+ px within {max_area} px")
    for attempt in range(_MAX_TRIES + 1):
        area = int(rng.integers(MIN_AREA, max_area + 1))
        m = blob_shape((h, w), area, rng)
        if attempt < _MAX_TRIES:
            content = _fill(tile, fill, rng, other)
        else:
            local = float((tile * (m > 0)).sum() / max(1e-6, (m > 0).sum() * tile.shape[0]))
            content = np.clip(tile + (0.3 if local < 0.5 else -0.3), 0.0, 1.0)
        beta = float(rng.uniform(0.5, 1.0))
        out = ((1 - beta * m) * tile + beta * m * content).astype(np.float32)
        mask = (m >= 0.5) & (np.abs(out - tile).max(axis=0) >= MIN_CHANGE)
        if MIN_AREA <= int(mask.sum()) <= max_area:
            break
    else:
        raise DataError(f"blob painter: could not draw a visible blob on a {w}x{h} tile within {max_area} px")
    ys, xs = np.nonzero(mask)
    info = {"kind": FAMILY, "fill": fill if attempt < _MAX_TRIES else "offset", "area": int(mask.sum()),
            "bbox": (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)}
    return out, mask, info


def paint_blob_image(img: np.ndarray, rng: np.random.Generator, max_area_frac: float = 0.01,
                     fill: str | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """A blob on an (H, W, C) image (the protocols' layout), within `max_area_frac` of its pixels.

    The fill is `shift` or `gain` (drawn when None): an image has no batch to swap with.
    """
    img = np.asarray(img, dtype=np.float32)
    if fill is None:
        fill = ("shift", "gain")[int(rng.integers(2))]
    limit = max(0, math.ceil(max_area_frac * img.shape[0] * img.shape[1]) - 1)
    out, mask, info = paint_blob(np.moveaxis(img, 2, 0), rng, limit, fill)
    return np.ascontiguousarray(np.moveaxis(out, 0, 2)), mask, info

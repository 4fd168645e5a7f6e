"""Synthetic defects for training the comparator: wide variety, exact masks, quantised like the data.

The comparator must learn "not this material", not "the painter's strokes", so each painted tile gets
one family drawn at random — a painter kind (scratch, pit, crack; nsgan.data.painter) or, with
probability `blob_fraction`, a Perlin blob filled with displaced material (nsgan.data.blobs) — and
1..count defects of it, each with its own size (5 px .. the area budget), contrast (U[contrast]),
polarity (random half the time, the painter's brightness rule otherwise) and blur (one of `blur`).
The painted tile is quantised to `bit_depth` (the normal data's depth): a defect must not be findable
by its un-quantised values. The mask is the defects' geometry where the quantised tile changed.

`SyntheticDefects.apply` paints every tile it is given (the caller chooses which), deterministically
for a given generator state. Tags name the family per tile: "scratch", "pit", "crack" or
"blob:<fill>", so a held-out kind can be left out of training and its figures read apart.
"""

from __future__ import annotations

import math

import numpy as np

from nsgan.common.errors import DataError
from nsgan.data.blobs import FAMILY, FILLS, MIN_AREA, paint_blob
from nsgan.data.painter import KINDS, PAINTERS

_MAX_TRIES = 12


def _pair(value, name: str, cast=float) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    try:
        lo, hi = (cast(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"synthetic defects: {name} must be a number or a [low, high] pair, got {value!r}") from None
    if lo > hi:
        raise DataError(f"synthetic defects: {name} low must not exceed high, got {list(value)!r}")
    return lo, hi


class SyntheticDefects:
    """Paints defects of many kinds on (B, C, T, T) tiles in [0, 1]; see the module text."""

    def __init__(self, kinds=KINDS, blob: bool = True, blob_fraction: float = 0.3, count=(1, 2),
                 max_area_frac: float = 0.06, contrast=(0.05, 0.5), blur=(0.0, 0.5, 1.0), bit_depth: int = 8,
                 fills=FILLS):
        self.kinds = tuple(kinds)
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise DataError(f"synthetic defects: unknown kind(s) {unknown}; choose from {', '.join(KINDS)}")
        self.blob = bool(blob)
        if not self.kinds and not self.blob:
            raise DataError("synthetic defects: no kinds and no blob: nothing to paint")
        if not 0 <= blob_fraction <= 1:
            raise DataError(f"synthetic defects: blob_fraction must be in [0, 1], got {blob_fraction!r}")
        self.blob_fraction = float(blob_fraction) if self.kinds else 1.0
        self.count = _pair(count, "count", int)
        if self.count[0] < 1:
            raise DataError(f"synthetic defects: count must be at least 1, got {count!r}")
        if not 0 < max_area_frac < 1:
            raise DataError(f"synthetic defects: max_area_frac must be in (0, 1), got {max_area_frac!r}")
        self.max_area_frac = float(max_area_frac)
        self.contrast = _pair(contrast, "contrast")
        if not (0 < self.contrast[0] and self.contrast[1] <= 1):
            raise DataError(f"synthetic defects: contrast must lie in (0, 1], got {contrast!r}")
        self.blur = tuple(float(b) for b in (blur if not isinstance(blur, (int, float)) else (blur,)))
        if not self.blur or any(b < 0 for b in self.blur):
            raise DataError(f"synthetic defects: blur must be a non-empty list of σ >= 0, got {blur!r}")
        if bit_depth not in (0, 8, 16):
            raise DataError(f"synthetic defects: bit_depth must be 8, 16 or 0 (no quantisation), got {bit_depth!r}")
        self.bit_depth = int(bit_depth)
        self.fills = tuple(fills)
        if not self.fills or any(f not in FILLS for f in self.fills):
            raise DataError(f"synthetic defects: fills must be a subset of {', '.join(FILLS)}, got {fills!r}")

    def quantise(self, x: np.ndarray) -> np.ndarray:
        if not self.bit_depth:
            return x.astype(np.float32, copy=False)
        levels = float(2**self.bit_depth - 1)
        return (np.round(np.clip(x, 0.0, 1.0) * levels) / levels).astype(np.float32)

    def apply(self, tiles: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Paint every tile; returns (tiles' (B, C, T, T) float32, masks (B, 1, T, T) bool, tags)."""
        tiles = np.asarray(tiles, dtype=np.float32)
        if tiles.ndim != 4 or tiles.shape[1] not in (1, 3):
            raise DataError(f"synthetic defects: expected (B, C, T, T) tiles with C = 1 or 3, got {tiles.shape}")
        b, _, h, w = tiles.shape
        limit = max(0, math.ceil(self.max_area_frac * h * w) - 1)
        if limit < MIN_AREA:
            raise DataError(f"synthetic defects: a {w}x{h} tile cannot hold a {MIN_AREA}-px defect under "
                            f"max_area_frac {self.max_area_frac} ({limit} px)")
        out = np.empty_like(tiles)
        masks = np.zeros((b, 1, h, w), dtype=bool)
        tags = []
        for i in range(b):
            other = tiles[(i + 1 + int(rng.integers(b - 1))) % b] if b > 1 else None
            out[i], masks[i, 0], tag = self._paint_tile(tiles[i], rng, limit, other)
            tags.append(tag)
        return out, masks, tags

    def _family(self, rng) -> str:
        if self.blob and (not self.kinds or rng.random() < self.blob_fraction):
            return FAMILY + ":" + self.fills[int(rng.integers(len(self.fills)))]
        return self.kinds[int(rng.integers(len(self.kinds)))]

    def _paint_tile(self, tile: np.ndarray, rng, limit: int, other) -> tuple[np.ndarray, np.ndarray, str]:
        tag = self._family(rng)
        base_q = self.quantise(tile)
        cur = tile
        mask = np.zeros(tile.shape[1:], dtype=bool)
        n = int(rng.integers(self.count[0], self.count[1] + 1))
        for j in range(n):
            share = (limit - int(mask.sum())) // (n - j)
            if share < MIN_AREA:
                break
            max_area = int(rng.integers(MIN_AREA, share + 1))
            for _ in range(_MAX_TRIES):
                painted, m = self._one(cur, rng, tag, max_area, other)
                m = m & (self.quantise(painted) != self.quantise(cur)).any(axis=0)
                if m.any() and int((mask | m).sum()) <= limit:
                    cur, mask = painted, mask | m
                    break
                max_area = max(MIN_AREA, int(max_area * 0.7))
        painted_q = self.quantise(cur)
        mask &= (painted_q != base_q).any(axis=0)
        if not mask.any():
            raise DataError(f"synthetic defects: could not paint a visible {tag} on a tile within {limit} px")
        return painted_q, mask, tag

    def _one(self, tile: np.ndarray, rng, tag: str, max_area: int, other) -> tuple[np.ndarray, np.ndarray]:
        if tag.startswith(FAMILY + ":"):
            painted, m, _ = paint_blob(tile, rng, max_area, tag.split(":", 1)[1], other)
            return painted, m
        contrast = float(rng.uniform(*self.contrast))
        sign = None if rng.random() < 0.5 else (1 if rng.random() < 0.5 else -1)
        blur = self.blur[int(rng.integers(len(self.blur)))]
        img = np.ascontiguousarray(np.moveaxis(tile, 0, 2))
        painted, m, _ = PAINTERS[tag](img, rng, max_area=max_area, contrast=contrast, sign=sign, blur=blur)
        return np.ascontiguousarray(np.moveaxis(painted, 2, 0)), m

"""Cutting an image into overlapping tiles and blending per-tile maps back into one map.

Tiles sit on a regular grid with a fixed stride, so every interior pixel sees the same overlap;
the grid is extended past the image and the missing pixels are filled by reflection, which also
lets an image smaller than one tile be scored. Per-tile maps are blended with a smooth window
that keeps a floor at the tile border (so border pixels still count) and normalised by the summed
weights: a constant per-tile value gives exactly that constant, so no seam can appear.

Everything here works on one horizontal band at a time (`BandBlender`), so the full map never
needs to be in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def axis_starts(length: int, tile: int, stride: int) -> np.ndarray:
    """Tile origins along one axis: 0, stride, 2·stride, … until the tiles cover `length`."""
    if tile < 1 or stride < 1 or stride > tile:
        raise ValueError(f"need 1 <= stride <= tile (tile={tile}, stride={stride})")
    steps = max(0, math.ceil((length - tile) / stride))
    return np.arange(steps + 1, dtype=np.int64) * stride


def reflect_index(idx: np.ndarray, length: int) -> np.ndarray:
    """Map indices outside [0, length) back inside by mirror reflection (no edge repeat), any distance."""
    idx = np.asarray(idx, dtype=np.int64)
    if length == 1:
        return np.zeros_like(idx)
    period = 2 * (length - 1)
    idx = np.mod(idx, period)
    return np.where(idx < length, idx, period - idx)


def window(tile: int, floor: float = 0.1) -> np.ndarray:
    """Separable raised Hann window (tile, tile), float32, in [floor, 1], symmetric, never zero."""
    t = (np.arange(tile, dtype=np.float64) + 0.5) / tile
    w1 = floor + (1.0 - floor) * np.sin(np.pi * t) ** 2
    return np.outer(w1, w1).astype(np.float32)


@dataclass(frozen=True)
class TileGrid:
    """The tile layout of an image: tile origins along y and x, and a global index per tile.

    Tile (r, c) has global index r * n_cols + c; search seeds derive from it, so results do not
    depend on how tiles are batched or which process computes them.
    """

    height: int
    width: int
    tile: int
    stride: int

    @property
    def ys(self) -> np.ndarray:
        return axis_starts(self.height, self.tile, self.stride)

    @property
    def xs(self) -> np.ndarray:
        return axis_starts(self.width, self.tile, self.stride)

    @property
    def n_rows(self) -> int:
        return len(self.ys)

    @property
    def n_cols(self) -> int:
        return len(self.xs)

    @property
    def n_tiles(self) -> int:
        return self.n_rows * self.n_cols

    def bands(self, band_rows: int) -> list[range]:
        """Groups of `band_rows` consecutive tile rows, in order."""
        return [range(r, min(r + band_rows, self.n_rows)) for r in range(0, self.n_rows, band_rows)]

    def rows_final_after(self, tile_row: int) -> int:
        """Output rows [0, returned) are complete once tile rows 0..tile_row are blended."""
        if tile_row >= self.n_rows - 1:
            return self.height
        return min(self.height, int(self.ys[tile_row + 1]))


def cut_tiles(band: np.ndarray, band_y0: int, grid: TileGrid, tile_rows: range) -> np.ndarray:
    """Tiles (N, C, tile, tile) of `tile_rows`, from a padded band whose first row is image row band_y0."""
    t = grid.tile
    if grid.stride == t:  # tiles side by side (the default): one reshape, no per-tile loop
        y = int(grid.ys[tile_rows[0]]) - band_y0
        n, c = len(tile_rows), band.shape[2]
        block = band[y : y + n * t, : grid.n_cols * t]
        return np.ascontiguousarray(block.reshape(n, t, grid.n_cols, t, c).transpose(0, 2, 4, 1, 3)).reshape(n * grid.n_cols, c, t, t)
    out = np.empty((len(tile_rows) * grid.n_cols, band.shape[2], t, t), dtype=band.dtype)
    k = 0
    for r in tile_rows:
        y = int(grid.ys[r]) - band_y0
        for x in grid.xs:
            out[k] = band[y : y + t, x : x + t].transpose(2, 0, 1)
            k += 1
    return out


def read_padded_rows(read, height: int, width: int, y0: int, y1: int, padded_width: int) -> np.ndarray:
    """Rows [y0, y1) of the image extended by reflection to `padded_width` columns and past the bottom.

    `read(r0, r1)` returns image rows [r0, r1) as (h, width, C); only the rows needed are read.
    """
    rows = reflect_index(np.arange(y0, y1), height)
    lo, hi = int(rows.min()), int(rows.max()) + 1
    block = read(lo, hi)
    cols = reflect_index(np.arange(padded_width), width)
    if rows[0] == lo and np.array_equal(rows, np.arange(lo, hi)) and padded_width == width:
        return block
    return block[rows - lo][:, cols]


class BandBlender:
    """Accumulates window-weighted tile maps and hands back finished output rows, band by band.

    Holds only the rows still open (at most one tile's height plus one band), never the whole map.
    """

    def __init__(self, grid: TileGrid, floor: float = 0.1):
        self.grid = grid
        self.win = window(grid.tile, floor)
        self._y0 = 0  # image row of the first held row
        padded_w = int(grid.xs[-1]) + grid.tile
        self._acc = np.zeros((0, padded_w), dtype=np.float64)
        self._wsum = np.zeros((0, padded_w), dtype=np.float64)

    def _grow(self, y_end: int) -> None:
        need = y_end - self._y0 - self._acc.shape[0]
        if need > 0:
            pad = np.zeros((need, self._acc.shape[1]), dtype=np.float64)
            self._acc = np.concatenate([self._acc, pad])
            self._wsum = np.concatenate([self._wsum, pad.copy()])

    def add(self, tile_rows: range, maps: np.ndarray) -> tuple[int, np.ndarray]:
        """Blend maps (N, tile, tile) of `tile_rows` (row-major); return (first row, finished rows)."""
        g, t = self.grid, self.grid.tile
        if g.stride == t and self._acc.shape[0] == 0:  # no overlap: (m·w)/w is m exactly, so no weighting at all
            first, n = self._y0, len(tile_rows)
            done = g.rows_final_after(tile_rows[-1]) - first
            rows = maps.reshape(n, g.n_cols, t, t).transpose(0, 2, 1, 3).reshape(n * t, g.n_cols * t)
            self._y0 += done
            return first, np.array(rows[:done, : g.width], dtype=np.float32)
        self._grow(int(g.ys[tile_rows[-1]]) + t)
        k = 0
        for r in tile_rows:
            y = int(g.ys[r]) - self._y0
            for x in g.xs:
                self._acc[y : y + t, x : x + t] += maps[k] * self.win
                self._wsum[y : y + t, x : x + t] += self.win
                k += 1
        done = g.rows_final_after(tile_rows[-1]) - self._y0
        out = (self._acc[:done, : g.width] / self._wsum[:done, : g.width]).astype(np.float32)
        first = self._y0
        self._acc, self._wsum = self._acc[done:].copy(), self._wsum[done:].copy()
        self._y0 += done
        return first, out

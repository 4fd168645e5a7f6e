"""Tile grid, reflect padding and window blending: maps stitch back without seams."""

from __future__ import annotations

import numpy as np
import pytest

from nsgan.data.tiling import BandBlender, TileGrid, axis_starts, cut_tiles, read_padded_rows, reflect_index, window


def known(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (np.sin(y / 7.0) + np.cos(x / 5.0) + 0.01 * y).astype(np.float32)


def blend(grid: TileGrid, tile_map, band_rows: int) -> np.ndarray:
    """Run the band blender over the whole grid; tile_map(y, x) gives one tile's map."""
    out = np.full((grid.height, grid.width), np.nan, dtype=np.float32)
    blender = BandBlender(grid)
    expected_first = 0
    for band in grid.bands(band_rows):
        maps = np.stack([tile_map(int(grid.ys[r]), int(x)) for r in band for x in grid.xs])
        first, rows = blender.add(band, maps)
        assert first == expected_first  # rows come out in order, each exactly once
        out[first : first + rows.shape[0]] = rows
        expected_first += rows.shape[0]
    assert expected_first == grid.height
    return out


def test_axis_starts_cover_with_fixed_stride():
    assert axis_starts(10, 32, 16).tolist() == [0]  # smaller than a tile: one tile, padded
    assert axis_starts(32, 32, 16).tolist() == [0]
    assert axis_starts(33, 32, 16).tolist() == [0, 16]
    s = axis_starts(100, 32, 16)
    assert s[-1] + 32 >= 100 and np.all(np.diff(s) == 16)
    with pytest.raises(ValueError):
        axis_starts(100, 16, 32)


def test_reflect_index_matches_numpy_reflect_even_far_out():
    for n in (1, 2, 5, 9):
        a = np.arange(n)
        np.testing.assert_array_equal(a[reflect_index(np.arange(-3 * n, 4 * n), n)], np.pad(a, 3 * n, mode="reflect")[: 7 * n])


def test_window_is_smooth_symmetric_and_never_zero():
    w = window(32, floor=0.1)
    assert w.shape == (32, 32) and w.min() > 0.01 and w.max() <= 1.0
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert w[16, 16] > 0.95 and w[0, 0] < 0.02


@pytest.mark.parametrize("shape,stride,band_rows", [((77, 101), 8, 1), ((64, 64), 16, 3), ((50, 40), 5, 2)])
def test_stitching_reproduces_a_known_function(shape, stride, band_rows):
    grid = TileGrid(*shape, tile=16, stride=stride)
    yy, xx = np.mgrid[0:16, 0:16]
    out = blend(grid, lambda y, x: known(y + yy, x + xx), band_rows)
    gy, gx = np.mgrid[0 : shape[0], 0 : shape[1]]
    np.testing.assert_allclose(out, known(gy, gx), atol=1e-5)


def test_constant_tiles_give_a_seamless_constant_map():
    grid = TileGrid(90, 70, tile=16, stride=8)
    out = blend(grid, lambda y, x: np.full((16, 16), 0.25, np.float32), band_rows=2)
    assert np.abs(out - 0.25).max() < 1e-6
    assert np.abs(np.diff(out, axis=0)).max() < 1e-6 and np.abs(np.diff(out, axis=1)).max() < 1e-6


def test_image_smaller_than_a_tile_is_reflect_padded_not_refused():
    img = np.random.default_rng(0).random((5, 7, 1)).astype(np.float32)
    grid = TileGrid(5, 7, tile=16, stride=8)
    band = read_padded_rows(lambda a, b: img[a:b], 5, 7, 0, 16, 16)
    tiles = cut_tiles(band, 0, grid, range(1))
    assert tiles.shape == (1, 1, 16, 16)
    expected = img[reflect_index(np.arange(16), 5)][:, reflect_index(np.arange(16), 7), 0]
    np.testing.assert_array_equal(tiles[0, 0], expected)
    out = blend(grid, lambda y, x: np.ones((16, 16), np.float32), 1)
    assert out.shape == (5, 7) and np.allclose(out, 1.0)


@pytest.mark.parametrize("shape, band_rows", [((70, 45), 2), ((64, 64), 1), ((16, 16), 3)])
def test_stride_equal_to_tile_takes_the_fast_path_bit_for_bit(shape, band_rows):
    """At stride == tile (the default) cut_tiles is one reshape and the blender does no weighting; both give
    exactly each tile's own pixels and map (the general code's window cancels: (m·w)/w == m in float64)."""
    grid = TileGrid(*shape, tile=16, stride=16)
    rng = np.random.default_rng(0)
    image = rng.random((int(grid.ys[-1]) + 16, int(grid.xs[-1]) + 16, 2), dtype=np.float32)
    maps = rng.random((grid.n_tiles, 16, 16), dtype=np.float32)

    def run():
        tiles, rows = [], []
        blender = BandBlender(grid)
        for band in grid.bands(band_rows):
            tiles.append(cut_tiles(image, 0, grid, band))
            first, out = blender.add(band, maps[band[0] * grid.n_cols:(band[-1] + 1) * grid.n_cols])
            rows.append(out)
        return np.concatenate(tiles), np.concatenate(rows)

    fast_tiles, fast_map = run()
    ref_tiles = np.stack([image[y:y + 16, x:x + 16].transpose(2, 0, 1) for y in grid.ys for x in grid.xs])
    assert np.array_equal(fast_tiles, ref_tiles)
    assert fast_map.shape == shape
    ref_map = np.zeros(shape, np.float32)
    for k, (y, x) in enumerate((y, x) for y in grid.ys for x in grid.xs):
        h, w = min(16, shape[0] - y), min(16, shape[1] - x)
        if h > 0 and w > 0:
            ref_map[y:y + h, x:x + w] = maps[k, :h, :w]
    assert np.array_equal(fast_map, ref_map)

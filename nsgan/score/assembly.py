"""Map assembly: the tiles' maps of one image -> its blended, smoothed map, row block by row block.

`MapAssembly` blends tile rows as they come (nsgan.data.tiling.BandBlender), smooths the finished
rows (maps.StreamingGaussian, exact against a whole-map Gaussian), keeps the running map stats and the
image's tile scores, and feeds the overlay's downscaled views. `stream_rows` drives it band by band
for an image read from its source: each band's tiles are cut, run (tiles.Processes.run_band, dealt
over the processes) and assembled, so memory depends on tile, batch and band size, not on the image.
Every entry point of the Scorer (one image in memory, a group of small images, a file streamed to
disk) assembles its maps here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from nsgan.common.stopwatch import StageClock
from nsgan.data.bigimage import release_freed_memory
from nsgan.data.tiling import BandBlender, TileGrid, cut_tiles, read_padded_rows
from nsgan.score.maps import StreamingGaussian
from nsgan.score.options import ScoreOptions
from nsgan.score.reports import Downscaler
from nsgan.score.tiles import Processes, TileRunner, check_finite


# Map pixels (full resolution) averaged by the top_k_mean image score: a micro-defect in a 128-px image covers
# ~40-160 px, so 64 sit inside most defects while one false peak is 1/64 of the mean.
TOP_K = 64


class MapStats:
    """Running mean/std/max of a map (float64 sums) and its TOP_K highest values, fed row block by row block.

    The top values are kept with np.partition over [kept, block], so the result is the same however the
    map is cut into blocks; a map of fewer than `k` pixels keeps them all.
    """

    def __init__(self, k: int = TOP_K):
        self.n, self.s, self.s2, self.max = 0, 0.0, 0.0, -math.inf
        self.k = int(k)
        self.top = np.empty(0, np.float32)

    def add(self, rows: np.ndarray) -> None:
        r = rows.astype(np.float64).ravel()
        self.n += r.size
        self.s += float(r.sum())
        self.s2 += float(np.dot(r, r))
        self.max = max(self.max, float(rows.max()))
        block = rows.astype(np.float32, copy=False).ravel()
        if self.top.size == self.k:  # only values above the k-th kept one can enter (a compare, not a partition)
            block = block[block > self.top.min()]
        if block.size > self.k:
            block = np.partition(block, -self.k)[-self.k:]
        kept = np.concatenate([self.top, block])
        self.top = np.partition(kept, -self.k)[-self.k:] if kept.size > self.k else kept

    def as_dict(self) -> dict[str, float]:
        mean = self.s / self.n
        top_k_mean = float(np.sort(self.top.astype(np.float64)).mean())  # sorted: the same sum for any block order
        return {"mean": mean, "std": math.sqrt(max(0.0, self.s2 / self.n - mean * mean)), "max": self.max,
                "top_k_mean": top_k_mean}


class MapAssembly:
    """One image's map from its tile rows' maps, given top to bottom: `add` returns the finished rows.

    `views`: (image, map) Downscalers for the overlay (block mean of the image, block max of the map);
    `clock` times the "blend", "smooth" and "stats" stages.
    """

    def __init__(self, grid: TileGrid, options: ScoreOptions, views: tuple[Downscaler, Downscaler] | None = None,
                 clock: StageClock | None = None):
        self.grid, self.views = grid, views
        self.clock = clock if clock is not None else StageClock()
        self.blender = BandBlender(grid, options.window_floor)
        self.smoother = StreamingGaussian(grid.height, options.map_sigma) if options.map_sigma > 0 else None
        self.stats = MapStats()
        self.tile_scores = np.zeros((grid.n_rows, grid.n_cols), dtype=np.float32)

    def add(self, tile_rows: range, maps: np.ndarray, scores: np.ndarray, image: np.ndarray | None = None,
            image_y0: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """Blend maps (N, T, T) of `tile_rows` (row-major, scores (N,)); yield the (first row, rows) now finished.

        `image`: the band's padded image rows from row `image_y0`, for the overlay's image view.
        """
        clock, g = self.clock, self.grid
        self.tile_scores[tile_rows[0] : tile_rows[-1] + 1] = scores.reshape(len(tile_rows), g.n_cols)
        with clock("blend"):
            first, rows = self.blender.add(tile_rows, maps)
            if rows.shape[0] and self.views is not None and image is not None:
                self.views[0].add(image[first - image_y0 : first - image_y0 + rows.shape[0], : g.width])
        if not rows.shape[0]:
            return
        with clock("smooth"):  # timed also at σ = 0, so every report names the same stages
            if self.smoother is not None:
                first, rows = self.smoother.add(rows)
        if not rows.shape[0]:
            return
        with clock("stats"):
            self.stats.add(rows)
            if self.views is not None:
                self.views[1].add(rows)
        yield first, rows

    def whole(self, maps: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The (H, W) map of all the image's tiles at once (a small image scored in memory)."""
        amap = np.empty((self.grid.height, self.grid.width), np.float32)
        for first, rows in self.add(range(self.grid.n_rows), maps, scores):
            amap[first : first + rows.shape[0]] = rows
        return amap


def stream_rows(src, grid: TileGrid, runner: TileRunner, processes: Processes, assembly: MapAssembly,
                options: ScoreOptions, bar=None) -> Iterator[tuple[int, np.ndarray]]:
    """The finished map rows of image source `src`, top to bottom: its bands read, cut, run and assembled.

    Batch k of the image is run by process k % world (counted over the whole image, so a band's
    batches do not all go to rank 0); `bar` advances by every process's tiles.
    """
    clock = assembly.clock
    h, w = grid.height, grid.width
    padded_w = int(grid.xs[-1]) + grid.tile
    band_rows = max(1, math.ceil(options.batch * options.batches_per_band / grid.n_cols))
    batch_no = 0
    for band in grid.bands(band_rows):
        release_freed_memory()  # the previous band's buffers: keeps peak memory flat with height
        y0, y1 = int(grid.ys[band[0]]), int(grid.ys[band[-1]]) + grid.tile
        with clock("read"):
            img = read_padded_rows(lambda a, b: src.read(a, b), h, w, y0, y1, padded_w)
        with clock("cut"):
            tiles = cut_tiles(img, y0, grid, band)
        res, sc, here = processes.run_band(runner, tiles, band[0] * grid.n_cols, options.batch, batch_no, clock, bar)
        batch_no += math.ceil(len(tiles) / options.batch)
        check_finite(res, sc, src.name, f" (tile rows {band[0]}..{band[-1]})")
        if bar is not None:
            bar.advance(len(tiles) - here)  # the other processes' tiles
        yield from assembly.add(band, res, sc, img, y0)

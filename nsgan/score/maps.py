"""Anomaly maps: the per-tile residual the scorer blends, and the Gaussian smoothing of blended maps, row by row.

A micro-defect is a few dozen pixels of a tile of thousands, so a tile-mean loss hides it; the
common practice (anomalib and most of the literature) is to smooth the pixel map and take the
image score from the map. Maps of gigapixel images are made band by band, so the smoothing here
works on a stream of rows and gives exactly what `scipy.ndimage.gaussian_filter(map, sigma,
mode="reflect", truncate=4)` gives on the whole map.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter1d

from nsgan.score.choices import ImageScore, Residual

IMAGE_SCORES = ImageScore.values(auto=False)  # what a resolved record (ONNX metadata) may name
RESIDUALS = Residual.values(auto=False)  # what a tile's map can be; `auto` is resolved before any map is made
DETAIL_SIGMA = 1.0  # the local mean the detail residual takes out (Gaussian σ, px)
TRUNCATE = 4.0


def detail_residual(x: torch.Tensor, rec: torch.Tensor, sigma: float = DETAIL_SIGMA) -> torch.Tensor:
    """(N, T, T) map of |d − blur(d)| / 2 with d = x − rec, mean over channels (x, rec in [-1, 1]).

    A reconstruction that gets the texture roughly right but not every edge leaves broad, smooth
    residuals; a micro-defect is sharp. Taking the residual's local mean out keeps what is sharp.
    """
    d = (x - rec).float()
    n, c, h, w = d.shape
    k = torch.from_numpy(gaussian_weights(sigma)).float().to(d.device)
    r = (k.numel() - 1) // 2
    mode = "reflect" if r < min(h, w) else "replicate"
    flat = d.reshape(n * c, 1, h, w)
    b = F.conv2d(F.pad(flat, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    b = F.conv2d(F.pad(b, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1))
    return (flat - b).abs().reshape(n, c, h, w).mean(1) / 2.0


def tile_residual(x: torch.Tensor, rec: torch.Tensor | None, kind: Residual, comparator: torch.nn.Module | None = None) -> torch.Tensor:
    """The per-tile map (N, T, T) of `kind` (RESIDUALS) for tiles x and reconstructions rec in [-1, 1].

    What the scorer blends; the torch path and the ONNX export (nsgan/share/onnx_export.py) both call this.
    `comparator`: the model's C, needed for kind `comparator` (its map is a probability in [0, 1]; a C
    whose reference is not the reconstruction ignores rec, which may then be None).
    """
    if kind == Residual.COMPARATOR:
        if comparator is None:
            raise ValueError("residual 'comparator' needs the model's comparator")
        return torch.sigmoid(comparator(x.float(), rec.float() if rec is not None else None).float())[:, 0]
    if kind == Residual.PIXEL:
        return (x.float() - rec.float()).abs().mean(1) / 2.0
    if kind == Residual.DETAIL:
        return detail_residual(x, rec)
    raise ValueError(f"residual must be one of {RESIDUALS}, got {kind!r}")


def gaussian_weights(sigma: float) -> np.ndarray:
    """scipy's 1-D Gaussian kernel for `sigma` (radius int(4σ + 0.5)), normalised to sum 1."""
    radius = int(TRUNCATE * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / float(sigma)) ** 2)
    return w / w.sum()


def _reflect(idx: np.ndarray, n: int) -> np.ndarray:
    """scipy's 'reflect' boundary (d c b a | a b c d | d c b a), for any distance outside [0, n)."""
    period = 2 * n
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - 1 - idx, idx)


class StreamingGaussian:
    """Smooths a map that arrives as consecutive blocks of rows; emits finished rows in order.

    Rows are blurred along x as they come; along y a row is finished once the rows `radius` below
    it have arrived (or the image has ended). Memory: about 2·radius rows plus one block. float32
    throughout (scipy accumulates each 1-D pass in double).
    """

    def __init__(self, height: int, sigma: float):
        self.height, self.sigma = int(height), float(sigma)
        self.weights = gaussian_weights(sigma).astype(np.float64)
        self.radius = (len(self.weights) - 1) // 2
        self.buf: np.ndarray | None = None  # x-blurred rows [lo, hi)
        self.lo = self.hi = self.done = 0

    def add(self, rows: np.ndarray) -> tuple[int, np.ndarray]:
        """Feed the next rows (k, W); returns (first row, finished rows), possibly none."""
        xb = gaussian_filter1d(rows.astype(np.float32, copy=False), self.sigma, axis=1, mode="reflect", truncate=TRUNCATE)
        self.buf = xb if self.buf is None else np.concatenate([self.buf, xb])
        self.hi += rows.shape[0]
        end = self.height if self.hi >= self.height else max(self.done, self.hi - self.radius)
        return self._emit(end)

    def _emit(self, end: int) -> tuple[int, np.ndarray]:
        first = self.done
        width = self.buf.shape[1] if self.buf is not None else 0
        if end <= first:
            return first, np.empty((0, width), np.float32)
        if self.lo == 0 and self.hi >= self.height or self.height > 2 * self.radius + 1:
            # The y pass over the held rows: every finished row's window lies inside them, or reflects at a
            # real edge of the image (the held rows start at row 0 or end at the last row exactly there).
            yb = gaussian_filter1d(self.buf, self.sigma, axis=0, mode="reflect", truncate=TRUNCATE)
            out = yb[first - self.lo:end - self.lo]
        else:  # a map shorter than the kernel, not all arrived yet: reflect by index, several times over
            out = np.zeros((end - first, width), np.float64)
            centre = np.arange(first, end)
            for k, w in enumerate(self.weights):
                out += w * self.buf[_reflect(centre + k - self.radius, self.height) - self.lo]
        self.done = end
        # Rows still needed: from done − radius on (one reflection reaches no further when the map is
        # taller than the kernel); a shorter map reflects several times, so keep all of it.
        keep_from = self.lo
        if self.height > 2 * self.radius + 1 and self.done < self.height:
            keep_from = max(self.lo, self.done - self.radius)
        self.buf = self.buf[keep_from - self.lo:]
        self.lo = keep_from
        return first, np.array(out, dtype=np.float32)


def smooth_stream(blocks, height: int, sigma: float):
    """(first row, rows) blocks in order -> the same map smoothed, as (first row, rows) blocks."""
    if sigma <= 0:
        yield from blocks
        return
    sm = StreamingGaussian(height, sigma)
    for _, rows in blocks:
        first, out = sm.add(rows)
        if out.shape[0]:
            yield first, out

"""What a user looks at: anomalous regions, a downscaled heat overlay PNG, and the JSON report.

Regions are found by streaming connected components over the map, band by band, with labels
joined across band borders, so they are exact at full resolution even for a gigapixel map that
never fits in memory. The overlay is built from a block-reduced copy of image and map (mean of
the image, max of the map, so a one-pixel defect stays visible after downscaling).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nsgan.common.atomic import atomic_write, atomic_write_json


@dataclass
class Region:
    """A connected area of the map above the pixel threshold (8-connectivity), in full-image pixels."""

    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1; end exclusive
    area: int  # pixels above threshold
    peak: float  # highest map value inside
    peak_xy: tuple[int, int]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bbox"], d["peak_xy"] = list(self.bbox), list(self.peak_xy)
        return d


class _UnionFind:
    def __init__(self):
        self.parent: list[int] = []

    def add(self, n: int) -> None:
        self.parent.extend(range(len(self.parent), len(self.parent) + n))

    def find(self, a: int) -> int:
        p = self.parent
        while p[a] != a:
            p[a] = p[p[a]]
            a = p[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def find_regions(blocks: Iterable[tuple[int, np.ndarray]], threshold: float, min_area: int = 1) -> list[Region]:
    """Regions of `map > threshold` from (first row, rows) blocks given top to bottom; sorted by peak, highest first."""
    from scipy import ndimage

    uf = _UnionFind()
    stats: list[list] = []  # per global label: area, x0, y0, x1, y1, peak, px, py
    prev_last: np.ndarray | None = None
    eight = np.ones((3, 3), dtype=bool)
    for y0, rows in blocks:
        lab, n = ndimage.label(rows > threshold, structure=eight)
        base = len(stats)

        def glob(row: np.ndarray) -> np.ndarray:  # local labels -> global ids (-1: background)
            return np.where(row > 0, row.astype(np.int64) + base - 1, -1)

        if n:
            uf.add(n)
            ids = np.arange(1, n + 1)
            area = np.bincount(lab.ravel(), minlength=n + 1)[1:]
            peaks = ndimage.maximum(rows, lab, ids)
            ppos = ndimage.maximum_position(rows, lab, ids)
            for k, sl in enumerate(ndimage.find_objects(lab)):
                stats.append([int(area[k]), sl[1].start, y0 + sl[0].start, sl[1].stop, y0 + sl[0].stop,
                              float(peaks[k]), int(ppos[k][1]), y0 + int(ppos[k][0])])
        if prev_last is not None and rows.shape[0]:
            first, w = glob(lab[0]), rows.shape[1]
            for d in (-1, 0, 1):  # 8-connectivity across the band border
                a = prev_last[max(0, d) : w + min(0, d)]
                b = first[max(0, -d) : w + min(0, -d)]
                for i, j in {(int(i), int(j)) for i, j in zip(a, b) if i >= 0 and j >= 0}:
                    uf.union(i, j)
        if rows.shape[0]:
            prev_last = glob(lab[-1])

    merged: dict[int, list] = {}
    for g, s in enumerate(stats):
        root = uf.find(g)
        m = merged.get(root)
        if m is None:
            merged[root] = list(s)
            continue
        m[0] += s[0]
        m[1], m[2], m[3], m[4] = min(m[1], s[1]), min(m[2], s[2]), max(m[3], s[3]), max(m[4], s[4])
        if s[5] > m[5]:
            m[5], m[6], m[7] = s[5], s[6], s[7]
    regions = [Region((m[1], m[2], m[3], m[4]), m[0], m[5], (m[6], m[7])) for m in merged.values() if m[0] >= min_area]
    return sorted(regions, key=lambda r: (-r.peak, -r.area))


class Downscaler:
    """Block-reduces a stream of row blocks by an integer factor (mean or max), keeping only a few rows."""

    def __init__(self, width: int, factor: int, reduce: str = "mean"):
        self.width, self.factor, self.reduce = width, factor, reduce
        self._carry: np.ndarray | None = None
        self._out: list[np.ndarray] = []

    def _reduce(self, rows: np.ndarray) -> np.ndarray:
        f = self.factor
        h, w = rows.shape[:2]
        wp = math.ceil(w / f) * f
        if wp != w:
            rows = np.concatenate([rows, np.repeat(rows[:, -1:], wp - w, axis=1)], axis=1)
        blocks = rows.reshape(h, wp // f, f, *rows.shape[2:])
        blocks = blocks.max(axis=(0, 2)) if self.reduce == "max" else blocks.mean(axis=(0, 2))
        return blocks[None].astype(np.float32)

    def add(self, rows: np.ndarray) -> None:
        rows = rows if self._carry is None else np.concatenate([self._carry, rows])
        f = self.factor
        full = (rows.shape[0] // f) * f
        for y in range(0, full, f):
            self._out.append(self._reduce(rows[y : y + f]))
        self._carry = rows[full:] if full < rows.shape[0] else None

    def result(self) -> np.ndarray:
        out = list(self._out)
        if self._carry is not None and self._carry.shape[0]:
            out.append(self._reduce(self._carry))
        return np.concatenate(out)


def overlay_factor(height: int, width: int, max_side: int) -> int:
    return max(1, math.ceil(max(height, width) / max_side))


OVERLAY_MIN_SIDE = 512


def render_overlay(image: np.ndarray, amap: np.ndarray, regions: list[Region], factor: int, threshold: float) -> np.ndarray:
    """uint8 RGB: the downscaled image in gray/colour, heat colours where the map is high, regions boxed."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw
    from skimage.segmentation import find_boundaries

    vmax = 2.0 * threshold if threshold > 0 else float(amap.max() or 1.0)
    level = (np.clip(amap / vmax, 0.0, 1.0) * 255).astype(np.uint8)
    lut = colormaps["inferno"](np.linspace(0.0, 1.0, 256))[:, :3].astype(np.float32)
    alpha = (np.linspace(0.0, 0.65, 256, dtype=np.float32))[level][..., None]
    rgb = (1 - alpha) * image + alpha * lut[level]  # gray images broadcast to RGB here
    del alpha
    rgb[find_boundaries(amap > threshold, mode="inner")] = (0.0, 1.0, 1.0)
    im = Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))
    zoom = max(1, OVERLAY_MIN_SIDE // max(im.size))  # small images are enlarged so a person can see the defect
    if zoom > 1:
        im = im.resize((im.width * zoom, im.height * zoom), Image.NEAREST)
    draw = ImageDraw.Draw(im)
    for rank, r in enumerate(regions[:20], start=1):
        x0, y0, x1, y1 = r.bbox
        box = tuple(v * zoom for v in (x0 // factor - 1, y0 // factor - 1, (x1 - 1) // factor + 1, (y1 - 1) // factor + 1))
        draw.rectangle(box, outline=(0, 255, 0))
        draw.text((box[0], max(0, box[1] - 11)), str(rank), fill=(0, 255, 0))
    return np.asarray(im)


def write_overlay(path: str | Path, rgb: np.ndarray) -> None:
    from PIL import Image

    atomic_write(Path(path), lambda p: Image.fromarray(rgb).save(p, format="PNG"))


def write_json(path: str | Path, data: dict) -> None:
    atomic_write_json(Path(path), data)

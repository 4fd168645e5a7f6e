"""Anomalous regions: connected areas of the map above the pixel threshold, found exactly at full resolution.

Connected components are labelled band by band, with labels joined across band borders, so the
regions of a gigapixel map that never fits in memory are the same as those of the whole map.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

EIGHT = np.ones((3, 3), dtype=bool)  # regions are 8-connected


def drawn_labels(amap: np.ndarray, threshold: float, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels of `amap > threshold`, the label ids of the regions scoring draws: area ≥ `min_area`), for a map held
    whole in memory; the same regions find_regions finds, with their pixels (calibration counts, defect matching)."""
    labels, n = ndimage.label(amap > threshold, structure=EIGHT)
    kept = np.flatnonzero(np.bincount(labels.ravel(), minlength=n + 1) >= min_area)
    return labels, kept[kept > 0]  # label 0 is the background


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
    uf = _UnionFind()
    stats: list[list] = []  # per global label: area, x0, y0, x1, y1, peak, px, py
    prev_last: np.ndarray | None = None
    for y0, rows in blocks:
        lab, n = ndimage.label(rows > threshold, structure=EIGHT)
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

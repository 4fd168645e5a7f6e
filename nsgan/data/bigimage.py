"""Images too big for memory: lazy region reads of (Big)TIFF and band-by-band BigTIFF map writing.

A TIFF is read segment by segment (its tiles or strips) through tifffile's own decoder, so only
the segments that touch the requested rows are ever in memory. PNG and JPEG cannot be read by
regions and are small in practice: they are read whole. The anomaly map is written as a tiled
float32 BigTIFF from an iterator of finished row blocks, so it never exists in memory whole.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import tifffile

from nsgan.common.atomic import atomic_write
from nsgan.common.errors import DataError
from nsgan.data.imageio import read_image, to_unit_float

TIFF_SUFFIXES = (".tif", ".tiff")


class ArraySource:
    """An image already in memory, (H, W, C) float32 in [0, 1], behind the region-reading interface."""

    def __init__(self, array: np.ndarray, name: str = "<array>"):
        self.array = to_unit_float(np.asarray(array), name)
        self.name = name

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape[:2]

    @property
    def channels(self) -> int:
        return self.array.shape[2]

    def read(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
        return self.array[y0:y1, x0:x1]

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TiffSource:
    """The first (full-resolution) page of a TIFF, read lazily by rectangular regions."""

    def __init__(self, path: str | Path):
        self.name = str(path)
        try:
            self._tif = tifffile.TiffFile(path)
            page = self._tif.pages.first
            page.decode  # resolves the decoder; raises for unsupported compressions or dtypes
        except Exception as exc:
            raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
        self._page = page
        if page.imagedepth != 1:
            self.close()
            raise DataError(f"{path}: volumetric TIFF is not supported (depth {page.imagedepth})")
        spp = page.samplesperpixel
        if spp not in (1, 3, 4):
            self.close()
            raise DataError(f"{path}: unsupported channel count {spp} (expected 1 or 3)")
        if page.dtype not in (np.uint8, np.uint16, np.float32, np.float64) or page.bitspersample not in (8, 16, 32, 64):
            self.close()
            raise DataError(
                f"{path}: unsupported pixel type {page.dtype} at {page.bitspersample} bit (expected 8 or 16 bit, or float)"
            )
        self._spp = spp
        self._h, self._w = int(page.imagelength), int(page.imagewidth)
        if page.is_tiled:
            self._seg_h, self._seg_w = int(page.tilelength), int(page.tilewidth)
        else:
            self._seg_h, self._seg_w = int(page.rowsperstrip or self._h), self._w
        self._seg_h = min(self._seg_h, self._h) if not page.is_tiled else self._seg_h
        self._per_row = math.ceil(self._w / self._seg_w)
        self._per_plane = math.ceil(self._h / self._seg_h) * self._per_row
        self._planes = spp if page.planarconfig == 2 else 1
        jt = page.tags.get("JPEGTables")
        self._jpegtables = jt.value if jt is not None else None

    @property
    def shape(self) -> tuple[int, int]:
        return self._h, self._w

    @property
    def channels(self) -> int:
        return 3 if self._spp == 4 else self._spp

    def read(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
        """Pixels [y0:y1, x0:x1] as float32 (h, w, C) in [0, 1], decoding only the segments that overlap."""
        raw = self.read_stored(y0, y1, x0, x1)
        if raw.dtype == np.float64:
            raw = raw.astype(np.float32)
        return to_unit_float(raw, self.name)

    def read_stored(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
        """Pixels [y0:y1, x0:x1] as stored (h, w, samples), without conversion."""
        x1 = self._w if x1 is None else x1
        page = self._page
        raw = np.zeros((y1 - y0, x1 - x0, self._spp), dtype=page.dtype)
        fh = self._tif.filehandle
        try:
            for plane in range(self._planes):
                for i in range(y0 // self._seg_h, (y1 - 1) // self._seg_h + 1):
                    for j in range(x0 // self._seg_w, (x1 - 1) // self._seg_w + 1):
                        index = plane * self._per_plane + i * self._per_row + j
                        offset, count = page.dataoffsets[index], page.databytecounts[index]
                        data = None
                        if count:
                            fh.seek(offset)
                            data = fh.read(count)
                        seg, (s, _, sy, sx, _), shape = page.decode(data, index, jpegtables=self._jpegtables)
                        if seg is None:
                            continue  # sparse segment: zeros
                        seg = np.asarray(seg).reshape(shape)[0]
                        ya, yb = max(y0, sy), min(y1, sy + shape[1], self._h)
                        xa, xb = max(x0, sx), min(x1, sx + shape[2], self._w)
                        if ya >= yb or xa >= xb:
                            continue
                        block = seg[ya - sy : yb - sy, xa - sx : xb - sx]
                        if self._planes > 1:
                            raw[ya - y0 : yb - y0, xa - x0 : xb - x0, s] = block[..., 0]
                        else:
                            raw[ya - y0 : yb - y0, xa - x0 : xb - x0] = block
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{self.name}: cannot read image rows {y0}..{y1} ({type(exc).__name__}: {exc})") from None
        return raw

    def close(self) -> None:
        self._tif.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _load_malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): nothing to do
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_freed_memory() -> None:
    """Hand memory freed by the last band back to the OS (glibc's malloc_trim).

    Without it, glibc raises its mmap threshold after the first large frees and later band buffers
    land on the heap, where they fragment: peak RSS then crept up with the image's height,
    by a varying amount from run to run (74-204 MiB over an 8192² image). Once per band it costs
    far less than the band's search.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def open_image(path: str | Path) -> ArraySource | TiffSource:
    """A region reader for `path`: lazy for TIFF, whole-file for PNG/JPEG; DataError names the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    if path.suffix.lower() in TIFF_SUFFIXES:
        return TiffSource(path)
    return ArraySource(read_image(path), str(path))


def _tiles_of(row_blocks: Iterable[np.ndarray], width: int, tile: int) -> Iterator[np.ndarray]:
    """Re-cut a stream of (h, width) row blocks into (tile, tile) tiles in row-major order."""
    pending: list[np.ndarray] = []
    held = 0

    def flush(rows: np.ndarray) -> Iterator[np.ndarray]:
        for x in range(0, width, tile):
            t = np.zeros((tile, tile), dtype=np.float32)
            part = rows[:, x : x + tile]
            t[: part.shape[0], : part.shape[1]] = part
            yield t

    for block in row_blocks:
        pending.append(block)
        held += block.shape[0]
        while held >= tile:
            rows = np.concatenate(pending)
            yield from flush(rows[:tile])
            rest = rows[tile:]
            pending, held = ([rest] if rest.shape[0] else []), rest.shape[0]
    if held:
        yield from flush(np.concatenate(pending))


def map_tile_size(height: int, width: int, preferred: int = 256) -> int:
    """TIFF tiles must be multiples of 16; small maps get small tiles."""
    return max(16, min(preferred, 16 * math.ceil(max(height, width) / 16)))


def write_map(path: str | Path, height: int, width: int, row_blocks: Iterable[np.ndarray], tile: int | None = None) -> Path:
    """Write a float32 map as a tiled BigTIFF from row blocks given top to bottom; atomic.

    The blocks are consumed lazily while writing, so memory holds one row of TIFF tiles at most.
    """
    path = Path(path)
    tile = tile or map_tile_size(height, width)

    def write(tmp: Path) -> None:
        with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
            tif.write(
                _tiles_of(row_blocks, width, tile),
                shape=(height, width),
                dtype=np.float32,
                tile=(tile, tile),
                photometric="minisblack",
                compression="zlib",
                compressionargs={"level": 1},  # fast; near-zero maps still shrink a lot
                metadata=None,
            )

    return atomic_write(path, write)


def read_map_rows(path: str | Path, band: int = 256) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) blocks of a float32 map BigTIFF, top to bottom, `band` rows at a time."""
    src = TiffSource(path)
    try:
        h = src.shape[0]
        for y in range(0, h, band):
            yield y, src.read_stored(y, min(h, y + band))[:, :, 0].astype(np.float32, copy=False)
    finally:
        src.close()

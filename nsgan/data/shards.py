"""Cut folders of images into tiles and write them as WebDataset shards (`nsgan shards`).

Layout of OUT (written to a temp folder beside OUT and renamed at the end, so a crash never leaves
a half-written shard set):

    OUT/manifest.json                 counts, options, shard lists, skipped and padded files
    OUT/normal/normal-000000.tar ...  normal tiles (incl. tiles of defective images off the mask)
    OUT/abnormal/abnormal-000000.tar  abnormal tiles

Each sample is `KEY.json` plus the tile: `KEY.png` (8-bit gray/RGB, or 16-bit gray) or, for 16-bit
RGB, `KEY.tiff` (zlib-compressed, lossless; Pillow cannot write 48-bit PNG). Tiles keep the
source's bit depth. An abnormal tile cut from an image with a mask also carries `KEY.mask.png`
(8-bit, 255 = defect), so a patch-level penalty can act where the defect is. Images smaller than the tile are reflect-padded to the tile (listed in the
manifest under "padded"); the grid's last row/column is aligned to the image edge so every pixel
lies in some tile (those edge tiles may overlap their neighbour).
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from scipy import ndimage

from nsgan import __version__
from nsgan.common.atomic import atomic_write_json, fsync_dir, fsync_file
from nsgan.common.errors import printable, DataError, NsganError, OutputError
from nsgan.data.imageio import (
    MASK_SUFFIX,
    PIL_GRAY_MODES,
    list_images,
    read_image,
    read_raw,
    to_channels,
    to_unit_float,
)

Manifest = dict[str, Any]

MANIFEST_NAME = "manifest.json"
SETS = ("normal", "abnormal")
_GRAY_MODES = PIL_GRAY_MODES


# ------------------------------------------------------------------------------------ library


@dataclass(frozen=True)
class ShardSpec:
    """What `write_shards` cuts, checked once when made (a bad value raises NsganError naming its flag).

    `normal_dir` (and `abnormal_dir`, with masks from `abnormal_masks_dir` matched by relative path)
    are tiled into `tile`-px tiles at `stride` (default: the tile) or as `random_crops` random crops
    per image; `channels` None keeps gray when every input is gray.

    `abnormal_centred` K > 0 (needs masks): an abnormal image with a mask gives K tiles per mask
    component, centred on it with up to `centre_jitter` px of seeded shift (default tile // 8), in
    place of the grid tiles that touch the mask; its grid tiles off the mask still go to normal.

    `abnormal_list`: a text file naming images under `normal_dir` (one relative path a line, as
    `nsgan audit` writes suspects.txt; blank lines and `#` comments skipped) that go to the abnormal set
    instead, with masks from `abnormal_list_masks` (same relative paths) where one exists there.
    """

    normal_dir: Path
    out: Path = Path("shards")
    tile: int = 64
    abnormal_dir: Path | None = None
    abnormal_masks_dir: Path | None = None
    stride: int | None = None
    random_crops: int = 0
    channels: int | None = None
    shard_size: int = 1000
    seed: int = 0
    abnormal_centred: int = 0
    centre_jitter: int | None = None
    abnormal_list: Path | None = None
    abnormal_list_masks: Path | None = None

    def __post_init__(self):
        for name in ("normal_dir", "out", "abnormal_dir", "abnormal_masks_dir", "abnormal_list", "abnormal_list_masks"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        _check_options(self.tile, self.stride, self.random_crops, self.channels, self.shard_size, self.abnormal_dir,
                       self.abnormal_masks_dir)
        _check_centred(self.abnormal_centred, self.centre_jitter, self.abnormal_masks_dir)
        if self.abnormal_list_masks is not None and self.abnormal_list is None:
            raise NsganError("--abnormal-list-masks needs --abnormal-list")

    @property
    def grid_stride(self) -> int:
        return self.tile if self.stride is None else self.stride

    @property
    def jitter(self) -> int:
        return self.tile // 8 if self.centre_jitter is None else self.centre_jitter


def write_shards(spec: ShardSpec | str | Path, abnormal_dir: str | Path | None = None,
                 abnormal_masks_dir: str | Path | None = None, *, overwrite: bool = False, progress: bool = False,
                 **options: Any) -> Manifest:
    """Tile the images `spec` names into shard sets under `spec.out`; return the manifest.

    `spec` is a ShardSpec, or (the keyword form) the normal folder, with the abnormal folder, its masks
    and ShardSpec's other fields (`tile=`, `out=`, ...) as arguments. `overwrite` replaces an existing
    shard set in `out`; `progress` shows a bar.

    Raises NsganError for bad options, DataError when no normal tile comes out of `normal_dir`, and
    OutputError when `out` already holds shards (unless `overwrite`) or is someone else's folder.
    """
    if not isinstance(spec, ShardSpec):
        spec = ShardSpec(spec, abnormal_dir=abnormal_dir, abnormal_masks_dir=abnormal_masks_dir, **options)
    elif abnormal_dir is not None or abnormal_masks_dir is not None or options:
        raise TypeError("write_shards(ShardSpec): give every option in the ShardSpec")
    _check_output(spec.out, overwrite)
    inputs, masks, listed, list_masks = _inputs(spec)
    channels = spec.channels
    if channels is None:
        channels = _decide_channels([p for _, files in inputs.values() for p in files] + listed)

    out = spec.out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_temps(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"{out}: cannot create output folder ({exc.strerror})") from None
    writers = {name: _SetWriter(tmp / name, name, spec.shard_size) for name in SETS}
    try:
        report = _cut_all(spec, channels, inputs, masks, listed, list_masks, writers, progress)
        manifest = _manifest(inputs, masks, spec.tile, spec.grid_stride, spec.random_crops, channels, spec.shard_size,
                             spec.seed, writers, report)
        manifest.update(abnormal_centred=spec.abnormal_centred, centre_jitter=spec.jitter if spec.abnormal_centred else None)
        if spec.abnormal_list is not None:
            manifest["inputs"].update(abnormal_list=str(spec.abnormal_list), abnormal_list_masks=None
                                      if spec.abnormal_list_masks is None else str(spec.abnormal_list_masks),
                                      abnormal_listed=len(listed))
            manifest["counts"]["images_found"] += len(listed)
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
        _replace_folder(tmp, out)
    except BaseException:
        for w in writers.values():
            w.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _inputs(spec: ShardSpec):
    """The image lists per set, the mask index, the listed images moved from normal to abnormal and their masks."""
    inputs = {"normal": (spec.normal_dir, list_images(spec.normal_dir))}
    if spec.abnormal_dir is not None:
        inputs["abnormal"] = (spec.abnormal_dir, list_images(spec.abnormal_dir))
    masks = _MaskIndex(spec.abnormal_masks_dir) if spec.abnormal_masks_dir is not None else None
    listed: list[Path] = []
    list_masks = None
    if spec.abnormal_list is not None:
        listed = read_image_list(spec.abnormal_list, spec.normal_dir, inputs["normal"][1])
        chosen = set(listed)
        inputs["normal"] = (spec.normal_dir, [p for p in inputs["normal"][1] if p not in chosen])
        folder = spec.abnormal_list_masks
        if folder is not None:
            if not folder.is_dir():
                raise DataError(f"{folder}: not a folder")
            list_masks = _MaskIndex(folder)
    return inputs, masks, listed, list_masks


def _cut_all(spec: ShardSpec, channels: int, inputs, masks, listed, list_masks, writers, progress: bool) -> "_Report":
    """Cut every image into the writers, in a seeded shuffled order; DataError when no normal tile came out."""
    cutter = _Cutter(spec.tile, spec.grid_stride, spec.random_crops, channels, spec.seed, spec.abnormal_centred, spec.jitter)
    report = _Report()
    jobs = [(name, root, path, masks if name == "abnormal" else None)
            for name, (root, files) in inputs.items() for path in files]
    jobs += [("abnormal", spec.normal_dir, path, list_masks) for path in listed]
    random.Random(spec.seed).shuffle(jobs)  # mixes images (and subfolders) across shards
    with _progress_bar(progress, len(jobs)) as advance:
        for name, root, path, job_masks in jobs:
            _cut_one(name, root, path, cutter, job_masks, writers, report)
            advance()
    for w in writers.values():
        w.close()
    if report.tiles_from_normal_dir == 0:
        first = next((f"; first skipped: {s['path']}: {s['reason']}" for s in report.skipped if s["input"] == "normal"), "")
        raise DataError(
            f"no normal tiles written from {spec.normal_dir} ({len(inputs['normal'][1])} image files found, "
            f"{report.skipped_in('normal')} skipped{first}); --normal needs readable 8/16-bit gray or RGB images"
        )
    return report


def read_image_list(list_file: str | Path, root: Path, images: list[Path]) -> list[Path]:
    """The images of `images` (under `root`) that `list_file` names, one relative path a line (an
    absolute path inside root also counts); DataError naming the file and line for a name not there."""
    list_file = Path(list_file)
    try:
        lines = list_file.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except OSError as exc:
        raise DataError(f"{list_file}: cannot read the image list ({exc.strerror or exc})") from None
    by_rel = {p.relative_to(root).as_posix(): p for p in images}
    root_abs = root.resolve()
    chosen: dict[Path, None] = {}
    for k, line in enumerate(lines, start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        candidate = Path(name)
        if candidate.is_absolute():
            try:
                name = candidate.resolve().relative_to(root_abs).as_posix()
            except ValueError:
                raise DataError(f"{list_file}:{k}: {printable(line.strip())} is not under {root}") from None
        path = by_rel.get(Path(name).as_posix())
        if path is None:
            raise DataError(f"{list_file}:{k}: {printable(line.strip())} is not an image of {root}")
        chosen[path] = None
    if not chosen:
        raise DataError(f"{list_file}: names no image")
    return list(chosen)


# --------------------------------------------------------------------------------- checks


def _check_options(tile, stride, random_crops, channels, shard_size, abnormal_dir, masks_dir) -> None:
    for name, value, minimum in (("--tile", tile, 1), ("--shard-size", shard_size, 1), ("--random-crops", random_crops, 0)):
        if not isinstance(value, int) or value < minimum:
            raise NsganError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if stride is not None and (not isinstance(stride, int) or stride < 1):
        raise NsganError(f"--stride must be an integer >= 1, got {stride!r}")
    if channels not in (None, 1, 3):
        raise NsganError(f"--channels must be 1 or 3, got {channels!r}")
    if masks_dir is not None and abnormal_dir is None:
        raise NsganError("--abnormal-masks needs --abnormal")
    if masks_dir is not None and not Path(masks_dir).is_dir():
        raise DataError(f"{masks_dir}: not a folder")


def _check_centred(centred, jitter, masks_dir) -> None:
    for name, value in (("--abnormal-centred", centred), ("--centre-jitter", 0 if jitter is None else jitter)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise NsganError(f"{name} must be an integer >= 0, got {value!r}")
    if centred and masks_dir is None:
        raise NsganError("--abnormal-centred needs --abnormal-masks (tiles are centred on the mask's components)")


def _looks_like_shard_set(out: Path) -> bool:
    if (out / MANIFEST_NAME).exists():
        return True
    return any(any((out / name).glob("*.tar")) for name in SETS if (out / name).is_dir())


def _check_output(out: Path, overwrite: bool) -> None:
    """Refuse to touch an existing shard set without --overwrite, and any foreign folder at all."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    if _looks_like_shard_set(out):
        if not overwrite:
            raise OutputError(f"{out}: already holds a shard set (use --overwrite to replace it)")
        return
    if any(out.iterdir()):
        raise OutputError(f"{out}: exists, is not empty and is not an nsgan shard folder; choose another --out")


def _remove_dead_temps(out: Path) -> None:
    """Temp folders beside OUT left by a run that was killed (its pid no longer exists)."""
    for folder in out.parent.glob(f".{out.name}.tmp-*-*"):
        try:
            pid = int(folder.name[len(f".{out.name}.tmp-"):].split("-")[0])
            os.kill(pid, 0)
        except ValueError:
            continue  # not one of ours
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            continue  # alive, someone else's


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished shard set into place; an old set is renamed away first, then deleted."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "set")
    os.replace(tmp, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------ channels


def _probe_channels(path: Path) -> int:
    """Channel count nsgan.data.imageio would return for `path`, from the header when possible."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tf:
                shape = tf.series[0].shape
            if len(shape) == 2:
                return 1
            if len(shape) == 3:
                c = shape[0] if shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4) else shape[2]
                return 1 if c == 1 else 3
        else:
            with Image.open(path) as im:
                return 1 if im.mode in _GRAY_MODES else 3
    except Exception:
        pass
    try:
        return read_image(path).shape[2]
    except DataError:
        return 1  # unreadable: it will be skipped later and must not force RGB


def _decide_channels(paths: list[Path]) -> int:
    """1 if every input is gray, else 3 (gray images are then replicated to RGB)."""
    return 1 if all(_probe_channels(p) == 1 for p in paths) else 3


# ------------------------------------------------------------------------------------ masks


class _MaskIndex:
    """Finds the mask of an abnormal image: same relative path, or `<stem>_mask`, any image suffix."""

    def __init__(self, root: Path):
        self.root = root
        self.by_key: dict[str, list[Path]] = {}
        for p in list_images(root):
            rel = p.relative_to(root).with_suffix("")
            key = rel.as_posix()
            if key.endswith(MASK_SUFFIX):
                key = key[: -len(MASK_SUFFIX)]
            self.by_key.setdefault(key, []).append(p)
        self.used = 0
        self.missing: list[str] = []

    def find(self, rel: Path) -> Path | None:
        candidates = self.by_key.get(rel.with_suffix("").as_posix())
        if not candidates:
            self.missing.append(rel.as_posix())
            return None
        self.used += 1
        return sorted(candidates)[0]


# ---------------------------------------------------------------------------------- cutting


class _Cutter:
    """Tile positions and tile encoding for one set of options."""

    def __init__(self, tile: int, stride: int, random_crops: int, channels: int, seed: int, centred: int = 0, jitter: int = 0):
        self.tile, self.stride, self.random_crops, self.channels, self.seed = tile, stride, random_crops, channels, seed
        self.centred, self.jitter = centred, jitter

    def centred_positions(self, mask: np.ndarray, rel: str) -> list[tuple[int, int]]:
        """`centred` tile corners per 8-connected mask component, seeded by (seed, image).

        Each corner puts the component's box centre at the tile centre, shifted by up to `jitter` px
        per axis but never so far that a component which fits in a tile leaves it.
        """
        labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
        rng = np.random.default_rng([self.seed, zlib.crc32(rel.encode()), 1])
        t, (h, w) = self.tile, mask.shape
        out = []
        for box in ndimage.find_objects(labels)[:n]:
            for _ in range(self.centred):
                corner = []
                for sl, size in zip(box, (h, w)):
                    lo, hi = max(0, sl.stop - t), min(size - t, sl.start)  # corners that keep the component inside
                    if lo > hi:  # larger than a tile: centre it as well as the image allows
                        lo, hi = 0, size - t
                    centre = (sl.start + sl.stop - t) // 2 + int(rng.integers(-self.jitter, self.jitter + 1))
                    corner.append(int(min(max(centre, lo), hi)))
                out.append((corner[0], corner[1]))
        return out

    def positions(self, h: int, w: int, rel: str) -> list[tuple[int, int]]:
        t = self.tile
        if self.random_crops:
            rng = np.random.default_rng([self.seed, zlib.crc32(rel.encode())])
            ys = rng.integers(0, h - t + 1, self.random_crops)
            xs = rng.integers(0, w - t + 1, self.random_crops)
            return [(int(y), int(x)) for y, x in zip(ys, xs)]
        return [(y, x) for y in _starts(h, t, self.stride) for x in _starts(w, t, self.stride)]

    def encode(self, crop: np.ndarray, bit_depth: int, source: Path) -> tuple[str, bytes]:
        """Tile (H, W, C_src) as stored → (extension, bytes) in `channels` at the source bit depth."""
        dtype = np.uint8 if bit_depth == 8 else np.uint16
        if crop.dtype == dtype and crop.shape[2] in (1, 3, 4) and min(crop.shape[2], 3) == self.channels:
            arr = crop[:, :, : self.channels]
        else:
            unit = to_channels(to_unit_float(crop, source), self.channels, source)
            arr = np.round(unit * float(np.iinfo(dtype).max)).astype(dtype)
        return _encode_tile(np.ascontiguousarray(arr))


def _starts(n: int, tile: int, stride: int) -> list[int]:
    """Grid starts along one axis; the last one is aligned to the edge so no pixel is left out."""
    starts = list(range(0, n - tile + 1, stride))
    if starts[-1] != n - tile:
        starts.append(n - tile)
    return starts


def _encode_tile(arr: np.ndarray) -> tuple[str, bytes]:
    buf = io.BytesIO()
    if arr.dtype == np.uint16 and arr.shape[2] == 3:
        tifffile.imwrite(buf, arr, photometric="rgb", compression="zlib")
        return "tiff", buf.getvalue()

    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(buf, format="PNG")
    return "png", buf.getvalue()


def _as_hwc(raw: np.ndarray) -> np.ndarray:
    return raw[:, :, None] if raw.ndim == 2 else raw


def _pad_to(arr: np.ndarray, tile: int) -> np.ndarray:
    h, w = arr.shape[:2]
    pad = [(0, max(0, tile - h)), (0, max(0, tile - w))] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, pad, mode="reflect")


def _read_mask(mask_path: Path, shape: tuple[int, int]) -> np.ndarray:
    m = _as_hwc(read_raw(mask_path))
    if m.shape[2] in (2, 4):
        m = m[:, :, :-1]  # alpha is not part of the mask
    if m.shape[:2] != shape:
        raise DataError(f"mask {mask_path} is {m.shape[1]}x{m.shape[0]} but the image is {shape[1]}x{shape[0]}")
    return np.asarray(m != 0).any(axis=2)


def _validate(raw: np.ndarray, path: Path) -> None:
    """Shape and pixel type checks of nsgan.data.imageio, before any tile of the image is written."""
    if raw.ndim not in (2, 3):
        to_unit_float(raw, path)  # raises DataError naming the shape
    if raw.size == 0:
        raise DataError(f"{path}: empty image")
    to_unit_float(raw[:1, :1], path)


def _mask_png(mask_tile: np.ndarray) -> bytes:
    return _encode_tile((mask_tile[:, :, None] * np.uint8(255)).astype(np.uint8))[1]


def _cut_one(name: str, root: Path, path: Path, cutter: _Cutter, masks, writers, report) -> None:
    """Read one image, cut it and send each tile to the normal or abnormal writer (abnormal tiles of
    an image with a mask carry the mask's tile; with centred crops those replace the grid's)."""
    rel = path.relative_to(root)
    try:
        raw = read_raw(path)
        _validate(raw, path)
        img = _as_hwc(raw)
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.dtype.kind == "f":
            img = np.round(to_unit_float(img, path) * 65535.0).astype(np.uint16)
        mask = None
        if name == "abnormal" and masks is not None:
            mask_path = masks.find(rel)
            if mask_path is not None:
                mask = _read_mask(mask_path, img.shape[:2])
    except DataError as exc:
        report.skip(name, path, str(exc).removeprefix(f"{path}: "))
        return
    bit_depth = 8 if img.dtype == np.uint8 else 16
    padded = img.shape[0] < cutter.tile or img.shape[1] < cutter.tile
    if padded:
        report.padded.append({"source": rel.as_posix(), "input": name, "size": [int(img.shape[1]), int(img.shape[0])]})
        img = _pad_to(img, cutter.tile)
        mask = None if mask is None else _pad_to(mask, cutter.tile)
    report.images_read[name] += 1
    t = cutter.tile
    centred = mask is not None and cutter.centred > 0
    grid = [(y, x, False) for y, x in cutter.positions(img.shape[0], img.shape[1], rel.as_posix())]
    if centred:
        grid += [(y, x, True) for y, x in cutter.centred_positions(mask, rel.as_posix())]
    for y, x, is_centred in grid:
        label = name
        meta: dict[str, Any] = {}
        extra: dict[str, bytes] = {}
        if mask is not None:
            touches = mask[y : y + t, x : x + t].any()
            if not touches:
                label, meta["from_defective"] = "normal", True
            elif centred and not is_centred:
                continue  # the centred tiles stand for this grid tile's defect
            else:
                extra["mask.png"] = _mask_png(mask[y : y + t, x : x + t])
                if is_centred:
                    meta["centred"] = True
        ext, data = cutter.encode(img[y : y + t, x : x + t], bit_depth, path)
        meta = {
            "source": rel.as_posix(),
            "input": name,
            "x": int(x),
            "y": int(y),
            "tile": t,
            "label": label,
            "channels": cutter.channels,
            "bit_depth": bit_depth,
            **meta,
        }
        if padded:
            meta["padded"] = True
        writers[label].write(ext, data, meta, extra)
        report.count_tile(name, label, with_mask=bool(extra))


# ----------------------------------------------------------------------------------- output


class _SetWriter:
    """One shard set (normal or abnormal); the first shard is only created with the first tile."""

    def __init__(self, folder: Path, prefix: str, shard_size: int):
        self.folder, self.prefix, self.shard_size = folder, prefix, shard_size
        self.files: list[str] = []
        self.count = 0
        self._writer = None

    def write(self, ext: str, data: bytes, meta: dict, extra: dict[str, bytes] | None = None) -> None:
        if self._writer is None:
            import webdataset as wds  # deferred: it loads torch, which `nsgan shards --help` and a rejected option never need

            self.folder.mkdir(parents=True, exist_ok=True)
            pattern = str(self.folder / f"{self.prefix}-%06d.tar")
            # fixed mtime: identical inputs and seed give byte-identical shards
            self._writer = wds.ShardWriter(pattern, maxcount=self.shard_size, verbose=0, mtime=0, post=self._done)
        key = f"{self.prefix}-{self.count:09d}"
        self._writer.write({"__key__": key, ext: data, "json": json.dumps(meta).encode(), **(extra or {})})
        self.count += 1

    def _done(self, fname: str) -> None:
        fsync_file(fname)  # on disk before the manifest that lists it
        self.files.append(f"{self.prefix}/{Path(fname).name}")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def abort(self) -> None:
        """Release the open shard file after a failure; its content is thrown away with the temp folder."""
        try:
            self.close()
        except Exception:
            self._writer = None

    def pattern(self) -> str | None:
        if not self.files:
            return None
        if len(self.files) == 1:
            return self.files[0]
        return f"{self.prefix}/{self.prefix}-{{{0:06d}..{len(self.files) - 1:06d}}}.tar"


class _Report:
    """Counts and lists that end up in the manifest."""

    def __init__(self):
        self.images_read = {name: 0 for name in SETS}
        self.tiles = {name: 0 for name in SETS}
        self.from_defective = 0
        self.with_mask = 0
        self.tiles_from_normal_dir = 0
        self.skipped: list[dict] = []
        self.padded: list[dict] = []

    def skip(self, name: str, path: Path, reason: str) -> None:
        self.skipped.append({"path": str(path), "input": name, "reason": reason})

    def skipped_in(self, name: str) -> int:
        return sum(1 for s in self.skipped if s["input"] == name)

    def count_tile(self, source_set: str, label: str, with_mask: bool = False) -> None:
        self.tiles[label] += 1
        self.with_mask += with_mask
        if source_set == "normal":
            self.tiles_from_normal_dir += 1
        elif label == "normal":
            self.from_defective += 1


def _manifest(inputs, masks, tile, stride, random_crops, channels, shard_size, seed, writers, report) -> Manifest:
    found = sum(len(files) for _, files in inputs.values())
    return {
        "format": "nsgan-shards",
        "version": 1,
        "nsgan_version": __version__,
        "tile": tile,
        "channels": channels,
        "stride": None if random_crops else stride,
        "random_crops": random_crops,
        "seed": seed,
        "shard_size": shard_size,
        "encoding": "png (8-bit gray/RGB, 16-bit gray); tiff (16-bit RGB, zlib); source bit depth kept",
        "inputs": {
            "normal": str(inputs["normal"][0]),
            "abnormal": str(inputs["abnormal"][0]) if "abnormal" in inputs else None,
            "abnormal_masks": str(masks.root) if masks is not None else None,
        },
        "counts": {
            "images_found": found,
            "images_read": sum(report.images_read.values()),
            "images_read_normal": report.images_read["normal"],
            "images_read_abnormal": report.images_read["abnormal"],
            "images_skipped": len(report.skipped),
            "images_padded": len(report.padded),
            "masks_used": masks.used if masks is not None else 0,
            "tiles_normal": report.tiles["normal"],
            "tiles_normal_from_defective": report.from_defective,
            "tiles_abnormal": report.tiles["abnormal"],
            "tiles_abnormal_with_mask": report.with_mask,
            "shards_normal": len(writers["normal"].files),
            "shards_abnormal": len(writers["abnormal"].files),
        },
        "shards": {
            name: {"pattern": writers[name].pattern(), "files": writers[name].files, "tiles": writers[name].count}
            for name in SETS
        },
        "skipped": report.skipped,
        "padded": report.padded,
        "abnormal_without_mask": masks.missing if masks is not None else [],
    }


class _progress_bar:
    """A rich progress bar over images (only when asked for); yields an `advance()` callable."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self.progress = enabled, total, None

    def __enter__(self):
        if not self.enabled:
            return lambda: None

        self.progress = Progress(
            TextColumn("cutting tiles"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
        )
        self.progress.start()
        task = self.progress.add_task("images", total=self.total)
        return lambda: self.progress.advance(task)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()


__all__ = ["write_shards", "ShardSpec", "Manifest", "MANIFEST_NAME"]

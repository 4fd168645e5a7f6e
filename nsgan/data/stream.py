"""Infinite, deterministic, exactly resumable tile streams from WebDataset shards (training side).

Who splits the stream: this module, once. Each rank builds its own `ShardStream(rank=, world=)`;
the loop must NOT pass it through `accelerate.prepare` (that would split or dispatch it again).

How a stream is made, per logical worker w of W on rank r (G = world·W workers in all):
  epoch e: a permutation of all shards seeded by (seed, e), the same on every rank; the worker
  takes positions r·W+w, r·W+w+G, ... of it, wrapping around, so every worker has at least one
  shard even with a single shard. Their raw samples go through a shuffle buffer seeded by
  (seed, r, w, e), are decoded and batched inside the worker. Epochs follow each other forever.
The torch DataLoader hands out worker batches round-robin, which is deterministic; the position
therefore records, per logical worker, the epoch and the number of RAW samples it consumed in it
(dropped ones included), plus which worker delivers the next batch. Resuming replays the worker's
epoch through the shuffle without decoding the first `consumed` samples, then goes on exactly.

`masks=True` also decodes each sample's defect mask (`KEY.mask.png`, written by `nsgan shards` for
abnormal tiles of images with a mask) into `StreamBatch.masks`; a sample without one gets a mask
over its whole tile (the tile-level label is all that is known of it).

`exclude` (relative paths of source images, as `nsgan shards` names them in each sample's JSON
`source`) leaves out every normal tile cut from those images: a cross-fitting fold's held-out
images (nsgan/data/folds.py) are never shown, and the shards are not cut again. Excluded samples
count as consumed (the position stays exact) but not as skipped. A stream with `exclude` also
hands each batch's tile sources in `StreamBatch.sources`, so a trainer can record what it saw.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
import random
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import braceexpand
import numpy as np
import tifffile
import torch
import webdataset as wds
from PIL import Image
from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

from nsgan.common.errors import DataError
from nsgan.data.imageio import PIL_GRAY_MAX, to_channels

POSITION_VERSION = 1
MANIFEST_NAME = "manifest.json"
_GRAY_MODES = PIL_GRAY_MAX


class DataWarning(UserWarning):
    """Something about a stream the user should know, which does not stop training."""


class CorruptSampleWarning(DataWarning):
    """A sample or shard of a stream could not be used; shown once per kind of problem."""


@dataclass
class StreamBatch:
    """One batch: images (B, C, tile, tile) float32 in [-1, 1], samples/shard errors dropped since
    the previous batch, the JSON-able position after this batch (pass it to resume) and, for a
    stream made with masks=True, the defect masks (B, 1, tile, tile) bool."""

    images: torch.Tensor
    skipped: int
    position: dict
    masks: torch.Tensor | None = None
    sources: list[str] | None = None  # each tile's source image (streams made with `exclude` only)


# ------------------------------------------------------------------------ shard specifications


def read_manifest(path: str | Path) -> dict:
    """The manifest of a shard folder written by `nsgan shards` (the folder or manifest.json itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"{path}: no shard manifest (not a folder written by `nsgan shards`?)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable shard manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "nsgan-shards":
        raise DataError(f"{path}: not an nsgan shard manifest")
    return manifest


def resolve_shards(spec: str | Path | list, base_dir: str | Path | None = None, label: str = "normal") -> list[str]:
    """Expand a shard spec into a sorted list of absolute shard paths.

    A spec (or each item of a list) is one of: a brace/glob pattern (`s/normal-{000000..000003}.tar`),
    a .tar file, a folder of .tar files, or a shard-set folder / manifest.json, from which the
    `label` set ("normal" or "abnormal") is taken. Relative paths are taken from `base_dir`
    (e.g. the config file's folder). Raises DataError naming the spec when nothing matches or a
    listed shard is missing.
    """
    items = [spec] if isinstance(spec, (str, Path)) else list(spec)
    if not items:
        raise DataError("no shards given")
    found: set[str] = set()
    for item in items:
        found.update(_resolve_one(str(item), Path(base_dir) if base_dir is not None else None, label))
    return sorted(found)


def _resolve_one(item: str, base: Path | None, label: str) -> list[str]:
    def place(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() or base is None else base / q

    path = place(item)
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file():
            return _from_manifest(path / MANIFEST_NAME, label)
        tars = sorted(str(p.resolve()) for p in path.glob("*.tar"))
        if not tars:
            raise DataError(f"{path}: no .tar shards in this folder")
        return tars
    if path.is_file():
        return _from_manifest(path, label) if path.suffix == ".json" else [str(path.resolve())]

    matches, missing = [], []
    for name in braceexpand.braceexpand(item):
        p = place(name)
        if any(ch in name for ch in "*?["):
            matches += glob.glob(str(p))
        elif p.is_file():
            matches.append(str(p))
        else:
            missing.append(str(p))
    if not matches:
        raise DataError(f"{path}: no shard matches")
    if missing:
        raise DataError(f"{item}: {len(missing)} listed shard(s) missing, e.g. {missing[0]}")
    return [str(Path(m).resolve()) for m in matches]


def _from_manifest(path: Path, label: str) -> list[str]:
    manifest = read_manifest(path)
    entry = manifest.get("shards", {}).get(label)
    if not entry or not entry.get("files"):
        raise DataError(f"{path}: no {label} shards in this shard set")
    files = [path.parent / f for f in entry["files"]]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} shard(s) listed in the manifest are missing, e.g. {missing[0]}")
    return [str(f.resolve()) for f in files]


# ------------------------------------------------------------------------------ the stream


class ShardStream:
    """Infinite batches of tiles for one rank; see the module docstring for order and resume.

    Iterate it (one iterator at a time); `stream.position` is the position after the last batch
    handed out, and a new iterator continues from there. `position` in the constructor resumes a
    stream saved with the same seed, rank, world, number of workers and shards; batch size may
    differ (the continuation is then deterministic, though not what the old batch size would give).
    A position from a different setup cannot be continued exactly: it is warned about and the
    stream starts on fresh epochs after the ones it recorded, so no data is replayed in the same order.
    """

    def __init__(
        self,
        shards: str | list[str],
        tile: int,
        channels: int,
        batch: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        num_workers: int = 2,
        position: dict | None = None,
        *,
        shuffle_buffer: int = 1000,
        pin_memory: bool = False,
        masks: bool = False,
        exclude: frozenset[str] = frozenset(),
    ):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if tile < 1 or batch < 1 or world < 1 or not 0 <= rank < world or num_workers < 0 or shuffle_buffer < 1:
            raise ValueError(f"bad stream settings: tile={tile} batch={batch} rank={rank} world={world} num_workers={num_workers}")
        self.shards = resolve_shards(shards)
        self.tile, self.channels, self.batch, self.seed = tile, channels, batch, seed
        self.rank, self.world, self.num_workers = rank, world, num_workers
        self.shuffle_buffer, self.pin_memory = shuffle_buffer, pin_memory
        self.masks = masks
        self.exclude = frozenset(exclude)
        self.n_workers = max(1, num_workers)  # num_workers=0 streams like one worker, in-process
        self._starts, self._next_worker, self._batches = self._initial(position)
        self._warned: set[str] = set()

    @property
    def position(self) -> dict:
        """JSON-able position after the last batch handed out."""
        return {
            "version": POSITION_VERSION,
            "seed": self.seed,
            "rank": self.rank,
            "world": self.world,
            "workers": [{"epoch": e, "consumed": c} for e, c in self._starts],
            "shards": len(self.shards),
            "next_worker": self._next_worker,
            "batches": self._batches,
        }

    def _initial(self, position: dict | None) -> tuple[list[tuple[int, int]], int, int]:
        fresh = [(0, 0)] * self.n_workers
        if position is None:
            return fresh, 0, 0
        try:
            workers = [(int(w["epoch"]), int(w["consumed"])) for w in position["workers"]]
            setup = (position["version"], position["seed"], position["rank"], position["world"], position["shards"])
            next_worker, batches = int(position["next_worker"]), int(position.get("batches", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"stream position is malformed ({type(exc).__name__}: {exc})") from None
        expected = (POSITION_VERSION, self.seed, self.rank, self.world, len(self.shards))
        if setup == expected and len(workers) == self.n_workers and 0 <= next_worker < self.n_workers:
            return workers, next_worker, batches
        warnings.warn(
            f"stream position was saved for (version, seed, rank, world, shards) = {setup} and {len(workers)} "
            f"worker(s), now {expected} and {self.n_workers}: continuing on fresh epochs, not exactly",
            DataWarning,
            stacklevel=3,
        )
        epoch = max((e for e, _ in workers), default=-1) + 1
        return [(epoch, 0)] * self.n_workers, 0, batches

    def __iter__(self) -> Iterator[StreamBatch]:
        source = _TileSource(
            self.shards, self.tile, self.channels, self.batch, self.seed, self.rank, self.world,
            self.n_workers, list(self._starts), self._next_worker, self.shuffle_buffer, self.masks, self.exclude,
        )
        loader = torch.utils.data.DataLoader(
            source, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
            prefetch_factor=4 if self.num_workers else None,
            # no persistent_workers: every iterator starts from its own position, so workers are per iterator
        )
        it = iter(loader)
        try:
            for item in it:
                if "error" in item:
                    raise DataError(item["error"])
                w = int(item["worker"])
                if w != self._next_worker:  # the DataLoader's round-robin is what resume relies on
                    raise RuntimeError(f"stream order broken: batch from worker {w}, expected {self._next_worker}")
                for kind, message in item["problems"]:
                    self._warn(kind, message)
                self._starts[w] = (int(item["epoch"]), int(item["consumed"]))
                self._next_worker = (w + 1) % self.n_workers
                self._batches += 1
                yield StreamBatch(images=item["images"], skipped=int(item["skipped"]), position=self.position, masks=item.get("masks"),
                                  sources=item.get("sources"))
        finally:
            del it  # shuts the workers down when the consumer stops iterating

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(
                f"{kind}: {message} (dropped; further '{kind}' problems are only counted)", CorruptSampleWarning, stacklevel=3
            )


def measure_loader(shards, tile: int, channels: int, batch: int, num_workers: int, seconds: float) -> float:
    """Images per second a ShardStream delivers after start-up (for the training benchmark)."""
    stream = ShardStream(shards, tile, channels, batch, seed=0, num_workers=num_workers)
    it = iter(stream)
    try:
        for _ in range(max(1, num_workers)):  # worker start-up is not throughput
            next(it)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            n += next(it).images.shape[0]
        return n / (time.perf_counter() - t0)
    finally:
        it.close()


# ------------------------------------------------------------------------ inside the workers


def _mix(*values: int) -> int:
    """A well-spread 64-bit seed from several small ints (platform independent)."""
    return int(np.random.SeedSequence([v % (1 << 63) for v in values]).generate_state(1, np.uint64)[0])


class _Cursor:
    """Where a worker is inside the current epoch; read by the shard error handler."""

    def __init__(self, skip: int):
        self.n, self.skip, self.url = 0, skip, "?"
        self.events: list[tuple[str, str]] = []

    def shard_error(self, exn: Exception) -> bool:
        """webdataset handler: note the error (unless it was counted before the resume point), go on."""
        if self.n >= self.skip:
            first = str(exn.args[0]).split(" @ ")[0] if exn.args else ""
            self.events.append(("unreadable shard", f"{self.url}: {type(exn).__name__}: {first}"))
        return True

    def samples(self, src):
        """Raw samples shard by shard: webdataset does not close a sample group when a shard
        breaks off, so a truncated shard's last sample could merge with the next shard's first."""
        for shard in src:
            self.url = shard["url"]
            for opened in url_opener([shard], handler=self.shard_error):
                try:
                    yield from group_by_keys(tar_file_expander([opened], handler=self.shard_error), handler=self.shard_error)
                finally:
                    opened["stream"].close()  # webdataset leaves shard files to the garbage collector


class _TileSource(torch.utils.data.IterableDataset):
    """The per-worker pipeline: shard assignment, seeded shuffle, decode, batch."""

    def __init__(self, shards, tile, channels, batch, seed, rank, world, n_workers, starts, offset, bufsize, masks=False,
                 exclude=frozenset()):
        super().__init__()
        self.shards, self.tile, self.channels, self.batch = shards, tile, channels, batch
        self.seed, self.rank, self.world, self.n_workers = seed, rank, world, n_workers
        self.starts, self.offset, self.bufsize, self.masks = starts, offset, bufsize, masks
        self.exclude = exclude

    def epoch_shards(self, epoch: int, w: int) -> list[str]:
        n, g, total = len(self.shards), self.rank * self.n_workers + w, self.world * self.n_workers
        perm = list(range(n))
        random.Random(_mix(self.seed, 0, epoch)).shuffle(perm)
        return [self.shards[perm[(g + k * total) % n]] for k in range(max(1, math.ceil(n / total)))]

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers != self.n_workers:
            raise RuntimeError(f"{info.num_workers} loader workers for a stream planned with {self.n_workers}")
        w = ((info.id if info is not None else 0) + self.offset) % self.n_workers
        epoch, skip = self.starts[w]
        return self._batches(w, epoch, skip)

    def _raw(self, urls: list[str], epoch: int, w: int, cursor: _Cursor):
        rng = random.Random(_mix(self.seed, 1, self.rank, w, epoch))
        return iter(
            wds.DataPipeline(
                wds.SimpleShardList(urls),
                cursor.samples,
                wds.shuffle(self.bufsize, min(100, self.bufsize), rng=rng),
            )
        )

    def _batches(self, w: int, epoch: int, skip: int):
        t, c = self.tile, self.channels
        images = np.empty((self.batch, c, t, t), np.float32)
        masks = np.empty((self.batch, 1, t, t), bool) if self.masks else None
        sources: list[str] | None = [] if self.exclude else None
        filled, skipped, problems, told = 0, 0, [], set()
        failing: set[str] = set()  # shards of consecutive epochs that gave no usable sample
        failed_epochs, last_problem = 0, ""
        while True:
            urls = self.epoch_shards(epoch, w)
            cursor = _Cursor(skip)
            usable = cursor.skip > 0  # skipped samples were usable before: not evidence of failure
            for sample in self._raw(urls, epoch, w, cursor):
                cursor.n += 1
                if cursor.n <= skip:
                    continue  # resume: replay without decoding
                source = sample_source(sample) if sources is not None else None
                if source is not None and source in self.exclude:
                    continue  # a held-out image's tile: consumed, never shown
                img, kind, message = decode_sample(sample, t, c)
                if img is not None and masks is not None:
                    mask, kind, message = decode_mask(sample, t)
                    img = None if mask is None else img
                if img is None:
                    skipped += 1
                    last_problem = f"{kind}: {message}"
                    if kind not in told:
                        told.add(kind)
                        problems.append((kind, message))
                else:
                    usable = True
                    images[filled] = img
                    if masks is not None:
                        masks[filled, 0] = mask
                    if sources is not None:
                        sources.append(source or "")
                    filled += 1
                skipped += len(cursor.events)
                for kind, message in cursor.events:
                    last_problem = f"{kind}: {message}"
                    if kind not in told:
                        told.add(kind)
                        problems.append((kind, message))
                cursor.events.clear()
                if filled == self.batch:
                    yield {
                        "images": torch.from_numpy(images), "skipped": skipped, "problems": problems,
                        "worker": w, "epoch": epoch, "consumed": cursor.n,
                        **({"masks": torch.from_numpy(masks)} if masks is not None else {}),
                        **({"sources": sources} if sources is not None else {}),
                    }
                    images = np.empty((self.batch, c, t, t), np.float32)
                    masks = np.empty((self.batch, 1, t, t), bool) if self.masks else None
                    sources = [] if self.exclude else None
                    filled, skipped, problems = 0, 0, []
            skipped += len(cursor.events)  # errors after the epoch's last sample count in the next batch
            for kind, message in cursor.events:
                last_problem = f"{kind}: {message}"
                if kind not in told:
                    told.add(kind)
                    problems.append((kind, message))
            if usable:
                failing.clear()
                failed_epochs = 0
            else:
                failing.update(urls)
                failed_epochs += 1
                if len(failing) == len(self.shards) or failed_epochs > 10 * len(self.shards) + 100:
                    yield {"error": _no_usable_samples(self.shards, last_problem)}
                    return
            epoch, skip = epoch + 1, 0


def _no_usable_samples(shards: list[str], last_problem: str) -> str:
    names = ", ".join(shards[:3]) + (f" and {len(shards) - 3} more" if len(shards) > 3 else "")
    return f"no usable sample in {len(shards)} shard(s) ({names}); last problem: {last_problem or 'no samples'}"


def sample_source(sample: dict) -> str | None:
    """The source image of a normal-set sample (its JSON `source`, relative to the normal folder), or None:
    tiles of the abnormal input (`from_defective` normal tiles) and samples without readable JSON have none here."""
    try:
        meta = json.loads(sample["json"])
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("input", "normal") != "normal":
        return None
    source = meta.get("source")
    return source if isinstance(source, str) else None


def decode_mask(sample: dict, tile: int) -> tuple[np.ndarray | None, str, str]:
    """A sample's defect mask (tile, tile) bool from `mask.png`; all True when the sample has none."""
    if "mask.png" not in sample:
        return np.ones((tile, tile), bool), "", ""
    where = f"{os.path.basename(str(sample.get('__url__', '?')))}:{sample.get('__key__', '?')}"
    try:
        with Image.open(io.BytesIO(sample["mask.png"])) as im:
            arr = np.asarray(im)
    except Exception as exc:
        return None, "undecodable mask", f"{where}: {type(exc).__name__}"
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    if arr.shape != (tile, tile):
        return None, "wrong mask size", f"{where} has a {arr.shape[-1]}x{arr.shape[0]} mask, expected {tile}x{tile}"
    return arr != 0, "", ""


def decode_sample(sample: dict, tile: int, channels: int) -> tuple[np.ndarray | None, str, str]:
    """Raw webdataset sample → ((channels, tile, tile) float32 in [-1, 1], "", "") or (None, kind, message)."""
    where = f"{os.path.basename(str(sample.get('__url__', '?')))}:{sample.get('__key__', '?')}"
    try:
        if "png" in sample:
            with Image.open(io.BytesIO(sample["png"])) as im:
                if im.size != (tile, tile):
                    return None, "wrong tile size", f"{where} is {im.size[0]}x{im.size[1]}, expected {tile}x{tile}"
                if im.mode not in _GRAY_MODES and im.mode != "RGB":
                    return None, "wrong channel count", f"{where} has PNG mode {im.mode}, expected gray or RGB"
                maxval = _GRAY_MODES.get(im.mode, 255)
                arr = np.asarray(im)
        elif "tiff" in sample:
            arr = tifffile.imread(io.BytesIO(sample["tiff"]))
            maxval = 65535 if arr.dtype == np.uint16 else 255
        else:
            return None, "no image in sample", f"{where} has no png or tiff entry"
    except Exception as exc:  # Pillow/tifffile raise many types for broken bytes
        detail = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "its bytes", str(exc))
        return None, "undecodable image", f"{where}: {type(exc).__name__}: {detail}"
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3) or arr.dtype not in (np.bool_, np.uint8, np.uint16, np.int32):
        return None, "wrong channel count", f"{where} has shape {arr.shape} and type {arr.dtype}"
    if arr.shape[:2] != (tile, tile):
        return None, "wrong tile size", f"{where} is {arr.shape[1]}x{arr.shape[0]}, expected {tile}x{tile}"
    unit = to_channels(arr.astype(np.float32) * np.float32(1.0 / maxval), channels)
    return np.transpose(unit * 2.0 - 1.0, (2, 0, 1)), "", ""


__all__ = ["ShardStream", "StreamBatch", "DataWarning", "CorruptSampleWarning", "resolve_shards", "read_manifest", "measure_loader", "decode_sample", "decode_mask", "sample_source"]

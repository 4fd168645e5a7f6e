"""The labelled abnormal tiles as the comparator trains on them: masked tiles and whole-image bags.

The stream (nsgan/data/stream.py) fills in an all-over mask for an abnormal tile without `mask.png`,
so it cannot tell "no mask" from "all mask", and it hands out tiles without their source image. The
comparator needs both: a tile with a mask gets the pixel loss at its mask; the tiles of an image that
only carries an image label form a bag (grouped by each sample's JSON `source`), and the
multiple-instance loss asks the hottest pixels across the bag to fire. So the abnormal shards are read
here once, whole, into memory (at most `max_tiles` tiles; beyond that a ConfigError names the key).

Tiles are kept as uint16 (65535 = 1.0): exact for 8- and 16-bit sources, half the memory of float32.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nsgan.common.errors import ConfigError, DataError
from nsgan.data.stream import decode_mask, decode_sample

_SCALE = 65535.0


@dataclass
class LabelledSet:
    """Masked tiles (pixel targets) and bags (the tiles of one image-labelled image), tiles (N, C, T, T) uint16."""

    tile: int
    channels: int
    masked: np.ndarray  # (M, C, T, T) uint16
    masks: np.ndarray  # (M, 1, T, T) bool
    masked_sources: list[str] = field(default_factory=list)
    bags: list[np.ndarray] = field(default_factory=list)  # each (n_i, C, T, T) uint16
    bag_sources: list[str] = field(default_factory=list)

    @property
    def n_tiles(self) -> int:
        return int(self.masked.shape[0]) + sum(int(b.shape[0]) for b in self.bags)

    def summary(self) -> dict:
        return {"masked_tiles": int(self.masked.shape[0]), "masked_images": len(set(self.masked_sources)),
                "bags": len(self.bags), "bag_tiles": sum(int(b.shape[0]) for b in self.bags)}

    @staticmethod
    def unit(tiles: np.ndarray) -> np.ndarray:
        """uint16 tiles -> float32 in [0, 1]."""
        return tiles.astype(np.float32) * np.float32(1.0 / _SCALE)

    def without(self, sources: set[str]) -> LabelledSet:
        """The same set without the tiles of the named source images (e.g. those holding a held-out kind)."""
        keep = [i for i, s in enumerate(self.masked_sources) if s not in sources]
        bags = [(b, s) for b, s in zip(self.bags, self.bag_sources) if s not in sources]
        return LabelledSet(self.tile, self.channels, self.masked[keep], self.masks[keep], [self.masked_sources[i] for i in keep],
                           [b for b, _ in bags], [s for _, s in bags])


def _samples(path: str):
    """(key, {ext: bytes}) of one webdataset tar, in order."""
    current, parts = None, {}
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = Path(member.name).name
            key, _, ext = name.partition(".")
            if key != current:
                if current is not None:
                    yield current, parts
                current, parts = key, {}
            fh = tar.extractfile(member)
            parts[ext] = fh.read() if fh is not None else b""
    if current is not None:
        yield current, parts


def read_labelled(shards: list[str], tile: int, channels: int, max_tiles: int, key: str = "comparator.max_labelled_tiles") -> LabelledSet:
    """Read every abnormal sample of `shards` (resolved tar paths) into a LabelledSet.

    Samples whose JSON label is not `abnormal` (tiles of a masked image that miss its defect) are left out;
    undecodable samples are skipped as the stream skips them. More than `max_tiles` tiles: ConfigError naming `key`.
    """
    masked, masks, msrc = [], [], []
    bags: dict[str, list[np.ndarray]] = {}
    n = 0
    for url in shards:
        try:
            samples = list(_samples(url))
        except (OSError, tarfile.TarError) as exc:
            raise DataError(f"{url}: cannot read the abnormal shard ({exc})") from None
        for k, parts in samples:
            try:
                meta = json.loads(parts.get("json", b"{}"))
            except ValueError:
                continue
            if meta.get("label", "abnormal") != "abnormal":
                continue
            sample = {**parts, "__key__": k, "__url__": url}
            x, _, _ = decode_sample(sample, tile, channels)
            if x is None:
                continue
            n += 1
            if n > max_tiles:
                raise ConfigError(f"key '{key}' is {max_tiles}, but the abnormal shards hold more labelled tiles; "
                                  "raise it (memory: about 2·C·T² bytes a tile) or pass fewer abnormal shards")
            q = np.round((x + 1.0) * (_SCALE / 2.0)).astype(np.uint16)
            source = str(meta.get("source", k))
            if "mask.png" in parts:
                m, _, _ = decode_mask(sample, tile)
                if m is None:
                    continue
                masked.append(q)
                masks.append(m[None])
                msrc.append(source)
            else:
                bags.setdefault(source, []).append(q)
    c, t = channels, tile
    return LabelledSet(
        tile, channels,
        np.stack(masked) if masked else np.zeros((0, c, t, t), np.uint16),
        np.stack(masks) if masks else np.zeros((0, 1, t, t), bool), msrc,
        [np.stack(v) for v in bags.values()], list(bags))


def shard_bit_depth(shards: list[str], default: int = 8) -> int:
    """The bit depth the first sample of `shards` records (8 or 16): what painted tiles are quantised to."""
    for url in shards[:1]:
        try:
            for _, parts in _samples(url):
                if "json" in parts:
                    depth = int(json.loads(parts["json"]).get("bit_depth", default))
                    return depth if depth in (8, 16) else default
        except (OSError, tarfile.TarError, ValueError):
            return default
    return default


__all__ = ["LabelledSet", "read_labelled", "shard_bit_depth"]

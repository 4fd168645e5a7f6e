"""The progressive-growing schedule as one pure function of images seen (as in the PGGAN code).

Level, resolution, fade-in alpha, per-process batch and learning rate all follow from
`images_seen` (summed over all processes) and the config, so resuming needs nothing but that
count, and every rank computes the same phase without talking to the others.

Timeline, in images: the start level trains `stable_kimg`; each later level first fades in over
`fade_kimg` (alpha rising linearly 0 -> 1), then trains stable for `stable_kimg`; the final level
stays stable until `total_kimg`. Phase indices: 0 = start level stable, then fade / stable
alternating (odd = fade, even = stable). With `fade_kimg = 0` the fades are skipped (odd indices
never occur); with `stable_kimg = 0` every level only fades in (the final one then stays). `total_kimg` may end training before the final level is reached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from nsgan.common.errors import ConfigError


class ScheduleConfigError(ConfigError, ValueError):
    """A schedule setting out of range; a ConfigError (one-line CLI message) and a ValueError."""


def _is_power_of_two(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 4 and not n & (n - 1)


def _level(resolution: int) -> int:
    return resolution.bit_length() - 3


def _images(kimg: float) -> int:
    return round(kimg * 1000)


def _lookup(table: dict[int, float], resolution: int, default):
    """Value for the largest key <= resolution, else `default`."""
    keys = [k for k in table if k <= resolution]
    return table[max(keys)] if keys else default


@dataclass(frozen=True)
class ScheduleConfig:
    """What the schedule depends on; validated on construction (errors name the field).

    `batch` and `lr_per_res` map a resolution to a per-process batch / learning rate; a
    resolution not listed takes the entry of the nearest smaller listed one, else `default_batch`
    / `lr`. Keys may come as strings (JSON) and are stored as ints.
    """

    resolution: int
    start_resolution: int = 4
    stable_kimg: float = 600
    fade_kimg: float = 600
    total_kimg: float = 12000
    batch: dict[int, int] = field(default_factory=dict)
    default_batch: int = 16
    lr: float = 0.001
    lr_per_res: dict[int, float] = field(default_factory=dict)

    def __post_init__(self):
        def fail(name, why):
            raise ScheduleConfigError(f"schedule.{name}: {why}")

        for name in ("resolution", "start_resolution"):
            if not _is_power_of_two(getattr(self, name)):
                fail(name, f"must be a power of two >= 4, got {getattr(self, name)!r}")
        if self.start_resolution > self.resolution:
            fail("start_resolution", f"{self.start_resolution} is above resolution {self.resolution}")
        for name, lowest, strict in (("stable_kimg", 0, False), ("fade_kimg", 0, False), ("total_kimg", 0, True)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                fail(name, f"must be a number, got {value!r}")
            if value < lowest or (strict and value == lowest):
                fail(name, f"must be {'>' if strict else '>='} {lowest}, got {value!r}")
            object.__setattr__(self, name, float(value))
        if _images(self.stable_kimg) + _images(self.fade_kimg) < 1:
            fail("stable_kimg", "and fade_kimg must not both be 0 (each level needs some images)")
        if isinstance(self.default_batch, bool) or not isinstance(self.default_batch, int) or self.default_batch < 1:
            fail("default_batch", f"must be a positive integer, got {self.default_batch!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < math.inf:
            fail("lr", f"must be a number > 0, got {self.lr!r}")
        object.__setattr__(self, "lr", float(self.lr))
        object.__setattr__(self, "batch", self._table("batch", self.batch, int, fail))
        object.__setattr__(self, "lr_per_res", self._table("lr_per_res", self.lr_per_res, float, fail))

    @staticmethod
    def _table(name, table, kind, fail) -> dict:
        if not isinstance(table, dict):
            fail(name, f"must be a mapping resolution -> value, got {type(table).__name__}")
        out = {}
        for key, value in table.items():
            try:
                res = int(key)
            except (TypeError, ValueError):
                res = None
            if res is None or str(res) != str(key).strip() or not _is_power_of_two(res):
                fail(f"{name}.{key}", "key must be a resolution (power of two >= 4)")
            if kind is int:
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
                what = "a positive integer"
            else:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf
                what = "a number > 0"
            if not ok:
                fail(f"{name}.{key}", f"must be {what}, got {value!r}")
            out[res] = kind(value)
        return out

    @property
    def start_level(self) -> int:
        return _level(self.start_resolution)

    @property
    def final_level(self) -> int:
        return _level(self.resolution)

    def batch_for(self, resolution: int) -> int:
        """Per-process batch at `resolution`."""
        return _lookup(self.batch, resolution, self.default_batch)

    def lr_for(self, resolution: int) -> float:
        """Learning rate at `resolution` (not scaled with the number of processes)."""
        return _lookup(self.lr_per_res, resolution, self.lr)


@dataclass(frozen=True)
class Phase:
    """Where training stands. `batch` is per process; `global_batch` = batch * world_size is what
    one step adds to images_seen. `kimg` = images_seen / 1000."""

    level: int
    resolution: int
    alpha: float
    batch: int
    lr: float
    index: int
    stage: str
    done: bool
    kimg: float
    global_batch: int


class PhaseSpan(NamedTuple):
    """One phase of the timeline, for the display / ETA: its start and end in kimg."""

    start_kimg: float
    end_kimg: float
    phase: Phase


def total_images(cfg: ScheduleConfig) -> int:
    """Images (all processes together) after which training is done."""
    return _images(cfg.total_kimg)


def schedule(images_seen: int, cfg: ScheduleConfig, world_size: int = 1) -> Phase:
    """The phase at `images_seen` (counted over all processes)."""
    if isinstance(images_seen, bool) or not isinstance(images_seen, int) or images_seen < 0:
        raise ValueError(f"images_seen must be an integer >= 0, got {images_seen!r}")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
    stable, fade = _images(cfg.stable_kimg), _images(cfg.fade_kimg)
    start, final = cfg.start_level, cfg.final_level
    level, stage, alpha = start, "stable", 1.0
    if images_seen >= stable and final > start:
        grown, into = divmod(images_seen - stable, fade + stable)
        level = start + 1 + grown
        if level > final:
            level = final
        elif into < fade:
            stage, alpha = "fade", into / fade
    index = 2 * (level - start) - (stage == "fade")
    resolution = 4 * 2**level
    batch = cfg.batch_for(resolution)
    return Phase(
        level=level,
        resolution=resolution,
        alpha=alpha,
        batch=batch,
        lr=cfg.lr_for(resolution),
        index=index,
        stage=stage,
        done=images_seen >= total_images(cfg),
        kimg=images_seen / 1000,
        global_batch=batch * world_size,
    )


def phase_boundaries(cfg: ScheduleConfig, world_size: int = 1) -> list[PhaseSpan]:
    """The phases training will go through before `total_kimg`, each with its kimg span."""
    stable, fade, total = _images(cfg.stable_kimg), _images(cfg.fade_kimg), total_images(cfg)
    starts = [0]
    for grown in range(cfg.final_level - cfg.start_level):
        fade_start = stable + grown * (fade + stable)
        if fade:
            starts.append(fade_start)
        starts.append(fade_start + fade)
    starts = [s for s in starts if s < total]
    ends = starts[1:] + [total]
    return [
        PhaseSpan(s / 1000, e / 1000, schedule(s, cfg, world_size)) for s, e in zip(starts, ends) if e > s
    ]

"""What the comparator sees each step, per process: painted, plain and labelled tiles with their reference.

One step's examples, in this order (the proportions are `comparator:` keys, nsgan/train/config.py):

    painted   round(paint_fraction · n_normal) normal tiles with defects painted on the fly
              (nsgan/data/synthetic.py; exact masks, quantised to the shards' bit depth)
    plain     the other normal tiles, target all zero (the dirty normals of real data among them)
    masked    round(labelled_fraction · batch) labelled abnormal tiles with masks, target their mask
              (none when the abnormal shards hold no masks: normal tiles take their place)
    bags      `mil_bags` whole labelled images without masks (all their tiles), for the
              multiple-instance loss (none when there are no such images)

with n_normal = batch − masked, streamed from the normal shards (this rank's share, position saved);
round(gan_normals · n_normal) of them, at places drawn per step, are replaced by samples of the frozen G
(quantised like the shards) before painting: G's variety as more normal material.
For reference `reconstruction`, G(E(x)) of every tile is made here, without gradients, in bf16
when accelerate says bf16. Every random choice comes from one numpy Generator per rank whose state
is saved with the run, so a resumed run draws exactly what an uninterrupted one would.

`exclude`: source images (relative paths) whose normal tiles C must never see, a cross-fitting
fold's held-out images (nsgan/data/stream.py leaves them out); `seen` then collects the source of
every normal tile drawn, the record of what this C trained on.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from nsgan.common.errors import DataError
from nsgan.data.stream import ShardStream
from nsgan.data.synthetic import SyntheticDefects
from nsgan.models.comparator import ComparatorSpec
from nsgan.train.common import BatchTaker
from nsgan.train.config import TrainConfig
from nsgan.train.seeds import COMPARATOR_DRAWS, rank_seed


@dataclass
class ComparatorBatch:
    x: torch.Tensor  # (N, C, T, T) in [-1, 1]: pixel tiles first, then the bags' tiles
    rec: torch.Tensor | None  # G(E(x)) (reference reconstruction) or None
    target: torch.Tensor  # (n_pixel, 1, T, T) float {0, 1} for the pixel tiles
    n_pixel: int  # painted + plain + masked
    plain: tuple[int, int]  # [a, b) of the plain normal tiles (MIL negatives)
    bags: list[tuple[int, int]] = field(default_factory=list)  # [a, b) of each bag in x
    tags: list[str] = field(default_factory=list)  # per pixel tile: painted kind / "normal" / "labelled"


def comparator_spec(cfg: TrainConfig, channels: int) -> ComparatorSpec:
    c = cfg.comparator
    return ComparatorSpec(channels=channels, reference=c.reference, width=c.width, dilations=tuple(c.dilations),
                          blur_sigma=c.blur_sigma)


def synthetic_defects(cfg: TrainConfig, bit_depth: int) -> SyntheticDefects:
    c = cfg.comparator
    return SyntheticDefects(kinds=tuple(c.kinds), blob=c.blob, blob_fraction=c.blob_fraction, max_area_frac=c.max_area_frac,
                            contrast=tuple(c.contrast), blur=tuple(c.blur), bit_depth=bit_depth)


class ComparatorBatches:
    """Draws ComparatorBatch after ComparatorBatch for one rank; `state()` / `position` resume it exactly."""

    def __init__(self, cfg: TrainConfig, generator: torch.nn.Module | None, encoder: torch.nn.Module | None,
                 normal_shards: list[str], labelled: Any, channels: int, rank: int, world: int, device: torch.device,
                 bf16: bool = False, position: dict | None = None, rng_state: dict | None = None, bit_depth: int = 8,
                 exclude: frozenset[str] = frozenset(), seen: set[str] | None = None):
        c = cfg.comparator
        self.cfg, self.device, self.bf16 = cfg, device, bf16
        self.G, self.E = generator, encoder
        self.needs_rec = c.reference == "reconstruction"
        self.labelled = labelled
        has_masked = labelled is not None and labelled.masked.shape[0] > 0
        self.n_masked = min(c.batch - 1, int(round(c.labelled_fraction * c.batch))) if has_masked else 0
        self.n_normal = c.batch - self.n_masked
        self.n_paint = int(round(c.paint_fraction * self.n_normal))
        self.n_bags = c.mil_bags if labelled is not None and labelled.bags else 0
        self.synth = synthetic_defects(cfg, bit_depth) if self.n_paint else None
        self.n_gan = int(round(c.gan_normals * self.n_normal))
        self.levels = 2 ** bit_depth - 1
        self.rng = np.random.Generator(np.random.PCG64(rank_seed(cfg.seed, rank, COMPARATOR_DRAWS)))
        if rng_state is not None:
            self.rng.bit_generator.state = rng_state
        self.stream = BatchTaker(ShardStream(normal_shards, tile=cfg.model.resolution, channels=channels, batch=self.n_normal,
                                             seed=cfg.seed + 11, rank=rank, world=world, num_workers=cfg.data.num_workers,
                                             position=position, exclude=exclude))
        self.seen: set[str] | None = set(seen or ()) if exclude else None

    def rng_state(self) -> dict:
        return self.rng.bit_generator.state

    def paint(self, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Tiles (n, C, T, T) in [0, 1] -> painted tiles, masks (n, 1, T, T), tags (this rank's generator).

        A tile no defect shows on (saturated or flat material where every try left the quantised pixels as they
        were) must not stop a run: the batch is then painted tile by tile and such a tile stays plain ("normal")."""
        try:
            return self.synth.apply(unit, self.rng)
        except DataError:
            pass
        out, masks, tags = unit.copy(), np.zeros((unit.shape[0], 1, *unit.shape[2:]), bool), []
        for i in range(unit.shape[0]):
            try:
                p, m, t = self.synth.apply(unit[i:i + 1], self.rng)
                out[i], masks[i], tags = p[0], m[0], tags + t
            except DataError:
                tags.append("normal")
        return out, masks, tags

    def draw(self) -> ComparatorBatch:
        t = self.cfg.model.resolution
        normal = (self.stream.take(self.n_normal, torch.device("cpu")).numpy() + 1.0) * 0.5
        if self.seen is not None and self.stream.sources is not None:
            self.seen.update(self.stream.sources)
        if self.n_gan:
            normal[self.rng.choice(self.n_normal, self.n_gan, replace=False)] = self.samples(self.n_gan)
        parts, targets, tags = [], [], []
        if self.n_paint:
            painted, masks, ptags = self.paint(normal[:self.n_paint])
            parts.append(painted)
            targets.append(masks)
            tags += ptags
        plain = normal[self.n_paint:]
        parts.append(plain)
        targets.append(np.zeros((plain.shape[0], 1, t, t), bool))
        tags += ["normal"] * plain.shape[0]
        if self.n_masked:
            idx = self.rng.integers(self.labelled.masked.shape[0], size=self.n_masked)
            parts.append(self.labelled.unit(self.labelled.masked[idx]))
            targets.append(self.labelled.masks[idx])
            tags += ["labelled"] * self.n_masked
        n_pixel = sum(p.shape[0] for p in parts)
        bags, at = [], n_pixel
        for b in (self.rng.integers(len(self.labelled.bags), size=self.n_bags) if self.n_bags else []):
            tiles = self.labelled.unit(self.labelled.bags[int(b)])
            parts.append(tiles)
            bags.append((at, at + tiles.shape[0]))
            at += tiles.shape[0]
        x = torch.from_numpy(np.concatenate(parts).astype(np.float32)).to(self.device) * 2.0 - 1.0
        target = torch.from_numpy(np.concatenate(targets)).to(self.device).float()
        rec = self.reconstruct(x) if self.needs_rec else None
        return ComparatorBatch(x=x, rec=rec, target=target, n_pixel=n_pixel, plain=(self.n_paint, self.n_normal),
                               bags=bags, tags=tags)

    @torch.no_grad()
    def samples(self, n: int) -> np.ndarray:
        """n tiles of G(z) in [0, 1], z from this rank's generator (so resume redraws them), quantised like the shards."""
        z = torch.from_numpy(self.rng.standard_normal((n, self.G.latent_dim)).astype(np.float32)).to(self.device)
        unit = (self.G(z).float().clamp(-1, 1).cpu().numpy() + 1.0) * 0.5
        return np.round(unit * self.levels) / self.levels

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        ctx = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with ctx:
            return self.G(self.E(x)).float()

"""The tile runner: network outputs per batch of tiles, in one process or dealt out over many.

A runner takes tiles (N, C, T, T) in [0, 1], as `nsgan.data.tiling.cut_tiles` cuts them, with their
global ids, and returns the residual maps (N, T, T) and tile scores (N,) as float tensors on the
scorer's device. `TorchTiles` inverts with G, D and E (or runs C alone) in torch; `NetworkTiles` wraps
any per-tile callable that computes the same from numpy tiles, such as an ONNX Runtime session
(`nsgan.share.onnx_export.OnnxTileNetwork`). This call is the one seam between backends: everything
before (reading, cutting) and after (blending, smoothing, thresholds, reports) is shared.

`Processes.run_band` deals a band's batches round-robin to the processes and gathers them back in
order; a batch's content never depends on the number of processes and a tile's random starts depend
only on its global id, so N processes compute the same band as one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from nsgan.common.errors import EXIT_RUNTIME, ConfigError, NsganError
from nsgan.score.choices import ImageScore, Inversion, Residual, TestTimeAugment
from nsgan.score.maps import tile_residual
from nsgan.score.options import ScoreOptions, comparator_runs_alone
from nsgan.score.search import LatentSearch
from nsgan.score.views import View, views

TORCH = "torch"  # the backend names the timing records (reports.timing_record)
ONNXRUNTIME = "onnxruntime"


class TileRunner(Protocol):
    """Tiles (N, C, T, T) in [0, 1] and their global ids -> (residual maps (N, T, T), tile scores (N,))."""

    backend: str  # named in the timing record
    device: torch.device  # where the returned tensors are

    def __call__(self, tiles: np.ndarray, tile_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]: ...


def check_finite(maps: np.ndarray, scores: np.ndarray, name: str, where: str = "") -> None:
    """A NaN/inf tile is a numerical failure, never a silently wrong map."""
    if not (np.isfinite(maps).all() and np.isfinite(scores).all()):
        raise NsganError(f"{name}: the model produced NaN/inf in the anomaly map{where}; try --precision fp32 or a "
                         f"smaller --lr, or check the model file", exit_code=EXIT_RUNTIME)


class TorchTiles:
    """G, D and E (LatentSearch) and C in torch: the inversion the options ask for, then the residual.

    A C that reads x alone or beside its blur needs no G(E(x)), and the map's own max is then the tile
    score; such tiles skip the inversion (comparator_runs_alone). With test-time views (options.tta) each
    view of the batch goes through the same call and its map is turned back before maps and scores are averaged.
    """

    backend = TORCH

    def __init__(self, search: LatentSearch, options: ScoreOptions, device: torch.device,
                 comparator: torch.nn.Module | None = None):
        self.search, self.options, self.device = search, options, device
        self.comparator = comparator
        self.comparator_alone = comparator is not None and comparator_runs_alone(comparator.spec.reference, options)
        # The AnoGAN tile loss (its D-feature term) is only needed when it is the image score.
        self.tile_losses = options.image_score == ImageScore.TILE
        self.views = views(options.tta)
        # The latent search would run its hundreds of steps per start once per view (4-8x an already compute-bound search).
        if len(self.views) > 1 and not self.comparator_alone and options.search.mode != Inversion.ENCODER:
            raise ConfigError(f"--tta {options.tta}: only for a feed-forward map (--inversion encoder, or a comparator that "
                              f"reads no reconstruction), not inversion mode {options.search.mode}; use --tta none")

    def __call__(self, tiles: np.ndarray, tile_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(tiles).to(self.device) * 2.0 - 1.0
        if len(self.views) == 1:
            return self._once(x, tile_ids)
        # A call per view, each at the batch's size: one call of all views (N × views tiles) measured ~3x slower per
        # tile on this CPU (activations out of cache), and D's minibatch-stddev features (the tile loss) see the batch.
        outs = [self._once(v.apply(x), tile_ids) for v in self.views]
        maps = mean_undone(self.views, [r for r, _ in outs])
        if self.comparator_alone:  # the tile score stays the max of the tile's (now averaged) map
            return maps, maps.flatten(1).amax(1)
        return maps, torch.stack([sc.float() for _, sc in outs]).mean(0)

    def _once(self, x: torch.Tensor, tile_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.comparator_alone:
            with torch.no_grad():
                res = tile_residual(x, None, Residual.COMPARATOR, comparator=self.comparator).float()
            return res, res.flatten(1).amax(1)
        out = self.search.search(x, tile_ids, tile_losses=self.tile_losses)
        with torch.no_grad():
            res = tile_residual(x, out.reconstructions, self.options.residual, comparator=self.comparator)
        return res.float(), out.scores.float()


class NetworkTiles:
    """A per-tile callable, numpy tiles -> numpy (maps, scores), as a runner on `device` (ONNX Runtime's seam).

    Test-time views (`tta`) are numpy flips around the call, so one exported graph serves every view."""

    backend = ONNXRUNTIME

    def __init__(self, network: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], device: torch.device,
                 tta: TestTimeAugment = TestTimeAugment.NONE):
        self.network, self.device = network, device
        self.views = views(tta)

    def __call__(self, tiles: np.ndarray, tile_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self.views) == 1:
            res, sc = self.network(tiles)
            return torch.from_numpy(res).to(self.device).float(), torch.from_numpy(sc).to(self.device).float()
        outs = [self.network(np.ascontiguousarray(v.apply(tiles))) for v in self.views]
        maps = mean_undone(self.views, [torch.from_numpy(np.ascontiguousarray(r)) for r, _ in outs])
        scores = torch.from_numpy(np.stack([sc for _, sc in outs])).float().mean(0)
        return maps.to(self.device), scores.to(self.device)


def mean_undone(vs: Sequence[View], maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """The mean of each view's maps (N, T, T), each turned back onto the tiles as cut first."""
    total = None
    for v, m in zip(vs, maps, strict=True):
        m = v.undo(m.float())
        total = m.clone() if total is None else total.add_(m)
    return total / len(vs)


class Processes:
    """This process's place among the scoring processes (an accelerate Accelerator, or one process)."""

    def __init__(self, accelerator: Any = None):
        self.accelerator = accelerator

    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.accelerator is not None else 0

    @property
    def world(self) -> int:
        return self.accelerator.num_processes if self.accelerator is not None else 1

    def barrier(self) -> None:
        if self.world > 1:
            self.accelerator.wait_for_everyone()

    def gather(self, local: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
        """Each rank's rows of `local` (rank r holds counts[r] rows), gathered to every rank."""
        if self.world == 1:
            return [local]
        width = max(counts)
        pad = torch.zeros((width - local.shape[0], *local.shape[1:]), dtype=local.dtype, device=local.device)
        allr = self.accelerator.gather(torch.cat([local, pad]).contiguous())
        return [allr[r * width : r * width + counts[r]] for r in range(self.world)]

    def run_band(self, runner: TileRunner, tiles: np.ndarray, first_id: int, batch: int, batch_no: int,
                 clock, bar=None) -> tuple[np.ndarray, np.ndarray, int]:
        """(maps, scores, tiles run here) of a band's tiles, every process's share gathered in order.

        Batch k of the image (counted from `batch_no`, the batches of earlier bands) is run by rank
        k % world. `clock` times the "network" and "gather" stages; `bar` advances by the tiles run here.
        """
        chunks = [(s, min(s + batch, len(tiles))) for s in range(0, len(tiles), batch)]
        owners = [(batch_no + k) % self.world for k in range(len(chunks))]
        res_parts, score_parts = [], []
        for (a, b), owner in zip(chunks, owners):
            if owner != self.rank:
                continue
            with clock("network"):
                res, sc = runner(tiles[a:b], range(first_id + a, first_id + b))
            res_parts.append(res)
            score_parts.append(sc)
            if bar is not None:
                bar.advance(b - a)
        with clock("gather"):  # other ranks' tiles, to the CPU
            counts = [sum(b - a for (a, b), o in zip(chunks, owners) if o == r) for r in range(self.world)]
            tile = tiles.shape[-1]
            empty_res = torch.zeros((0, tile, tile), device=runner.device)
            local_res = torch.cat(res_parts) if res_parts else empty_res
            local_sc = torch.cat(score_parts) if score_parts else torch.zeros(0, device=runner.device)
            all_res, all_sc = self.gather(local_res, counts), self.gather(local_sc, counts)
            taken = [0] * self.world
            res = np.empty((len(tiles), tile, tile), dtype=np.float32)
            sc = np.empty(len(tiles), dtype=np.float32)
            for (a, b), owner in zip(chunks, owners):
                k = taken[owner]
                res[a:b] = all_res[owner][k : k + b - a].cpu().numpy()
                sc[a:b] = all_sc[owner][k : k + b - a].cpu().numpy()
                taken[owner] += b - a
        return res, sc, counts[self.rank]


def run_batches(runner: TileRunner, tiles: np.ndarray, tile_ids: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(maps, scores) of tiles run `batch` at a time in this process (tiles of several images may share a batch)."""
    res, sc = [], []
    for a in range(0, len(tiles), batch):
        r, s = runner(tiles[a:a + batch], tile_ids[a:a + batch])
        res.append(r.cpu().numpy())
        sc.append(s.cpu().numpy())
    return np.concatenate(res), np.concatenate(sc)

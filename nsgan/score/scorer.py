"""Scoring full-size images: tiles → batched latent search → blended map → map file, overlay, report.

The image is processed in horizontal bands of tile rows; each band's finished map rows go
straight to the BigTIFF writer, so memory depends on tile, batch and band size, not on the image.
With several processes (accelerate), the search batches of a band are dealt out round-robin and
gathered back in order. A batch's content never depends on the number of processes and a tile's
random starts depend only on its global index, so N processes write the same map as one.

Python API: `Scorer.from_file("model.safetensors").score(array_or_path) -> ScoreResult`;
`Scorer.from_pretrained(file, folder or Hub repo id)` loads the same way from a run folder or the Hub.
CLI: `nsgan score --model M --image PATH --out DIR` (here) and `accelerate launch launch/score.py`.
With `--onnx m.onnx` (from `nsgan export-onnx`) instead of `--model`, ONNX Runtime makes the per-tile
network call and everything else here stays the same (`nsgan.share.onnx_export.scorer_from_onnx`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nsgan.common.stopwatch import StageClock
from nsgan.common.errors import (
    EXIT_RUNTIME,
    ConfigError,
    DataError,
    ModelError,
    NsganError,
    OutputError,
)
from nsgan.data.bigimage import (
    ArraySource,
    open_image,
    read_map_rows,
    release_freed_memory,
    write_map,
)
from nsgan.data.imageio import IMAGE_SUFFIXES, list_images
from nsgan.data.tiling import BandBlender, TileGrid, cut_tiles, read_padded_rows
from nsgan.score.maps import smooth_stream, tile_residual
from nsgan.score.options import ScoreOptions, comparator_runs_alone
from nsgan.score.reports import (
    Downscaler,
    Region,
    find_regions,
    overlay_factor,
    render_overlay,
    write_json,
    write_overlay,
)
from nsgan.score.search import LatentSearch

UNCALIBRATED_K = 4.0  # without a pixel threshold, regions are drawn above mean + K·std of the map
REGION_BAND_ROWS = 64  # map rows labelled at a time in the region pass (bounds its memory)
IN_MEMORY_MAP_BYTES = 64 << 20  # a map up to this size is kept for the region pass instead of read back from its TIFF


def _check_finite(maps: np.ndarray, scores: np.ndarray, name: str, where: str = "") -> None:
    """A NaN/inf tile is a numerical failure, never a silently wrong map."""
    if not (np.isfinite(maps).all() and np.isfinite(scores).all()):
        raise NsganError(f"{name}: the model produced NaN/inf in the anomaly map{where}; try --precision fp32 or a "
                         f"smaller --lr, or check the model file", exit_code=EXIT_RUNTIME)


@dataclass
class ScoreResult:
    """One scored image. `map` is the full-resolution map when scored in memory, else None (see map_path)."""

    score: float  # image score, by ScoreOptions.image_score
    verdict: str  # "anomalous", "normal" or "uncalibrated"
    map: np.ndarray | None
    regions: list[Region]
    thresholds: dict[str, Any]
    shape: tuple[int, int]
    tile_scores: np.ndarray  # (rows, cols): the AnoGAN tile loss; mean |x − G(z)| where D was skipped (encoder mode, map score); C's tile max for a C that reads no G(E(x))
    map_stats: dict[str, float]
    map_path: Path | None = None
    overlay_path: Path | None = None
    report_path: Path | None = None

    def report(self, source: str = "<array>") -> dict:
        return {
            "image": source,
            "shape": list(self.shape),
            "score": self.score,
            "verdict": self.verdict,
            "thresholds": self.thresholds,
            "map": {**self.map_stats, "file": self.map_path.name if self.map_path else None},
            "tiles": {"rows": int(self.tile_scores.shape[0]), "cols": int(self.tile_scores.shape[1])},
            "regions_bbox_format": "x0, y0, x1, y1 in image pixels, end exclusive",
            "regions": [r.to_dict() for r in self.regions],
        }


class _MapStats:
    """Running mean/std/max of the map (float64 sums) for the report and uncalibrated regions."""

    def __init__(self):
        self.n, self.s, self.s2, self.max = 0, 0.0, 0.0, -math.inf

    def add(self, rows: np.ndarray) -> None:
        r = rows.astype(np.float64).ravel()
        self.n += r.size
        self.s += float(r.sum())
        self.s2 += float(np.dot(r, r))
        self.max = max(self.max, float(rows.max()))

    def as_dict(self) -> dict[str, float]:
        mean = self.s / self.n
        return {"mean": mean, "std": math.sqrt(max(0.0, self.s2 / self.n - mean * mean)), "max": self.max}


class Scorer:
    """A frozen model plus scoring options; scores arrays and image files, in one or many processes."""

    def __init__(
        self,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        *,
        resolution: int,
        channels: int,
        thresholds: dict[str, Any] | None = None,
        options: ScoreOptions | None = None,
        accelerator: Any = None,
        device: str | torch.device | None = None,
        progress: bool = False,
        name: str = "<model>",
        encoder: torch.nn.Module | None = None,
        network: Any = None,
        comparator: torch.nn.Module | None = None,
    ):
        """`network`: instead of G, D (and E), a per-tile call tiles (N, C, T, T) in [0, 1] -> (residual maps,
        tile scores) as numpy arrays, computing encoder mode (an exported ONNX file: `nsgan.share.onnx_export.scorer_from_onnx`); G and D are
        then None. Tiling, blending, smoothing, regions and reports are the same either way.
        `comparator`: the model's C (nsgan/models/comparator.py), for residual `comparator` (and `auto` where
        that resolves to it); run on each tile right after E and G, in the same pass."""
        from dataclasses import replace

        from nsgan.score.options import resolve_residual

        options = options or ScoreOptions()
        search = options.search.resolved(encoder is not None or network is not None)
        has_c = comparator is not None or (network is not None and getattr(network, "has_comparator", False))
        if network is not None and options.residual == "auto" and isinstance(getattr(network, "meta", None), dict):
            options = replace(options, residual=network.meta.get("residual", "auto"))  # what the exported graph computes
        options = replace(options, residual=resolve_residual(options.residual, has_c))
        if options.residual == "comparator" and not has_c:
            raise ModelError(f"{name}: holds no comparator, so --residual comparator cannot run; train one with "
                             f"`nsgan train-comparator --model {name} comparator.kimg=N` or score with --residual detail")
        if network is not None:
            network.check_options(replace(options, search=search))
        elif search.mode != "search" and encoder is None:
            raise ModelError(f"{name}: holds no encoder, so inversion mode '{search.mode}' cannot run; train one with "
                             f"`nsgan train-encoder --model {name} encoder.kimg=N` or score with --inversion search")
        self.options = options = replace(options, search=search)
        self.tile, self.channels = int(resolution), int(channels)
        self.stride = self.options.stride or self.tile
        if self.stride > self.tile:
            raise ConfigError(f"stride: {self.stride} is larger than the tile ({self.tile})")
        self.accelerator = accelerator
        if device is None:
            device = accelerator.device if accelerator is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        self.network = network
        self.comparator = comparator.to(self.device).eval() if comparator is not None and options.residual == "comparator" else None
        # A C that reads x alone or beside its blur needs no G(E(x)): _invert skips the inversion it would not read.
        self.comparator_alone = self.comparator is not None and comparator_runs_alone(self.comparator.spec.reference, options)
        self.search = None if network is not None else LatentSearch(
            generator.to(self.device), discriminator.to(self.device), self.options.search,
            encoder=encoder.to(self.device) if encoder is not None else None)
        self.thresholds = dict(thresholds or {})
        self.progress = progress
        self.name = name
        self.model_path: Path | None = None  # set by from_file; the reports then name the file's sha256
        self._sha256: str | None = None
        self.backend = "onnxruntime" if network is not None else "torch"  # for the reports' timing
        self.clock = StageClock()  # per image: where the time went (score_to_files resets it)
        self.timing: dict[str, Any] | None = None  # the last score_to_files' timing (also in its report)

    @classmethod
    def from_file(cls, path: str | Path, options: ScoreOptions | None = None, **kwargs) -> "Scorer":
        """Load an exported model (ModelError if missing/corrupt) and wrap it for scoring."""
        from nsgan.models.model_file import load_model

        m = load_model(path)
        kwargs.setdefault("name", str(path))
        scorer = cls(m.generator, m.discriminator, resolution=m.resolution, channels=m.channels,
                     thresholds=m.thresholds, options=options, encoder=m.encoder, comparator=m.comparator, **kwargs)
        scorer.model_path = Path(path)
        scorer.comparator_digest = (m.meta.get("comparator") or {}).get("digest")
        return scorer

    @property
    def model_sha256(self) -> str | None:
        """sha256 of the model file (hashed once, when first asked; None for networks given directly)."""
        if self._sha256 is None and self.model_path is not None:
            import hashlib

            h = hashlib.sha256()
            try:
                with open(self.model_path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
            except OSError:
                return None
            self._sha256 = h.hexdigest()
        return self._sha256

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, options: ScoreOptions | None = None, *, revision: str | None = None,
                        cache_dir: str | Path | None = None, **kwargs) -> "Scorer":
        """Load a model from a `.safetensors` file, a folder holding `model.safetensors` (a run folder, a
        downloaded repo) or a Hugging Face Hub repo id (`ORG/NAME`, through huggingface_hub: its cache,
        HF_HUB_CACHE and offline mode HF_HUB_OFFLINE=1 as that library defines them). ModelError naming
        the input when there is no such file, folder or cached/downloadable repo."""
        path, name = resolve_pretrained(path_or_repo_id, revision=revision, cache_dir=cache_dir)
        kwargs.setdefault("name", name)
        return cls.from_file(path, options, **kwargs)

    # -- processes -------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.accelerator is not None else 0

    @property
    def world(self) -> int:
        return self.accelerator.num_processes if self.accelerator is not None else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _barrier(self) -> None:
        if self.world > 1:
            self.accelerator.wait_for_everyone()

    def _gather(self, local: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
        """Each rank's rows of `local` (rank r holds counts[r] rows), gathered to every rank."""
        if self.world == 1:
            return [local]
        width = max(counts)
        pad = torch.zeros((width - local.shape[0], *local.shape[1:]), dtype=local.dtype, device=local.device)
        allr = self.accelerator.gather(torch.cat([local, pad]).contiguous())
        return [allr[r * width : r * width + counts[r]] for r in range(self.world)]

    # -- the pipeline ----------------------------------------------------------------------
    def grid_for(self, height: int, width: int) -> TileGrid:
        return TileGrid(height, width, self.tile, self.stride)

    def _check_source(self, src) -> None:
        if src.channels != self.channels:
            raise DataError(f"{src.name}: image has {src.channels} channel(s), the model expects {self.channels}")

    def _stream(self, src, grid: TileGrid, tile_scores: np.ndarray, stats: _MapStats,
                views: tuple[Downscaler, Downscaler] | None, bar) -> Iterator[tuple[int, np.ndarray]]:
        """Finished map rows (first row, rows), top to bottom, smoothed by map_sigma; fills tile_scores, stats, views."""
        clock = self.clock
        smoothed = smooth_stream(self._blended(src, grid, tile_scores, views, bar), grid.height, self.options.map_sigma)
        while True:
            with clock("smooth"):  # exclusive of the read, network and blend stages it pulls through
                item = next(smoothed, None)
            if item is None:
                return
            first, rows = item
            with clock("stats"):
                stats.add(rows)
                if views is not None:
                    views[1].add(rows)
            yield first, rows

    def _blended(self, src, grid: TileGrid, tile_scores: np.ndarray,
                 views: tuple[Downscaler, Downscaler] | None, bar) -> Iterator[tuple[int, np.ndarray]]:
        """The blended (unsmoothed) map rows, top to bottom; fills tile_scores and the image view."""
        opt, clock = self.options, self.clock
        h, w = grid.height, grid.width
        padded_w = int(grid.xs[-1]) + grid.tile
        blender = BandBlender(grid, opt.window_floor)
        band_rows = max(1, math.ceil(opt.batch * opt.batches_per_band / grid.n_cols))
        batch_no = 0  # global batch counter: batch k is searched by rank k % world
        for band in grid.bands(band_rows):
            release_freed_memory()  # the previous band's buffers: keeps peak memory flat with height
            y0, y1 = int(grid.ys[band[0]]), int(grid.ys[band[-1]]) + grid.tile
            with clock("read"):
                img = read_padded_rows(lambda a, b: src.read(a, b), h, w, y0, y1, padded_w)
            with clock("cut"):
                tiles = cut_tiles(img, y0, grid, band)
            first_id = band[0] * grid.n_cols
            chunks = [(s, min(s + opt.batch, len(tiles))) for s in range(0, len(tiles), opt.batch)]
            owners = [(batch_no + k) % self.world for k in range(len(chunks))]
            batch_no += len(chunks)
            res_parts, score_parts = [], []
            for (a, b), owner in zip(chunks, owners):
                if owner != self.rank:
                    continue
                with clock("network"):
                    res, sc = self._invert(tiles[a:b], range(first_id + a, first_id + b))
                res_parts.append(res)
                score_parts.append(sc)
                if bar is not None:
                    bar.advance(b - a)
            with clock("gather"):  # other ranks' tiles, to the CPU, checked finite
                counts = [sum(b - a for (a, b), o in zip(chunks, owners) if o == r) for r in range(self.world)]
                empty_res = torch.zeros((0, grid.tile, grid.tile), device=self.device)
                local_res = torch.cat(res_parts) if res_parts else empty_res
                local_sc = torch.cat(score_parts) if score_parts else torch.zeros(0, device=self.device)
                all_res, all_sc = self._gather(local_res, counts), self._gather(local_sc, counts)
                taken = [0] * self.world
                res = np.empty((len(tiles), grid.tile, grid.tile), dtype=np.float32)
                sc = np.empty(len(tiles), dtype=np.float32)
                for (a, b), owner in zip(chunks, owners):
                    k = taken[owner]
                    res[a:b] = all_res[owner][k : k + b - a].cpu().numpy()
                    sc[a:b] = all_sc[owner][k : k + b - a].cpu().numpy()
                    taken[owner] += b - a
                _check_finite(res, sc, src.name, f" (tile rows {band[0]}..{band[-1]})")
            if bar is not None:
                bar.advance(len(tiles) - counts[self.rank])  # the other processes' tiles
            tile_scores[band[0] : band[-1] + 1] = sc.reshape(len(band), grid.n_cols)
            with clock("blend"):
                first, rows = blender.add(band, res)
                if rows.shape[0] and views is not None:
                    views[0].add(img[first - y0 : first - y0 + rows.shape[0], :w])
            if rows.shape[0]:
                yield first, rows

    def _new_clock(self) -> StageClock:
        sync = torch.cuda.synchronize if self.device.type == "cuda" else None  # charge GPU work to the stage that queued it
        return StageClock(sync=sync)

    def _timing(self, height: int, width: int, wall: float) -> dict[str, Any]:
        """Where one image's time went (stage seconds, exclusive), its wall time and megapixels per second."""
        mp = height * width / 1e6
        return {"seconds": self.clock.summary(wall), "wall_s": round(wall, 4), "megapixels": round(mp, 6),
                "mp_per_s": round(mp / wall, 4) if wall > 0 else None, "backend": self.backend, "device": str(self.device)}

    def _invert(self, tiles: np.ndarray, tile_ids) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual maps (N, T, T) and tile scores (N,) of tiles (N, C, T, T) in [0, 1]."""
        if self.network is not None:
            res, sc = self.network(tiles)
            return torch.from_numpy(res).to(self.device).float(), torch.from_numpy(sc).to(self.device).float()
        x = torch.from_numpy(tiles).to(self.device) * 2.0 - 1.0
        if self.comparator_alone:
            with torch.no_grad():
                res = tile_residual(x, None, "comparator", comparator=self.comparator).float()
            return res, res.flatten(1).amax(1)
        # The AnoGAN tile loss (its D-feature term) is only needed when it is the image score.
        out = self.search.search(x, tile_ids, tile_losses=self.options.image_score == "tile")
        with torch.no_grad():
            res = tile_residual(x, out.reconstructions, self.options.residual, comparator=self.comparator)
        return res.float(), out.scores.float()

    def _thresholds(self, stats: dict[str, float]) -> dict[str, Any]:
        th: dict[str, Any] = {"image": self.thresholds.get("image")}
        if self.options.pixel_threshold is not None:
            th["pixel"], th["pixel_source"] = float(self.options.pixel_threshold), "given"
        elif self.thresholds.get("pixel") is not None:
            th["pixel"], th["pixel_source"] = float(self.thresholds["pixel"]), "calibrated"
        else:
            th["pixel"] = stats["mean"] + UNCALIBRATED_K * stats["std"]
            th["pixel_source"] = f"uncalibrated: map mean + {UNCALIBRATED_K:g}·std of this image"
        th["image_source"] = "calibrated" if th["image"] is not None else "uncalibrated"
        mismatch = self.calibration_mismatch()
        if mismatch:
            th["warning"] = mismatch
        return th

    def calibration_mismatch(self) -> str | None:
        """What differs between the model's calibration and these scoring settings (None: nothing, or uncalibrated)."""
        problems = []
        if self.thresholds.get("search") and {"mode": "search", **self.thresholds["search"]} != self.options.search.to_dict():
            problems.append("other search settings")
        if self.thresholds.get("map") and self.thresholds["map"] != self.map_settings():
            problems.append("other map settings (residual, map_sigma, image_score)")
        calibrated_stride = self.thresholds.get("stride")
        if calibrated_stride is not None and int(calibrated_stride) != self.stride:
            problems.append(f"stride {int(calibrated_stride)}, scoring uses stride {self.stride}")
        return "thresholds were calibrated with " + " and ".join(problems) if problems else None

    def map_settings(self) -> dict[str, Any]:
        """What the map and the image score depend on besides the search (recorded with thresholds)."""
        settings = {"residual": self.options.residual, "map_sigma": self.options.map_sigma, "image_score": self.options.image_score}
        if self.options.residual == "comparator":  # thresholds made with one C do not hold for another
            digest = getattr(self.network, "comparator_digest", None) if self.network is not None else self.comparator_digest
            settings["comparator_digest"] = digest
        return settings

    def image_score(self, tile_scores: np.ndarray, stats: dict[str, float]) -> float:
        if self.options.image_score == "map_max":
            return float(stats["max"])
        return float(tile_scores.max())

    def _verdict(self, score: float, th: dict[str, Any]) -> str:
        if th["image"] is None:
            return "uncalibrated"
        return "anomalous" if score > float(th["image"]) else "normal"

    def _progress(self, grid: TileGrid, label: str):
        if not (self.progress and self.is_main):
            return None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        prog = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tiles"),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
        )
        task = prog.add_task(label, total=grid.n_tiles, rate="")
        return prog, task

    def score(self, image: np.ndarray | str | Path) -> ScoreResult:
        """Score an array (H, W[, C]) in [0, 1] or uint8/16, or an image file, fully in memory."""
        src = open_image(image) if isinstance(image, (str, Path)) else ArraySource(image)
        with src:
            self._check_source(src)
            h, w = src.shape
            grid = self.grid_for(h, w)
            tile_scores = np.zeros((grid.n_rows, grid.n_cols), dtype=np.float32)
            stats = _MapStats()
            amap = np.empty((h, w), dtype=np.float32)
            with _maybe_progress(self._progress(grid, Path(src.name).name)) as bar:
                for y, rows in self._stream(src, grid, tile_scores, stats, None, bar):
                    amap[y : y + rows.shape[0]] = rows
        return self._in_memory_result(amap, tile_scores, stats)

    def _in_memory_result(self, amap: np.ndarray, tile_scores: np.ndarray, stats: _MapStats) -> ScoreResult:
        st = stats.as_dict()
        th = self._thresholds(st)
        regions = find_regions([(0, amap)], th["pixel"], self.options.min_region_area)
        score = self.image_score(tile_scores, st)
        return ScoreResult(score, self._verdict(score, th), amap, regions, th, amap.shape, tile_scores, st)

    def score_all(self, images) -> Iterator[ScoreResult]:
        """Results for many images (paths or arrays), in order: images smaller than one search batch
        of tiles are gathered into shared batches (score_many), larger ones are scored alone."""
        group: list[np.ndarray] = []
        tiles = 0
        for image in images:
            src = open_image(image) if isinstance(image, (str, Path)) else ArraySource(image)
            with src:
                self._check_source(src)
                n = self.grid_for(*src.shape).n_tiles
                if n > self.options.batch:
                    yield from self.score_many(group)
                    group, tiles = [], 0
                    yield self.score(image)
                    continue
                if group and tiles + n > self.options.batch:
                    yield from self.score_many(group)
                    group, tiles = [], 0
                group.append(src.read(0, src.shape[0]))
                tiles += n
        yield from self.score_many(group)

    def score_many(self, images) -> list[ScoreResult]:
        """Score several images in memory in this process, their tiles sharing search batches.

        For folders of small images (evaluate, calibrate), where one image's few tiles would leave
        a batch mostly empty. Every tile keeps the id it has in its own image, so each result is
        what `score(image)` gives (up to float rounding of other batch sizes).
        """
        prepared = []
        for image in images:
            src = open_image(image) if isinstance(image, (str, Path)) else ArraySource(image)
            with src:
                self._check_source(src)
                h, w = src.shape
                grid = self.grid_for(h, w)
                img = read_padded_rows(lambda a, b: src.read(a, b), h, w, 0, int(grid.ys[-1]) + grid.tile,
                                       int(grid.xs[-1]) + grid.tile)
                prepared.append((grid, cut_tiles(img, 0, grid, range(grid.n_rows)), src.name))
        if not prepared:
            return []
        tiles = np.concatenate([t for _, t, _ in prepared])
        ids = np.concatenate([np.arange(len(t)) for _, t, _ in prepared])
        res, sc = [], []
        for a in range(0, len(tiles), self.options.batch):
            r, s = self._invert(tiles[a:a + self.options.batch], ids[a:a + self.options.batch])
            res.append(r.cpu().numpy())
            sc.append(s.cpu().numpy())
        res_all, sc_all = np.concatenate(res), np.concatenate(sc)
        results, k = [], 0
        for grid, t, name in prepared:
            n = len(t)
            maps, scores = res_all[k:k + n], sc_all[k:k + n]
            k += n
            _check_finite(maps, scores, name)
            _, rows = BandBlender(grid, self.options.window_floor).add(range(grid.n_rows), maps)
            amap, stats = np.empty((grid.height, grid.width), np.float32), _MapStats()
            for y, block in smooth_stream([(0, rows)], grid.height, self.options.map_sigma):
                amap[y:y + block.shape[0]] = block
                stats.add(block)
            results.append(self._in_memory_result(amap, scores.reshape(grid.n_rows, grid.n_cols), stats))
        return results

    def score_to_files(self, path: str | Path, out_dir: str | Path, stem: str | None = None,
                       overwrite: bool = False) -> ScoreResult:
        """Score an image file by streaming; write <stem>.map.tif, .overlay.png and .json in out_dir (main process)."""
        import time

        t_start = time.perf_counter()
        clock = self.clock = self._new_clock()
        path, out_dir = Path(path), Path(out_dir)
        ensure_writable(out_dir)
        outs = output_paths(out_dir, stem or path.stem)
        check_outputs(outs, overwrite)
        with open_image(path) as src:
            self._check_source(src)
            h, w = src.shape
            grid = self.grid_for(h, w)
            tile_scores = np.zeros((grid.n_rows, grid.n_cols), dtype=np.float32)
            stats = _MapStats()
            f = overlay_factor(h, w, self.options.overlay_max_side)
            views = (Downscaler(w, f, "mean"), Downscaler(w, f, "max"))
            with _maybe_progress(self._progress(grid, path.name)) as bar:
                kept: list[tuple[int, np.ndarray]] | None = [] if self.is_main and h * w * 4 <= IN_MEMORY_MAP_BYTES else None
                blocks = (_kept(kept, first, rows) for first, rows in self._stream(src, grid, tile_scores, stats, views, bar))
                with clock("write"):  # the map TIFF's encoding and writing, exclusive of the stages it pulls through
                    if self.is_main:
                        write_map(outs["map"], h, w, blocks)
                    else:
                        for _ in blocks:
                            pass
        release_freed_memory()  # the last band's buffers, before the region pass and the report
        st = stats.as_dict()
        th = self._thresholds(st)
        score = self.image_score(tile_scores, st)
        result = ScoreResult(score, self._verdict(score, th), None, [], th, (h, w), tile_scores, st)
        if self.is_main:
            with clock("regions"):
                map_rows = kept if kept is not None else read_map_rows(outs["map"], REGION_BAND_ROWS)  # exact either way
                result.regions = find_regions(map_rows, th["pixel"], self.options.min_region_area)
                del kept, map_rows
            with clock("overlay"):
                write_overlay(outs["overlay"], render_overlay(views[0].result(), views[1].result(), result.regions, f, th["pixel"]))
            result.map_path, result.overlay_path, result.report_path = outs["map"], outs["overlay"], outs["json"]
            report = result.report(str(path))
            report["model"] = self.name
            if self.model_sha256 is not None:
                report["model_sha256"] = self.model_sha256
            report["search"] = self.options.search.to_dict()
            report["map_settings"] = self.map_settings()
            report["tiling"] = {"tile": self.tile, "stride": self.stride, "window_floor": self.options.window_floor}
            report["overlay"] = {"file": outs["overlay"].name, "downscale": f}
            wall = time.perf_counter() - t_start
            report["timing"] = self.timing = self._timing(h, w, wall)  # up to here: the report's own write is not in it
            write_json(outs["json"], report)
        else:
            self.timing = self._timing(h, w, time.perf_counter() - t_start)
        self._barrier()
        return result


def _kept(kept: list | None, first: int, rows: np.ndarray) -> np.ndarray:
    if kept is not None:
        kept.append((first, rows))
    return rows


MODEL_FILE = "model.safetensors"  # what a model folder (run folder, Hub repo) holds
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def resolve_pretrained(ref: str | Path, revision: str | None = None, cache_dir: str | Path | None = None) -> tuple[Path, str]:
    """(model file, name for messages) for a model file, a folder holding model.safetensors, or a Hub repo id."""
    text = str(ref)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise ModelError(f"{path}: folder holds no {MODEL_FILE}; pass the model file itself, or the folder `nsgan train` "
                             "wrote it into")
        return path / MODEL_FILE, str(path / MODEL_FILE)
    if path.is_file():
        return path, text
    local = isinstance(ref, Path) or text.endswith(".safetensors") or path.is_absolute() or text.startswith((".", "~")) \
        or "\\" in text or text.count("/") > 1
    if local or not _REPO_ID.fullmatch(text):
        raise ModelError(f"{text}: no such model file or folder")
    return _hub_download(text, revision, cache_dir), text


def _hub_download(repo_id: str, revision: str | None, cache_dir: str | Path | None) -> Path:
    """model.safetensors (and README.md, the card, if there is one) of a Hub model repo, from the cache or the Hub."""
    try:
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.utils import (
            EntryNotFoundError,
            HFValidationError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise ModelError(f"{repo_id}: no such model file or folder; loading from the Hugging Face Hub needs huggingface_hub "
                         "(pip install huggingface_hub)") from None
    from nsgan import __version__

    not_local = f"{repo_id}: no such model file or folder"
    get = dict(revision=revision, cache_dir=str(cache_dir) if cache_dir is not None else None, library_name="nsgan", library_version=__version__)
    try:
        path = hf_hub_download(repo_id, MODEL_FILE, **get)
    except LocalEntryNotFoundError:
        cache = cache_dir or constants.HF_HUB_CACHE
        how = ("offline mode (HF_HUB_OFFLINE) is on" if constants.HF_HUB_OFFLINE else "the Hugging Face Hub could not be reached")
        raise ModelError(f"{not_local}, and as a Hub repo id it is not in the Hugging Face cache {cache} while {how}; "
                         "download it once online, or point HF_HUB_CACHE at a cache that holds it") from None
    except RevisionNotFoundError:
        raise ModelError(f"{repo_id}: the Hugging Face Hub repo has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise ModelError(f"{not_local}, and no such model repo on the Hugging Face Hub (or it is private: log in with "
                         "`hf auth login`)") from None
    except EntryNotFoundError:
        raise ModelError(f"{repo_id}: the Hugging Face Hub repo holds no {MODEL_FILE}") from None
    except HFValidationError:
        raise ModelError(f"{not_local}, and not a valid Hugging Face Hub repo id") from None
    except OSError as exc:  # network errors, HTTP errors, a cache that cannot be written
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{not_local}, and as a Hub repo id its {MODEL_FILE} cannot be fetched ({first})") from None
    try:  # the model card travels with it into the cache (the Hub shows it); a repo without one still loads
        hf_hub_download(repo_id, "README.md", **get)
    except (EntryNotFoundError, OSError, ValueError):
        pass
    return Path(path)


class _maybe_progress:
    """Context for an optional (Progress, task) pair; yields it (or None) and updates the rate text."""

    def __init__(self, pair):
        self.pair = pair

    def __enter__(self):
        if self.pair is None:
            return None
        prog, task = self.pair
        prog.start()
        class _Bar:
            def advance(self, n):
                prog.advance(task, n)
                speed = prog.tasks[0].speed
                prog.update(task, rate=f"{speed:.1f} tiles/s" if speed else "")

        return _Bar()

    def __exit__(self, *exc):
        if self.pair is not None:
            self.pair[0].stop()


def output_paths(out_dir: Path, stem: str) -> dict[str, Path]:
    return {"map": out_dir / f"{stem}.map.tif", "overlay": out_dir / f"{stem}.overlay.png", "json": out_dir / f"{stem}.json"}


def check_outputs(outs: dict[str, Path], overwrite: bool) -> None:
    if overwrite:
        return
    for p in outs.values():
        if p.exists():
            raise OutputError(f"{p}: exists (use --overwrite to replace it)")


def ensure_writable(out_dir: Path) -> None:
    """Create out_dir and prove a file can be written there, before any long work starts."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".nsgan-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{out_dir}: output folder is not writable ({exc.strerror or exc})") from None


def resolve_inputs(path: str | Path) -> list[tuple[Path, str]]:
    """(image, output stem) pairs for one image, a folder (recursive; sub-folders kept in the stem) or a .txt list."""
    path = Path(path)
    if path.is_dir():
        images = list_images(path)
        if not images:
            raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        pairs = [(p, str(p.relative_to(path).with_suffix("")).replace(os.sep, "__")) for p in images]
    elif path.suffix.lower() == ".txt":
        if not path.is_file():
            raise DataError(f"{path}: no such list file")
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        items = [Path(ln) if Path(ln).is_absolute() else path.parent / ln for ln in lines if ln and not ln.startswith("#")]
        if not items:
            raise DataError(f"{path}: the list file names no images")
        pairs = [(p, p.stem) for p in items]
    else:
        if not path.is_file():
            raise DataError(f"{path}: no such image, folder or list file")
        pairs = [(path, path.stem)]
    stems: dict[str, Path] = {}
    for p, s in pairs:  # a.png and a.tif, or x__y.png and x/y.png, would write the same <stem>.* outputs
        if s in stems:
            raise DataError(f"{path}: {stems[s]} and {p} would write the same outputs ({s}.*); "
                            "rename one or score them into different --out folders")
        stems[s] = p
    return pairs



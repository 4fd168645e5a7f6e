"""Scoring full-size images: the Scorer, a frozen model plus options, composing the scoring pipeline's parts.

    options.resolve_options   `auto` resolved for the model, checked against what the model holds
    loading                   the model file: a path, a folder or a Hugging Face Hub repo id; its sha256
    tiles                     network outputs per batch of tiles (torch, or a per-tile network such as ONNX),
                              dealt out over the processes
    assembly                  blending, smoothing and map stats, band by band
    postprocess               thresholds, regions, image score and verdict
    reports                   the overlay, the JSON report and its timing

`score`, `score_many` / `score_all` and `score_to_files` differ only in how tiles reach the runner
(an image's bands, the tiles of several small images sharing batches, a file streamed to disk);
assembly and post-processing are the same for all. With several processes (accelerate), a band's
batches are dealt out round-robin and gathered back in order, so N processes write the same map as one.

Python API: `Scorer.from_file("model.safetensors").score(array_or_path) -> ScoreResult`;
`Scorer.from_pretrained(file, folder or Hub repo id)` loads the same way from a run folder or the Hub.
CLI: `nsgan score --model M --image PATH --out DIR` and `accelerate launch launch/score.py`.
With `--onnx m.onnx` (from `nsgan export-onnx`) instead of `--model`, ONNX Runtime makes the per-tile
network call and everything else stays the same (`nsgan.share.onnx_export.scorer_from_onnx`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nsgan.common.errors import ConfigError, DataError
from nsgan.common.outputs import check_outputs, ensure_writable, output_paths
from nsgan.common.stopwatch import StageClock
from nsgan.data.bigimage import ArraySource, open_image, read_map_rows, release_freed_memory, write_map
from nsgan.data.tiling import TileGrid, cut_tiles, read_padded_rows
from nsgan.models.model_file import load_model
from nsgan.score.assembly import MapAssembly, stream_rows
from nsgan.score.choices import Residual
from nsgan.score.loading import file_sha256, resolve_pretrained
from nsgan.score.options import ScoreOptions, resolve_options
from nsgan.score.postprocess import Calibration, PostProcessor
from nsgan.score.progress import TileProgress
from nsgan.score.reports import (
    Downscaler,
    file_report,
    overlay_factor,
    render_overlay,
    timing_record,
    write_json,
    write_overlay,
)
from nsgan.score.result import ScoreResult
from nsgan.score.search import LatentSearch
from nsgan.score.tiles import NetworkTiles, Processes, TorchTiles, check_finite, run_batches

__all__ = ["Scorer", "ScoreResult"]

REGION_BAND_ROWS = 64  # map rows labelled at a time in the region pass (bounds its memory)
IN_MEMORY_MAP_BYTES = 64 << 20  # a map up to this size is kept for the region pass instead of read back from its TIFF


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
        comparator_digest: str | None = None,
    ):
        """`network`: instead of G, D (and E), a per-tile call tiles (N, C, T, T) in [0, 1] -> (residual maps,
        tile scores) as numpy arrays, computing encoder mode (an exported ONNX file: `nsgan.share.onnx_export.scorer_from_onnx`); G and D are
        then None. Tiling, blending, smoothing, regions and reports are the same either way.
        `comparator`: the model's C (nsgan/models/comparator.py), for residual `comparator` (and `auto` where
        that resolves to it); run on each tile right after E and G, in the same pass. `comparator_digest`:
        its digest, recorded with the map settings (a network names its own)."""
        has_c = comparator is not None or (network is not None and getattr(network, "has_comparator", False))
        calibration = Calibration.from_dict(thresholds)
        self.options = resolve_options(options, name=name, has_encoder=encoder is not None, has_comparator=has_c,
                                       network=network, calibrated_tta=(calibration.map or {}).get("tta"))
        self.tile, self.channels = int(resolution), int(channels)
        self.stride = self.options.stride or self.tile
        if self.stride > self.tile:
            raise ConfigError(f"stride: {self.stride} is larger than the tile ({self.tile})")
        self.accelerator = accelerator
        self.processes = Processes(accelerator)
        if device is None:
            device = accelerator.device if accelerator is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        self.network = network
        uses_c = comparator is not None and self.options.residual == Residual.COMPARATOR
        self.comparator = comparator.to(self.device).eval() if uses_c else None
        if network is not None:
            self.search = None
            self.tiles = NetworkTiles(network, self.device, self.options.tta)
            comparator_digest = getattr(network, "comparator_digest", None)
        else:
            self.search = LatentSearch(generator.to(self.device), discriminator.to(self.device), self.options.search,
                                       encoder=encoder.to(self.device) if encoder is not None else None)
            self.tiles = TorchTiles(self.search, self.options, self.device, self.comparator)
        self.post = PostProcessor(self.options, self.stride, calibration, comparator_digest)
        self.progress = progress
        self.name = name
        self.model_path: Path | None = None  # set by from_file; the reports then name the file's sha256
        self._sha256: str | None = None
        self.backend = self.tiles.backend  # for the reports' timing
        self.clock = StageClock()  # per image: where the time went (score_to_files resets it)
        self.timing: dict[str, Any] | None = None  # the last score_to_files' timing (also in its report)

    # -- the model ---------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, options: ScoreOptions | None = None, **kwargs) -> "Scorer":
        """Load an exported model (ModelError if missing/corrupt) and wrap it for scoring."""
        m = load_model(path)
        kwargs.setdefault("name", str(path))
        kwargs.setdefault("comparator_digest", (m.meta.get("comparator") or {}).get("digest"))
        scorer = cls(m.generator, m.discriminator, resolution=m.resolution, channels=m.channels,
                     thresholds=m.thresholds, options=options, encoder=m.encoder, comparator=m.comparator, **kwargs)
        scorer.model_path = Path(path)
        return scorer

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

    @property
    def model_sha256(self) -> str | None:
        """sha256 of the model file (hashed once, when first asked; None for networks given directly)."""
        if self._sha256 is None and self.model_path is not None:
            try:
                self._sha256 = file_sha256(self.model_path)
            except OSError:
                return None
        return self._sha256

    @property
    def thresholds(self) -> dict[str, Any]:
        """The model's calibration entry as stored (empty when uncalibrated); assigning one replaces it."""
        return self.post.calibration.to_dict()

    @thresholds.setter
    def thresholds(self, entry: dict[str, Any] | None) -> None:
        self.post.calibration = Calibration.from_dict(entry)

    @property
    def calibration(self) -> Calibration:
        return self.post.calibration

    def map_settings(self) -> dict[str, Any]:
        """What the map and the image score depend on besides the search (recorded with thresholds)."""
        return self.post.map_settings()

    def calibration_mismatch(self) -> str | None:
        """What differs between the model's calibration and these scoring settings (None: nothing, or uncalibrated)."""
        return self.post.calibration_mismatch()

    # -- processes ---------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self.processes.rank

    @property
    def world(self) -> int:
        return self.processes.world

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- scoring -----------------------------------------------------------------------------
    def grid_for(self, height: int, width: int) -> TileGrid:
        return TileGrid(height, width, self.tile, self.stride)

    def tile_outputs(self, tiles: np.ndarray, tile_ids) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual maps (N, T, T) and tile scores (N,) of tiles (N, C, T, T) in [0, 1]: the per-tile call
        every image's map is blended from (torch or the network, whichever this scorer runs)."""
        return self.tiles(tiles, tile_ids)

    def _open(self, image):
        """The image's source (a file, or an array in memory), its channels checked against the model's."""
        src = open_image(image) if isinstance(image, (str, Path)) else ArraySource(image)
        if src.channels != self.channels:
            with src:
                raise DataError(f"{src.name}: image has {src.channels} channel(s), the model expects {self.channels}")
        return src

    def _bar(self, grid: TileGrid, label: str) -> TileProgress:
        return TileProgress(label, grid.n_tiles, self.progress and self.is_main)

    def _conclude(self, assembly: MapAssembly, amap: np.ndarray) -> ScoreResult:
        result, _ = self.post.conclude(assembly.tile_scores, assembly.stats.as_dict(), amap.shape, amap)
        return result

    def score(self, image: np.ndarray | str | Path) -> ScoreResult:
        """Score an array (H, W[, C]) in [0, 1] or uint8/16, or an image file, fully in memory."""
        with self._open(image) as src:
            grid = self.grid_for(*src.shape)
            assembly = MapAssembly(grid, self.options, clock=self.clock)
            amap = np.empty((grid.height, grid.width), dtype=np.float32)
            with self._bar(grid, Path(src.name).name) as bar:
                for first, rows in stream_rows(src, grid, self.tiles, self.processes, assembly, self.options, bar):
                    amap[first : first + rows.shape[0]] = rows
        return self._conclude(assembly, amap)

    def score_all(self, images) -> Iterator[ScoreResult]:
        """Results for many images (paths or arrays), in order: images smaller than one search batch
        of tiles are gathered into shared batches (score_many), larger ones are scored alone."""
        group: list[np.ndarray] = []
        tiles = 0
        for image in images:
            with self._open(image) as src:
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
        prepared = [self._whole_tiles(image) for image in images]
        if not prepared:
            return []
        tiles = np.concatenate([t for _, t, _ in prepared])
        ids = np.concatenate([np.arange(len(t)) for _, t, _ in prepared])
        res_all, sc_all = run_batches(self.tiles, tiles, ids, self.options.batch)
        results, k = [], 0
        for grid, t, name in prepared:
            maps, scores = res_all[k:k + len(t)], sc_all[k:k + len(t)]
            k += len(t)
            check_finite(maps, scores, name)
            assembly = MapAssembly(grid, self.options)
            results.append(self._conclude(assembly, assembly.whole(maps, scores)))
        return results

    def _whole_tiles(self, image) -> tuple[TileGrid, np.ndarray, str]:
        """(grid, all its tiles, name) of an image read whole."""
        with self._open(image) as src:
            h, w = src.shape
            grid = self.grid_for(h, w)
            img = read_padded_rows(lambda a, b: src.read(a, b), h, w, 0, int(grid.ys[-1]) + grid.tile,
                                   int(grid.xs[-1]) + grid.tile)
            return grid, cut_tiles(img, 0, grid, range(grid.n_rows)), src.name

    def score_to_files(self, path: str | Path, out_dir: str | Path, stem: str | None = None,
                       overwrite: bool = False) -> ScoreResult:
        """Score an image file by streaming; write <stem>.map.tif, .overlay.png and .json in out_dir (main process)."""
        t_start = time.perf_counter()
        clock = self.clock = self._new_clock()
        path, out_dir = Path(path), Path(out_dir)
        ensure_writable(out_dir)
        outs = output_paths(out_dir, stem or path.stem)
        check_outputs(outs, overwrite)
        with self._open(path) as src:
            h, w = src.shape
            grid = self.grid_for(h, w)
            f = overlay_factor(h, w, self.options.overlay_max_side)
            views = (Downscaler(w, f, "mean"), Downscaler(w, f, "max"))
            assembly = MapAssembly(grid, self.options, views, clock)
            with self._bar(grid, path.name) as bar:
                kept: list[tuple[int, np.ndarray]] | None = [] if self.is_main and h * w * 4 <= IN_MEMORY_MAP_BYTES else None
                rows = stream_rows(src, grid, self.tiles, self.processes, assembly, self.options, bar)
                blocks = (_kept(kept, first, block) for first, block in rows)
                with clock("write"):  # the map TIFF's encoding and writing, exclusive of the stages it pulls through
                    if self.is_main:
                        write_map(outs["map"], h, w, blocks)
                    else:
                        for _ in blocks:
                            pass
        release_freed_memory()  # the last band's buffers, before the region pass and the report
        result, th = self.post.conclude(assembly.tile_scores, assembly.stats.as_dict(), (h, w))
        if self.is_main:
            with clock("regions"):
                map_rows = kept if kept is not None else read_map_rows(outs["map"], REGION_BAND_ROWS)  # exact either way
                result.regions = self.post.regions(map_rows, th)
                del kept, map_rows
            with clock("overlay"):
                write_overlay(outs["overlay"], render_overlay(views[0].result(), views[1].result(), result.regions, f, th.pixel))
            result.map_path, result.overlay_path, result.report_path = outs["map"], outs["overlay"], outs["json"]
            report = file_report(result, str(path), self._settings_record(), {"file": outs["overlay"].name, "downscale": f})
            report["timing"] = self.timing = self._timing(h, w, t_start)  # up to here: the report's own write is not in it
            write_json(outs["json"], report)
        else:
            self.timing = self._timing(h, w, t_start)
        self.processes.barrier()
        return result

    def _settings_record(self) -> dict[str, Any]:
        """What a report says this image was scored with: the model, search, map settings and tiling."""
        record: dict[str, Any] = {"model": self.name}
        if self.model_sha256 is not None:
            record["model_sha256"] = self.model_sha256
        record["search"] = self.options.search.to_dict()
        record["map_settings"] = self.map_settings()
        record["tiling"] = {"tile": self.tile, "stride": self.stride, "window_floor": self.options.window_floor}
        return record

    def _new_clock(self) -> StageClock:
        sync = torch.cuda.synchronize if self.device.type == "cuda" else None  # charge GPU work to the stage that queued it
        return StageClock(sync=sync)

    def _timing(self, height: int, width: int, t_start: float) -> dict[str, Any]:
        return timing_record(self.clock, height, width, time.perf_counter() - t_start, self.backend, self.device)


def _kept(kept: list | None, first: int, rows: np.ndarray) -> np.ndarray:
    if kept is not None:
        kept.append((first, rows))
    return rows

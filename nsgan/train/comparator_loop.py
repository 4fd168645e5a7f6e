"""Training the comparator C after the encoder: G, D and E frozen, on Accelerate (issue 20).

Runs as the last phase of `nsgan train` (config key `comparator.kimg`) or on its own for an existing
model file (`nsgan train-comparator --model M`, `accelerate launch launch/train_comparator.py`), with
the encoder phase's promises (the loop of nsgan/train/phase_runner.py): every rank streams its own share of
the normal shards, the state (C, Adam, stream positions, the painter's generator) is saved
atomically every `comparator.checkpoint_kimg` and `--resume` continues exactly, metrics go to
`metrics.jsonl` and TensorBoard (run `comparator`), grids of x | reference | C's map | target mask to
`samples/`. Everything lives in `RUN/comparator/` by default; the trained C goes into the model file
(`C.*` tensors) with the digest of the G and E it was trained for.

What a step shows C is nsgan/train/comparator_data.py; the loss is nsgan/models/comparator_loss.py:
the pixel loss (+ Dice) on painted, plain and masked labelled tiles; the multiple-instance loss on
each image-labelled bag (its top-k pixels must fire) and on each plain normal tile (its must not).

`exclude_sources` (the cross-fitted audit, nsgan/train/fold_comparator.py): normal tiles of those
source images are never drawn; the sources actually drawn are kept with the state and written to
`RUN/comparator/sources_seen.json` at the end, the record that C never saw the held-out images.

`comparator.denoise: exclude` (nsgan/train/denoise.py): before C, fold comparators trained here on the
other folds' normal images score each held-out fold; the images above the robust-z threshold are left
out of C's normal side the same way, and the model file's comparator metadata (`denoise`) says which.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from nsgan.common.atomic import atomic_write_text
from nsgan.common.errors import ConfigError, OutputError
from nsgan.data.folds import SOURCES_SEEN  # in the comparator run folder, for a run with exclude_sources
from nsgan.data.labelled import read_labelled, shard_bit_depth
from nsgan.data.stream import ShardStream
from nsgan.models.comparator import Comparator, flops_per_tile
from nsgan.models.comparator_loss import ComparatorLoss
from nsgan.models.model_file import add_comparator, basis_digest
from nsgan.share.card import refresh_card
from nsgan.train.common import BatchTaker, average_gradients
from nsgan.train.comparator_data import ComparatorBatches, comparator_spec, synthetic_defects
from nsgan.train.config import TrainConfig
from nsgan.train.denoise import DENOISE, denoise_normals, started, wants_denoise
from nsgan.train.phase_runner import FixedLengthPhase, StopAtStepBoundary, run_phase
from nsgan.train.phase_state import NetworkState, check_phase_run_dir, has_state
from nsgan.train.samples import image_grid, write_grid
from nsgan.train.tracking import log_grid

PROBE_TILES = 16
STATE = NetworkState("comparator", "C", "basis_digest", "generator/encoder")


class ComparatorTrainer(FixedLengthPhase):
    """C, its optimizer, loss and batches on one process (a runner Phase)."""

    grid_prefix = "cmp"

    def __init__(self, cfg: TrainConfig, generator: torch.nn.Module, encoder: torch.nn.Module | None, run_dir: Path,
                 accelerator: Any, normal_shards: list[str], labelled: Any, channels: int, resume: bool = False,
                 bit_depth: int = 8, exclude_sources: frozenset[str] = frozenset()):
        c = cfg.comparator
        self.bind(cfg, "comparator", run_dir, accelerator, resume)
        self.G = generator.to(self.device).eval().requires_grad_(False)
        self.E = encoder.to(self.device).eval().requires_grad_(False) if encoder is not None else None
        if c.reference == "reconstruction" and self.E is None:
            raise ConfigError("key 'comparator.reference' is reconstruction but the model holds no encoder; train one with "
                              "`nsgan train-encoder` first, or choose comparator.reference blur or none")
        self.basis = basis_digest(self.G, self.E)
        torch.manual_seed(cfg.seed + 5353)  # the same initial C on every rank
        self.C = Comparator(comparator_spec(cfg, channels)).to(self.device)
        self.opt = torch.optim.Adam(self.C.parameters(), lr=c.lr, betas=(0.9, 0.99), eps=1e-8)
        self.loss = ComparatorLoss(c.loss, focal_gamma=c.focal_gamma, alpha=c.alpha, dice_weight=c.dice_weight,
                                   mil_k=c.mil_k, mil_weight=c.mil_weight)
        self.normal_shards, self.channels, self.labelled, self.bit_depth = normal_shards, channels, labelled, bit_depth
        self.exclude = frozenset(exclude_sources)
        position, rng_state, self.skipped_before, seen = None, None, 0, None
        if resume:
            position, rng_state, seen = self._load_latest()
        self.batches = ComparatorBatches(cfg, self.G, self.E, normal_shards, labelled, channels, self.rank, self.world,
                                         self.device, bf16=accelerator.mixed_precision == "bf16", position=position,
                                         rng_state=rng_state, bit_depth=bit_depth, exclude=self.exclude, seen=seen)
        self.probe = self._probe() if self.is_main else None

    # -- state ------------------------------------------------------------------------------
    def _load_latest(self) -> tuple[dict, dict, list[str] | None]:
        self.progress, mine = STATE.load(self, self.C, self.opt, self.basis)
        self.skipped_before = int(mine["skipped"])
        if sorted(self.exclude) != sorted(mine.get("exclude", [])):
            raise ConfigError(f"{self.layout.root}: this comparator run held out other images; use a new run folder")
        return mine["normal"], mine["rng"], mine.get("seen")

    def save_checkpoint(self) -> None:
        mine = {"normal": self.batches.stream.position, "skipped": self.skipped_before + self.batches.stream.skipped,
                "rng": self.batches.rng_state()}
        if self.exclude:
            mine.update(exclude=sorted(self.exclude), seen=sorted(self.batches.seen or ()))
        STATE.save(self, self.C, self.opt, mine, self.basis)

    # -- one step ---------------------------------------------------------------------------
    def losses(self, b) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one ComparatorBatch: pixel (+ Dice) on the pixel tiles, MIL on bags and plain normals."""
        logits = self.C(b.x, b.rec)
        loss, stats = self.loss(logits[:b.n_pixel], b.target)
        stats = {k: v for k, v in stats.items() if math.isfinite(v)}  # p_defect of a batch without a defect is undefined
        if b.bags:
            mil = self.loss.mil_term(logits, b.bags, b.plain)
            loss = loss + mil
            stats["loss_mil"] = float(mil.detach())
        stats["loss_c"] = float(loss.detach())
        return loss, stats

    def step(self) -> dict[str, float]:
        b = self.batches.draw()
        loss, stats = self.losses(b)
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        if self.world > 1:
            average_gradients(self.C)
        self.opt.step()
        return stats

    # -- what the phase runner asks besides the above -----------------------------------------------
    def metrics_row(self, img_s: float) -> dict[str, Any]:
        seen = self.progress.images_seen
        return {"images_seen": seen, "kimg": round(seen / 1000, 3), "step": self.progress.step,
                "stage": "comparator", "resolution": self.cfg.model.resolution, "batch": self.batch * self.world,
                "lr": self.cfg.comparator.lr, "img_s": img_s, "skipped_normal": self.skipped_before + self.batches.stream.skipped,
                "time_s": round(self.progress.seconds, 2)}

    def trained(self) -> list[torch.nn.Module]:
        return [self.C]

    # -- pictures ---------------------------------------------------------------------------
    def _probe(self) -> dict[str, torch.Tensor]:
        """Fixed painted tiles (their own stream and generator) whose maps show progress."""
        s = ShardStream(self.normal_shards, tile=self.cfg.model.resolution, channels=self.channels, batch=PROBE_TILES,
                        seed=self.cfg.seed + 99, rank=0, world=1, num_workers=0, exclude=self.exclude)
        unit = (BatchTaker(s).take(PROBE_TILES, torch.device("cpu")).numpy() + 1.0) * 0.5
        masks = np.zeros((PROBE_TILES, 1, *unit.shape[2:]), bool)
        if self.cfg.comparator.kinds or self.cfg.comparator.blob:
            half = PROBE_TILES // 2  # half painted, half plain
            painted, m, _ = synthetic_defects(self.cfg, self.bit_depth).apply(unit[:half], np.random.default_rng(self.cfg.seed + 99))
            unit[:half], masks[:half] = painted, m
        return {"x": torch.from_numpy(unit.astype(np.float32)) * 2.0 - 1.0, "mask": torch.from_numpy(masks).float()}

    @torch.no_grad()
    def save_grid(self, name: str) -> Path:
        """Rows of x | reference (G(E(x)), blur(x) or x) | sigmoid(C) | target mask; also to the trackers."""
        x = self.probe["x"].to(self.device)
        ref = self.batches.reconstruct(x) if self.E is not None and self.C.needs_reconstruction else None
        self.C.eval()
        p = torch.sigmoid(self.C(x, ref)).float()
        self.C.train()
        shown = ref if ref is not None else (self.C.blur(x) if self.C.spec.reference == "blur" else x)
        ch = x.shape[1]
        cells = torch.stack([x.float(), shown.float(), (p * 2 - 1).expand(-1, ch, -1, -1),
                             (self.probe["mask"].to(self.device) * 2 - 1).expand(-1, ch, -1, -1)], dim=1).flatten(0, 1).cpu()
        grid = image_grid(cells, 8)
        log_grid(self.acc, "comparator", grid, self.progress.images_seen)
        return write_grid(grid, self.layout.samples / name)


def reconstruction_flops(generator: torch.nn.Module, encoder: torch.nn.Module | None, channels: int, tile: int,
                         device: torch.device) -> float | None:
    """FLOPs of G(E(x)) for one tile (torch's FlopCounterMode, one forward pass); None without E."""
    if encoder is None:
        return None
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        generator(encoder(torch.zeros(1, channels, tile, tile, device=device)))
    return float(counter.get_total_flops())


def check_comparator_run_dir(run_dir: Path, resume: bool) -> None:
    """As every phase's (phase_state.check_phase_run_dir), counting a denoise begun before C as the run's state."""
    run_dir = Path(run_dir)
    if started(run_dir) and not has_state(run_dir):
        if not resume:
            raise OutputError(f"{run_dir}: already holds a comparator run (its {DENOISE}/ folds); pass --resume to continue "
                              "it or choose another folder")
        return
    check_phase_run_dir(run_dir, resume, "comparator")


def load_labelled(cfg: TrainConfig, abnormal_shards: list[str], channels: int):
    """The labelled set C trains on (None when nothing labelled is used)."""
    c = cfg.comparator
    if not abnormal_shards or (c.labelled_fraction == 0 and c.mil_bags == 0):
        return None
    return read_labelled(abnormal_shards, cfg.model.resolution, channels, c.max_labelled_tiles)


def train_comparator(cfg: TrainConfig, generator: torch.nn.Module, encoder: torch.nn.Module | None, model_path: Path,
                     run_dir: Path, accelerator: Any, normal_shards: list[str], abnormal_shards: list[str], channels: int,
                     resume: bool = False, stop: StopAtStepBoundary | None = None,
                     exclude_sources: frozenset[str] = frozenset()) -> Path:
    """Train C to `comparator.kimg` beside the frozen G and E, then write it into `model_path` (main process).

    `stop`: the Ctrl-C handler of a run that spans several phases (None: the runner's own, for this phase).
    `exclude_sources`: source images whose normal tiles C must not see (module docstring)."""
    run_dir = Path(run_dir)
    check_comparator_run_dir(run_dir, resume and (has_state(run_dir) or started(run_dir)))
    denoised = None
    if wants_denoise(cfg) and not exclude_sources:  # a fold comparator (exclude_sources given) is not denoised again
        def train_fold(fcfg: TrainConfig, fold_model: Path, fold_run: Path, held: frozenset) -> Path:
            return train_comparator(fcfg, generator, encoder, fold_model, fold_run, accelerator, normal_shards,
                                    abnormal_shards, channels, resume=has_state(fold_run), stop=stop, exclude_sources=held)

        denoised = denoise_normals(cfg, normal_shards, run_dir, Path(model_path), basis_digest(generator, encoder), train_fold,
                                   is_main=accelerator.is_main_process, wait=accelerator.wait_for_everyone)
        exclude_sources = denoised.excluded
    resume = resume and has_state(run_dir)  # `nsgan train --resume` may reach the comparator for the first time
    labelled = load_labelled(cfg, abnormal_shards, channels)
    tr = ComparatorTrainer(cfg, generator, encoder, run_dir, accelerator, normal_shards, labelled, channels, resume=resume,
                           bit_depth=shard_bit_depth(normal_shards), exclude_sources=exclude_sources)
    spec, tile = tr.C.spec, cfg.model.resolution
    c_flops, eg_flops = flops_per_tile(spec, tile), None
    if tr.is_main:
        eg_flops = reconstruction_flops(tr.G, tr.E, channels, tile, tr.device)
        if eg_flops and c_flops > 2 * eg_flops:
            print(f"nsgan train-comparator: warning: C costs {c_flops / 1e9:.3g} GFLOP per tile, {c_flops / eg_flops:.1f}× E + G "
                  f"({eg_flops / 1e9:.3g}); lower comparator.width or the number of comparator.dilations", flush=True)
    accelerator.wait_for_everyone()
    c = cfg.comparator
    digest = run_phase(tr, stop)[0]
    if tr.is_main:
        tr.save_grid("cmp-final.png")
        if tr.exclude:  # one rank's record: the audit trains its fold models in one process
            atomic_write_text(run_dir / SOURCES_SEEN, json.dumps({"held_out": sorted(tr.exclude),
                                                                  "seen": sorted(tr.batches.seen or ())}, indent=1) + "\n")
        seen = tr.progress.images_seen
        add_comparator(model_path, tr.C, {
            "images_seen": seen, "kimg": seen / 1000, "config": cfg.to_dict()["comparator"],
            # what C trained on: the model's stored config may be another run's (comparator_training_config)
            "data": {"normal": cfg.data.normal, "abnormal": cfg.data.abnormal}, "seed": cfg.seed,
            "world_size": tr.world, "train_seconds": round(tr.progress.seconds, 2), "digest": digest, "basis_digest": tr.basis,
            "receptive_field": spec.receptive_field, "flops_per_tile": c_flops, "reconstruction_flops_per_tile": eg_flops,
            "trained_on": {"kinds": list(c.kinds) if c.paint_fraction > 0 else [], "blob": bool(c.blob and c.paint_fraction > 0),
                           "paint_fraction": c.paint_fraction, "gan_normals": c.gan_normals,
                           "labelled_fraction": c.labelled_fraction if tr.batches.n_masked else 0.0,
                           "mil_bags": tr.batches.n_bags, "labelled": labelled.summary() if labelled is not None else None,
                           **({"held_out_images": len(tr.exclude)} if tr.exclude else {})},
            **({"denoise": denoised.record} if denoised is not None else {})})
        refresh_card(model_path, "train-comparator")
    accelerator.wait_for_everyone()
    return Path(model_path)

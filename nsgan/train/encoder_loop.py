"""Training the f-AnoGAN encoder after the GAN: G and D frozen, normal shards only, on Accelerate.

Runs as the last phase of `nsgan train` (config key `encoder.kimg`) or on its own for an existing
model file (`nsgan train-encoder --model M`, `accelerate launch launch/train_encoder.py`). It keeps
the GAN loop's promises: every rank streams its own share of the shards, the state (E, Adam,
stream positions) is saved atomically every `encoder.checkpoint_kimg` and `--resume` continues
exactly, metrics go to `metrics.jsonl`, reconstruction grids to `samples/` (the loop around the
steps is nsgan/train/phase_runner.py's, as for every phase). Everything lives in the encoder's own
run folder (`RUN/encoder/` by default), and the trained E is written into the model file (`E.*`
tensors) at the end.

Gradients are averaged over processes by one all-reduce per step instead of a DDP wrapper, so the
same loop runs whichever engine (DDP or DeepSpeed) trained the GAN.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nsgan.common.errors import DataError
from nsgan.data.labelled import shard_bit_depth
from nsgan.data.stream import ShardStream
from nsgan.models.encoder import Encoder, izif_loss
from nsgan.models.model_file import add_encoder
from nsgan.share.card import refresh_card
from nsgan.train.common import BatchTaker, average_gradients, short_digest
from nsgan.train.comparator_data import synthetic_defects
from nsgan.train.config import TrainConfig
from nsgan.train.phase_runner import FixedLengthPhase, StopAtStepBoundary, run_phase
from nsgan.train.phase_state import NetworkState, check_phase_run_dir, has_state
from nsgan.train.samples import image_grid, write_grid
from nsgan.train.seeds import ENCODER_LATENTS, ENCODER_PAINTER, rank_generator, rank_seed
from nsgan.train.tracking import log_grid


def encoder_widths(cfg: TrainConfig) -> tuple[int, int]:
    e, m = cfg.encoder, cfg.model
    return (e.fmap_base or m.fmap_base), (e.fmap_max or m.fmap_max)


STATE = NetworkState("encoder", "E", "gan_digest", "generator/discriminator")


class EncoderTrainer(FixedLengthPhase):
    """E, its optimizer, the normal stream and the position of one encoder run on one process (a runner Phase)."""

    grid_prefix = "recon"

    def __init__(self, cfg: TrainConfig, generator: torch.nn.Module, discriminator: torch.nn.Module,
                 run_dir: Path, accelerator: Any, normal_shards: list[str], channels: int, resume: bool = False):
        self.bind(cfg, "encoder", run_dir, accelerator, resume)
        self.G = generator.to(self.device).eval().requires_grad_(False)
        self.D = discriminator.to(self.device).eval().requires_grad_(False)
        base, fmax = encoder_widths(cfg)
        torch.manual_seed(cfg.seed + 4242)  # the same initial E on every rank
        self.E = Encoder(cfg.model.resolution, channels, int(generator.latent_dim), fmap_base=base, fmap_max=fmax).to(self.device)
        self.opt = torch.optim.Adam(self.E.parameters(), lr=cfg.encoder.lr, betas=(0.9, 0.99), eps=1e-8)
        self.latent_gen = rank_generator(cfg.seed, self.rank, ENCODER_LATENTS)  # ziz latents
        self.normal_shards, self.channels = normal_shards, channels
        # encoder.denoise: that share of each batch gets the comparator's painted defects before E (its own generator)
        self.n_paint = int(round(cfg.encoder.denoise * self.batch))
        self.synth = synthetic_defects(cfg, shard_bit_depth(normal_shards)) if self.n_paint else None
        self.painter_rng = np.random.Generator(np.random.PCG64(rank_seed(cfg.seed, self.rank, ENCODER_PAINTER)))
        position = None
        if resume:
            position = self._load_latest()
        self.stream = BatchTaker(ShardStream(normal_shards, tile=cfg.model.resolution, channels=channels, batch=self.batch,
                                             seed=cfg.seed + 7, rank=self.rank, world=self.world,
                                             num_workers=cfg.data.num_workers, position=position))
        self.skipped_before = 0
        self.probe = self._probe_tiles()

    # -- state ------------------------------------------------------------------------------
    def _load_latest(self) -> Any:
        self.progress, mine = STATE.load(self, self.E, self.opt, _digest(self.G, self.D))
        self.skipped_before = int(mine["skipped"])
        self.latent_gen.set_state(torch.tensor(mine["latent_rng"], dtype=torch.uint8))
        if "painter_rng" in mine:
            self.painter_rng.bit_generator.state = mine["painter_rng"]
        return mine["normal"]

    def save_checkpoint(self) -> None:
        mine = {"normal": self.stream.position, "skipped": self.skipped_before + self.stream.skipped,
                "latent_rng": self.latent_gen.get_state().tolist(), "painter_rng": self.painter_rng.bit_generator.state}
        STATE.save(self, self.E, self.opt, mine, _digest(self.G, self.D))

    # -- one step ---------------------------------------------------------------------------
    def _autocast(self):
        if self.acc.mixed_precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()  # fp16 has no loss scaler here: the encoder trains in fp32 then

    def step(self) -> dict[str, float]:
        x = self.stream.take(self.batch, self.device)
        e = self.cfg.encoder
        z = torch.randn(self.batch, self.E.latent_dim, generator=self.latent_gen).to(self.device) if e.ziz > 0 else None
        x_in = self._painted(x) if self.n_paint else None
        with self._autocast():
            loss, stats = izif_loss(self.E, self.G, self.D, x, e.kappa, z=z, ziz=e.ziz, x_in=x_in)
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        if self.world > 1:
            average_gradients(self.E)
        self.opt.step()
        return {k: float(v) for k, v in stats.items()}

    def _painted(self, x: torch.Tensor) -> torch.Tensor:
        """x with the comparator's painted defects on its first n_paint tiles (the denoising encoder's input).

        A tile no defect shows on (flat or saturated material) stays as it was rather than stop the run."""
        unit = ((x[:self.n_paint].detach().float().cpu().numpy() + 1.0) * 0.5).clip(0.0, 1.0)
        out = unit.copy()
        for i in range(unit.shape[0]):
            try:
                out[i] = self.synth.apply(unit[i:i + 1], self.painter_rng)[0][0]
            except DataError:
                pass
        x_in = x.clone()
        x_in[:self.n_paint] = torch.from_numpy(out * 2.0 - 1.0).to(x.device, x.dtype)
        return x_in

    # -- what the phase runner asks besides the above -----------------------------------------------
    def metrics_row(self, img_s: float) -> dict[str, Any]:
        seen = self.progress.images_seen
        return {"images_seen": seen, "kimg": round(seen / 1000, 3), "step": self.progress.step,
                "stage": "encoder", "resolution": self.cfg.model.resolution, "alpha": 1.0, "batch": self.batch * self.world,
                "lr": self.cfg.encoder.lr, "img_s": img_s, "skipped_normal": self.skipped_before + self.stream.skipped,
                "time_s": round(self.progress.seconds, 2)}

    def trained(self) -> list[torch.nn.Module]:
        return [self.E]

    def save_grid(self, name: str) -> Path:
        return self.save_reconstructions(name)

    # -- pictures ---------------------------------------------------------------------------
    def _probe_tiles(self) -> torch.Tensor:
        """A fixed set of normal tiles (its own short stream) whose reconstructions show progress."""
        n = min(self.cfg.train.grid_size ** 2 // 2, 32) or 1
        s = ShardStream(self.normal_shards, tile=self.cfg.model.resolution, channels=self.channels, batch=n,
                        seed=self.cfg.seed + 99, rank=0, world=1, num_workers=0)
        return BatchTaker(s).take(n, torch.device("cpu"))

    @torch.no_grad()
    def save_reconstructions(self, name: str) -> Path:
        """Grid of pairs: each real tile, then G(E(tile)) to its right; also to the trackers at images seen."""
        self.E.eval()
        x = self.probe.to(self.device)
        rec = self.G(self.E(x)).float()
        self.E.train()
        pairs = torch.stack([x.float(), rec], dim=1).flatten(0, 1).cpu()
        cols = 2 * max(1, int(math.sqrt(x.shape[0])))
        grid = image_grid(pairs, cols)
        log_grid(self.acc, "reconstructions", grid, self.progress.images_seen)
        return write_grid(grid, self.layout.samples / name)


def _digest(*modules: torch.nn.Module) -> str:
    return short_digest(*modules)


def check_encoder_run_dir(run_dir: Path, resume: bool) -> None:
    check_phase_run_dir(run_dir, resume, "encoder")


def train_encoder(cfg: TrainConfig, generator: torch.nn.Module, discriminator: torch.nn.Module, model_path: Path,
                  run_dir: Path, accelerator: Any, normal_shards: list[str], channels: int, resume: bool = False,
                  stop: StopAtStepBoundary | None = None) -> Path:
    """Train E to `encoder.kimg`, then write it into `model_path` (main process). Returns model_path.

    `stop`: the Ctrl-C handler of a run that spans several phases (None: the runner's own, for this phase)."""
    run_dir = Path(run_dir)
    resume = resume and has_state(run_dir)  # `nsgan train --resume` may reach the encoder for the first time
    check_encoder_run_dir(run_dir, resume)
    tr = EncoderTrainer(cfg, generator, discriminator, run_dir, accelerator, normal_shards, channels, resume=resume)
    accelerator.wait_for_everyone()
    digest = run_phase(tr, stop)[0]
    if tr.is_main:
        tr.save_grid("recon-final.png")
        seen = tr.progress.images_seen
        add_encoder(model_path, tr.E, {"images_seen": seen, "kimg": seen / 1000,
                                       "config": cfg.to_dict()["encoder"], "world_size": tr.world,
                                       "train_seconds": round(tr.progress.seconds, 2), "digest": digest})
        refresh_card(model_path, "train-encoder")
    accelerator.wait_for_everyone()
    return Path(model_path)

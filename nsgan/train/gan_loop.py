"""The GAN phase on HF Accelerate: one script for CPU, one GPU, N GPUs and N nodes.

Per step (stylegan2-ada style phases): a D step on normal reals, G's fakes and the labelled
abnormal tiles (penalty γ, R1 in the same backward), then a G step, then the EMA of G. Where the
schedule stands is a pure function of images seen, so a resumed run continues at the exact
position; the data streams and latent RNG resume exactly too. `Trainer` holds the networks and
takes one step; `GanPhase` is its face to the loop every phase runs through
(nsgan/train/phase_runner.py), which owns metrics, states, divergence, Ctrl-C and the rank digest.
Only the main process writes files and draws the live display.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate.utils import gather_object

from nsgan import __version__
from nsgan.common.atomic import atomic_write_text
from nsgan.common.errors import ConfigError, OutputError
from nsgan.data.stream import ShardStream
from nsgan.models.augment import AdaptiveP, Augmenter
from nsgan.models.losses import GANLoss, Penalty
from nsgan.models.model_file import save_model
from nsgan.models.networks import Discriminator, Generator, fade_real
from nsgan.share.card import refresh_card
from nsgan.train.checkpoint import find_latest, load_state, save_state, write_json_atomic
from nsgan.train.common import (
    BatchTaker,
    data_summary,
    make_accelerator,
    resolve_data,
    weights_digest,
)
from nsgan.train.config import TrainConfig, config_from_dict
from nsgan.train.engines import engine_for
from nsgan.train.layout import MODEL, RunLayout
from nsgan.train.phase_runner import PhaseInfo, Progress, StopAtStepBoundary, run_phase
from nsgan.train.quality import KIND as QUALITY_KIND
from nsgan.train.quality import QualityProbe, last_quality_row
from nsgan.train.samples import image_grid, write_grid
from nsgan.train.schedule import Phase as SchedulePhase
from nsgan.train.schedule import ScheduleConfig, schedule, total_images
from nsgan.train.seeds import GAN_AUGMENT, GAN_LATENTS, loss_noise_seed, rank_generator
from nsgan.train.tracking import log_grid


ROW_P_DIGITS = 6  # augment_p and augment_rt in metrics rows


# ----------------------------------------------------------------------------- data plumbing


def _batches_for(cfg: TrainConfig) -> list[int]:
    s = cfg.schedule
    return sorted(set(s.batch.values()) | {s.default_batch})


def _abnormal_batch(cfg: TrainConfig, batch: int) -> int:
    return max(1, round(batch * cfg.data.abnormal_fraction))


def stream_chunks(cfg: TrainConfig) -> tuple[int, int]:
    """Chunk sizes for the normal and abnormal streams: divisors of every batch they must fill."""
    batches = _batches_for(cfg)
    normal = reduce(math.gcd, batches)
    abnormal = reduce(math.gcd, [_abnormal_batch(cfg, b) for b in batches])
    return normal, abnormal


# ----------------------------------------------------------------------------- setup


@dataclass
class TrainState(Progress):
    """What moves between steps and into checkpoints, besides the networks and optimizers."""

    skipped_normal: int = 0
    skipped_abnormal: int = 0
    last_phase: dict[str, Any] = field(default_factory=dict)  # phase of the last step taken
    extra: dict[str, Any] = field(default_factory=dict)


def _rank_generator(seed: int, rank: int) -> torch.Generator:
    """This rank's latent generator (tools/bench draws the same latents as the trainer)."""
    return rank_generator(seed, rank, GAN_LATENTS)


def make_augment(cfg: TrainConfig, rank: int) -> tuple[Augmenter | None, AdaptiveP | None]:
    """The augmentation of what D sees and its p controller (None when `augment:` is off), on this rank's own stream."""
    a = cfg.augment
    if not a.active:
        return None, None
    augment = Augmenter(a.policy, a.p, rank_generator(cfg.seed, rank, GAN_AUGMENT), translation=a.translation, cutout=a.cutout, padding=a.padding)
    adaptive = AdaptiveP(a.target, a.speed_kimg, a.p_max, a.adjust_every) if a.adaptive else None
    return augment, adaptive


def _unchanged(x: torch.Tensor, mask: torch.Tensor | None = None):
    """What D sees when `augment:` is off: the batch itself (and its mask)."""
    return x if mask is None else (x, mask)


def sample_latents(gen: torch.Generator, n: int, dim: int, device: torch.device) -> torch.Tensor:
    """Latents drawn on the CPU from a resumable generator, so runs resume exactly anywhere."""
    return torch.randn(n, dim, generator=gen).to(device)


# ----------------------------------------------------------------------------- the trainer


class Trainer:
    """Owns the networks, optimizers, streams and state of one run on one process."""

    def __init__(self, cfg: TrainConfig, source: str, resume: bool = False):
        self.cfg, self.source = cfg, source
        self.run_dir = Path(cfg.run_dir)
        self.layout = RunLayout(self.run_dir)
        self.normal_shards, self.abnormal_shards, self.channels = resolve_data(cfg, source)
        self._check_run_dir(resume)
        self.acc = make_accelerator(cfg, source=source)
        self.engine = engine_for(self.acc)  # DDP or DeepSpeed ZeRO-1/2: wrapping, updates, optimizer state
        self.device = self.acc.device
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.is_main = self.acc.is_main_process

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        m = cfg.model
        self.G = Generator(resolution=m.resolution, channels=self.channels, latent_dim=m.latent_dim, fmap_base=m.fmap_base, fmap_max=m.fmap_max)
        self.D = Discriminator(resolution=m.resolution, channels=self.channels, fmap_base=m.fmap_base, fmap_max=m.fmap_max, mbstd_group=m.mbstd_group,
                               patch_grid=m.patch_grid)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False).to(self.device)
        t = cfg.train
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.schedule.lr, betas=(t.beta1, t.beta2), eps=1e-8)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.schedule.lr, betas=(t.beta1, t.beta2), eps=1e-8)
        self.loss = GANLoss(kind=cfg.loss.kind, gamma=cfg.loss.gamma, r1_gamma=cfg.loss.r1_gamma, gp_lambda=cfg.loss.gp_lambda, drift=cfg.loss.drift,
                            penalty=cfg.loss.penalty, mil_k=cfg.loss.mil_k, r1_every=cfg.loss.r1_every)
        self.state = TrainState()
        torch.manual_seed(loss_noise_seed(cfg.seed, self.rank))  # per-rank stream for in-loss randomness (GP)
        self.latent_gen = _rank_generator(cfg.seed, self.rank)
        self.augment, self.adaptive = make_augment(cfg, self.rank)
        positions: dict[str, Any] = {}
        if resume:
            positions = self._load_latest()
        self.G, self.D, self.opt_G, self.opt_D = self.engine.prepare(self.acc, self.G, self.D, self.opt_G, self.opt_D)
        self.G_raw, self.D_raw = self.acc.unwrap_model(self.G), self.acc.unwrap_model(self.D)
        self.G_step, self.D_step = self.engine.forward_modules(self.G, self.D, self.G_raw, self.D_raw)
        if resume and self.engine.shards_optimizer:  # each rank's partition exists only now
            self.engine.load_optimizer_states(self._optimizers(), *self._saved_optimizers, rank=self.rank)
        self._make_streams(positions)
        grid = torch.Generator().manual_seed(cfg.seed + 12345)
        self.grid_z = torch.randn(cfg.train.grid_size**2, m.latent_dim, generator=grid)
        self.quality_probe = QualityProbe(cfg, self._fixed_real_chunks)
        self.quality: dict[str, Any] | None = None  # the last sample-quality row (into the model's metadata and card)

    def _optimizers(self) -> tuple[tuple[str, Any], ...]:
        return (("opt_G", self.opt_G), ("opt_D", self.opt_D))

    # -- run folder -------------------------------------------------------------------------

    def _check_run_dir(self, resume: bool) -> None:
        has_state = find_latest(self.run_dir) is not None
        if resume and not has_state:
            raise ConfigError(f"{self.run_dir}: --resume given but the run folder holds no complete training state")
        if not resume and (has_state or self.layout.model.exists()):
            raise OutputError(f"{self.run_dir}: already holds a run; pass --resume to continue it or choose another run_dir")

    # -- streams ----------------------------------------------------------------------------

    def _make_streams(self, positions: dict[str, Any]) -> None:
        chunk_n, chunk_a = stream_chunks(self.cfg)
        common = dict(tile=self.cfg.model.resolution, channels=self.channels, rank=self.rank, world=self.world, num_workers=self.cfg.data.num_workers)
        self.normal = BatchTaker(ShardStream(self.normal_shards, batch=chunk_n, seed=self.cfg.seed, position=positions.get("normal"), **common))
        self.abnormal = None
        if self.abnormal_shards and self.cfg.loss.gamma > 0:
            self.abnormal = BatchTaker(ShardStream(self.abnormal_shards, batch=chunk_a, seed=self.cfg.seed + 1, position=positions.get("abnormal"),
                                                   masks=self.cfg.loss.penalty == Penalty.PATCH_MASK, **common))

    # -- checkpoints ------------------------------------------------------------------------

    def _rank_payload(self) -> dict[str, Any]:
        return {
            "latent_rng": self.latent_gen.get_state().tolist(),
            "torch_rng": torch.get_rng_state().tolist(),  # WGAN-GP interpolation draws from it
            "normal": self.normal.position,
            "abnormal": self.abnormal.position if self.abnormal else None,
            "skipped_normal": self.normal.skipped,
            "skipped_abnormal": self.abnormal.skipped if self.abnormal else 0,
            **({"augment": {**self.augment.state(), **(self.adaptive.state() if self.adaptive else {})}} if self.augment else {}),
        }

    def save_checkpoint(self) -> None:
        """Collect every rank's stream position and RNG, then the main process writes one state."""
        payloads = gather_object([self._rank_payload()]) if self.world > 1 else [self._rank_payload()]
        opt_tensors, opt_info = self.engine.optimizer_states(self.acc, self._optimizers())  # main: all of it; others: {}
        if self.is_main:
            tensors: dict[str, torch.Tensor] = {}
            for prefix, module in (("G", self.G_raw), ("D", self.D_raw), ("G_ema", self.G_ema)):
                tensors.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
            tensors.update(opt_tensors)
            s = self.state
            info = {
                "step": s.step,
                "last_phase": s.last_phase,
                "seconds": s.seconds,
                "world_size": self.world,
                "engine": self.engine.name,
                "config": self.cfg.to_dict(),
                "optimizers": opt_info,
                "ranks": payloads,
            }
            save_state(self.run_dir, s.images_seen, tensors, info, keep=self.cfg.train.keep_checkpoints)
        self.acc.wait_for_everyone()

    def _load_latest(self) -> dict[str, Any]:
        state_dir = find_latest(self.run_dir)
        tensors, info = load_state(state_dir)
        saved = config_from_dict(info["config"], source=str(state_dir / "state.json"))
        if saved.model != self.cfg.model:
            raise ConfigError(f"{self.source}: key 'model' differs from the run being resumed ({state_dir}); networks cannot change on resume")
        if info.get("world_size") != self.world:
            raise ConfigError(
                f"{state_dir}: saved with {info.get('world_size')} processes, resumed with {self.world}; "
                "exact resume needs the same number of processes"
            )
        for prefix, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
        if info.get("engine", "ddp") != self.engine.name:
            raise ConfigError(f"{state_dir}: saved with engine {info.get('engine', 'ddp')}, resumed with {self.engine.name}; "
                              "optimizer state is stored per engine, resume with the same accelerate config")
        self._saved_optimizers = (info["optimizers"], tensors)
        if not self.engine.shards_optimizer:
            self.engine.load_optimizer_states(self._optimizers(), *self._saved_optimizers, rank=self.rank)
        s = self.state
        s.images_seen, s.step, s.seconds = int(info["images_seen"]), int(info["step"]), float(info["seconds"])
        s.last_phase = dict(info.get("last_phase") or {})
        if "r1_every" not in info["config"].get("loss", {}) and self.cfg.loss.r1_every != 1 and self.is_main:
            print(f"nsgan train: {state_dir} predates loss.r1_every: R1 now every {self.cfg.loss.r1_every} D steps; "
                  "loss.r1_every=1 keeps the old behaviour", file=sys.stderr)
        mine = info["ranks"][self.rank]
        self.latent_gen.set_state(torch.tensor(mine["latent_rng"], dtype=torch.uint8))
        torch.set_rng_state(torch.tensor(mine["torch_rng"], dtype=torch.uint8))
        s.skipped_normal, s.skipped_abnormal = int(mine["skipped_normal"]), int(mine["skipped_abnormal"])
        if self.augment and mine.get("augment"):  # a state saved without augmentation starts it fresh
            self.augment.load_state(mine["augment"])
            if self.adaptive and "sign_sum" in mine["augment"]:
                self.adaptive.load_state(mine["augment"])
            else:  # a fixed p is the config's, and an adaptive one that was fixed before starts there
                self.augment.p = self.cfg.augment.p
        return {"normal": mine["normal"], "abnormal": mine["abnormal"]}

    # -- one step ---------------------------------------------------------------------------

    def step(self, phase: SchedulePhase) -> dict[str, float]:
        cfg, dev = self.cfg, self.device
        level, alpha, batch = phase.level, phase.alpha, phase.batch
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = phase.lr
        reals = fade_real(self.normal.take(batch, dev), level, alpha)
        abnormal = abnormal_mask = None
        if self.abnormal is not None:
            abnormal = fade_real(self.abnormal.take(_abnormal_batch(cfg, batch), dev), level, alpha)
            abnormal_mask = self.abnormal.masks  # full tile size; the loss pools it to D's patch grid
        aug = self.augment or _unchanged
        reals = aug(reals)  # R1 then acts on the augmented reals, as in DiffAugment and ADA
        if abnormal is not None:  # augmented as reals are; a defect mask moves with its tile
            abnormal, abnormal_mask = aug(abnormal, abnormal_mask) if abnormal_mask is not None else (aug(abnormal), None)

        # D step: fakes without a graph back into G.
        with self.acc.autocast():
            with torch.no_grad():
                fakes = self.G_raw(sample_latents(self.latent_gen, batch, cfg.model.latent_dim, dev), level, alpha)
            # Lazy R1: the due steps follow the saved step counter, the same on every rank and across a resume.
            loss_d, stats_d = self.loss.d_loss(self.D_step, reals, aug(fakes.detach()), abnormal, level=level, alpha=alpha, abnormal_mask=abnormal_mask,
                                               regularise=self.loss.r1_due(self.state.step))
        self.engine.update(self.acc, self.D, self.opt_D, loss_d)
        if self.adaptive:
            self._adapt_p(stats_d["real_sign"], batch)

        # G step: through the bare D (no DDP hooks, no D gradients); G's gradients are averaged by DDP.
        self.D_raw.requires_grad_(False)
        try:
            with self.acc.autocast():
                fakes = self.G_step(sample_latents(self.latent_gen, batch, cfg.model.latent_dim, dev), level, alpha)
                loss_g, stats_g = self.loss.g_loss(self.D_raw, aug(fakes), level=level, alpha=alpha)
            self.engine.update(self.acc, self.G, self.opt_G, loss_g)
        finally:
            self.D_raw.requires_grad_(True)

        self._update_ema(batch * self.world)
        return {**stats_d, **stats_g}

    def _adapt_p(self, sign_mean: float, batch: int) -> None:
        """ADA: collect this D step's sign(D(real)); at a window's end move p by all ranks' sums (the same p everywhere)."""
        ada = self.adaptive
        ada.observe(sign_mean, batch)
        if not ada.due(self.state.step):
            return
        sums = torch.tensor([ada.sign_sum, float(ada.count)], dtype=torch.float64, device=self.device)
        if self.world > 1:
            sums = self.acc.reduce(sums, reduction="sum")
        self.augment.p = ada.adjust(self.augment.p, float(sums[0]), int(sums[1]))

    def reset_optimizers(self) -> None:
        """Forget Adam's moments: the new level's layers and the changed objective start fresh."""
        for opt in (self.opt_G, self.opt_D):
            opt.state.clear()

    @torch.no_grad()
    def _update_ema(self, images: int) -> None:
        half_life = self.cfg.train.ema_kimg * 1000.0
        beta = 0.5 ** (images / half_life) if half_life > 0 else 0.0
        for p_ema, p in zip(self.G_ema.parameters(), self.G_raw.parameters()):
            p_ema.lerp_(p.detach().to(p_ema.dtype), 1.0 - beta)
        for b_ema, b in zip(self.G_ema.buffers(), self.G_raw.buffers()):
            b_ema.copy_(b)

    # -- pictures ---------------------------------------------------------------------------

    @torch.no_grad()
    def save_grid(self, name: str, level: int, alpha: float, tag: str | None = None) -> Path:
        """The EMA generator's grid as samples/NAME; with `tag`, also to the trackers at the current images seen."""
        z = self.grid_z.to(self.device)
        imgs = torch.cat([self.G_ema(z[i:i + 16], level, alpha) for i in range(0, z.shape[0], 16)]).float().cpu()
        grid = image_grid(imgs, self.cfg.train.grid_size)
        if tag:
            log_grid(self.acc, tag, grid, self.state.images_seen)
        return write_grid(grid, self.layout.samples / name)

    def _fixed_real_chunks(self, n: int) -> Iterator[torch.Tensor]:
        """The first n tiles of the reference stream, in the stream's chunks (reals.png shows the first grid_size²)."""
        chunk = stream_chunks(self.cfg)[0]
        probe = BatchTaker(_fresh_stream(self, chunk, n))
        for _ in range(math.ceil(n / chunk)):
            yield probe.take(chunk, torch.device("cpu"))

    def save_reals_grid(self) -> None:
        n = self.cfg.train.grid_size**2
        grid = image_grid(torch.cat(list(self._fixed_real_chunks(n)))[:n], self.cfg.train.grid_size)
        log_grid(self.acc, "reals", grid, 0)
        write_grid(grid, self.layout.samples / "reals.png")

    # -- export -----------------------------------------------------------------------------

    def export(self) -> Path:
        s = self.state
        meta = {
            "config": self.cfg.to_dict(),
            "images_seen": s.images_seen,
            "kimg": s.images_seen / 1000.0,
            "gamma": self.cfg.loss.gamma,
            "data": data_summary(self.cfg),
            "trained_with": {"world_size": self.world, "mixed_precision": self.acc.mixed_precision, "nsgan_version": __version__},
        }
        if self.quality:
            meta["sample_quality"] = {k: v for k, v in self.quality.items() if k != "kind"}
        path = save_model(self.layout.model, self.G_ema, self.D_raw, meta)
        refresh_card(path, "train")  # README.md beside it, from its metadata (nsgan/share/card.py)
        return path


def _fresh_stream(trainer: Trainer, chunk: int, n: int):
    """A short-lived stream of reals for the reference grid (does not touch the training streams)."""
    return ShardStream(trainer.normal_shards, tile=trainer.cfg.model.resolution, channels=trainer.channels, batch=chunk, seed=trainer.cfg.seed + 99, rank=0, world=1, num_workers=0)


# ----------------------------------------------------------------------------- the phase


class GanPhase:
    """The progressive schedule as a phase of the runner: each step's batch, level and α follow from images seen;
    at a schedule phase's edge the finished phase's grid is saved, and at a new level Adam's moments are reset.

    Sample quality (nsgan/train/quality.py) is measured on the main process at every schedule phase's end,
    at every periodic state and at the end, once per images seen (a state at a phase's edge measures once, as
    `phase_end`); the rows go to the runner through `measured`."""

    def __init__(self, trainer: Trainer, sched_cfg: ScheduleConfig, resumed: bool):
        cfg = trainer.cfg
        self.trainer, self.sched_cfg, self.resumed = trainer, sched_cfg, resumed
        self.cfg, self.acc, self.layout, self.progress = cfg, trainer.acc, trainer.layout, trainer.state
        self.info = PhaseInfo("gan", cfg.train.log_every, cfg.train.checkpoint_kimg, "schedule.lr", display="train")
        self.total = total_images(sched_cfg)
        self.current: SchedulePhase | None = None  # the schedule's phase of the step under way (after the loop: the end)
        self._rows: list[dict[str, Any]] = []  # sample-quality rows not yet handed to the runner
        self._measured_at = -1  # images seen at the last measurement (from metrics.jsonl on resume)

    @property
    def batch(self) -> int:
        return self.current.batch

    def starting(self) -> None:
        if self.trainer.is_main:
            atomic_write_text(self.layout.config, yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
            if not self.resumed:
                self.trainer.save_reals_grid()
            elif self.layout.metrics.exists():  # measured at the state resumed from: not again
                last = last_quality_row(self.layout.metrics.read_text())
                if last:
                    self._measured_at, self.trainer.quality = int(last["images_seen"]), last

    def next_step(self) -> bool:
        tr, st = self.trainer, self.trainer.state
        phase = schedule(st.images_seen, self.sched_cfg, tr.world)
        # Decisions at phase edges read only the saved state, so a resumed run makes the same ones.
        last = st.last_phase
        edge = bool(last) and phase.index != last["index"]
        if edge and tr.is_main:
            tr.save_grid(_grid_name(last), last["level"], last["alpha"], tag="samples")
        if last and (edge or phase.done):
            self._measure("phase_end" if edge else "end")
        self.current = phase
        if phase.done:
            return False
        if last and phase.level != last["level"]:
            tr.reset_optimizers()  # PGGAN resets Adam's moments when a new level fades in
        return True

    def step(self) -> dict[str, float]:
        phase = self.current
        stats = self.trainer.step(phase)
        self.trainer.state.last_phase = {"index": phase.index, "level": phase.level, "alpha": phase.alpha,
                                         "resolution": phase.resolution, "stage": phase.stage}
        return stats

    def metrics_row(self, img_s: float) -> dict[str, Any]:
        tr, st, phase = self.trainer, self.trainer.state, self.current
        return {
            "images_seen": st.images_seen,
            "kimg": round(st.images_seen / 1000.0, 3),
            "step": st.step,
            "phase": phase.index,
            "stage": phase.stage,
            "resolution": phase.resolution,
            "alpha": round(phase.alpha, 4),
            "batch": phase.batch * tr.world,
            "lr": phase.lr,
            "img_s": img_s,
            "skipped_normal": st.skipped_normal + tr.normal.skipped,
            "skipped_abnormal": st.skipped_abnormal + (tr.abnormal.skipped if tr.abnormal else 0),
            "time_s": round(st.seconds, 2),
            **({"augment_p": round(tr.augment.p, ROW_P_DIGITS)} if tr.augment else {}),
            **({"augment_rt": round(tr.adaptive.r_t, ROW_P_DIGITS)} if tr.adaptive else {}),
        }

    def save_checkpoint(self) -> None:
        self.trainer.save_checkpoint()

    def saved_periodic(self) -> None:
        # the GAN's grids follow its schedule's phases, not its states; its sample quality both
        edge = schedule(self.progress.images_seen, self.sched_cfg, self.trainer.world).index != self.progress.last_phase["index"]
        self._measure("phase_end" if edge else "checkpoint")

    def _measure(self, at: str) -> None:
        tr, st = self.trainer, self.trainer.state
        if not (tr.is_main and tr.quality_probe.enabled) or st.images_seen == self._measured_at:
            return
        last = st.last_phase
        row = {"kind": QUALITY_KIND, "at": at, "images_seen": st.images_seen, "kimg": round(st.images_seen / 1000.0, 3),
               "step": st.step, **tr.quality_probe.measure(tr.G_ema, last["level"], last["alpha"], tr.device)}
        self._measured_at, tr.quality = st.images_seen, row
        self._rows.append(row)

    def measured(self) -> list[dict[str, Any]]:
        rows, self._rows = self._rows, []
        return rows

    def trained(self) -> list[torch.nn.Module]:
        return [self.trainer.G_raw, self.trainer.G_ema, self.trainer.D_raw]


def run_gan(trainer: Trainer, sched_cfg: ScheduleConfig, resume: bool, stop: StopAtStepBoundary) -> Path:
    """The GAN phase: the progressive schedule from the trainer's state to its end, then export (main process).

    `stop` is the caller's Ctrl-C handler: a first Ctrl-C ends the loop after the step, with a saved state.
    """
    phase = GanPhase(trainer, sched_cfg, resumed=resume)
    digests = run_phase(phase, stop)
    if trainer.is_main:
        trainer.save_grid("final.png", phase.current.level, 1.0, tag="samples")  # the last phase's grid
        trainer.export()
        _write_summary(trainer, digests)
    trainer.acc.wait_for_everyone()
    return trainer.layout.model


def _grid_name(phase: dict) -> str:
    return f"phase{phase['index']:02d}-{phase['resolution']}px-{phase['stage']}.png"


def _write_summary(trainer: Trainer, digests: list[str]) -> None:
    st = trainer.state
    write_json_atomic(trainer.layout.summary, {
        "nsgan_version": __version__,
        "images_seen": st.images_seen,
        "steps": st.step,
        "train_seconds": round(st.seconds, 2),
        "world_size": trainer.world,
        "skipped_normal": st.skipped_normal + trainer.normal.skipped,
        "skipped_abnormal": st.skipped_abnormal + (trainer.abnormal.skipped if trainer.abnormal else 0),
        "model": MODEL,
        "rank_digests": digests,
        "export_digest": weights_digest([trainer.G_ema, trainer.D_raw]),
    })


def schedule_config(cfg: TrainConfig) -> ScheduleConfig:
    s = cfg.schedule
    return ScheduleConfig(  # raises ConfigError naming the field
        resolution=cfg.model.resolution, start_resolution=s.start_resolution, stable_kimg=s.stable_kimg,
        fade_kimg=s.fade_kimg, total_kimg=s.total_kimg, batch=dict(s.batch), default_batch=s.default_batch,
        lr=s.lr, lr_per_res=dict(s.lr_per_res),
    )

"""A training run in one place: the GAN phase, then (encoder.kimg > 0) the encoder phase, then (comparator.kimg > 0)
the comparator phase, under one run lock, one process group and one Ctrl-C handler."""

from __future__ import annotations

import copy
import os
import shutil
from contextlib import nullcontext
from pathlib import Path

from nsgan.common.errors import EXIT_RUNTIME, NsganError
from nsgan.models.model_file import load_model
from nsgan.train import tracking
from nsgan.train.checkpoint import find_latest
from nsgan.train.common import shutdown
from nsgan.train.comparator_loop import train_comparator
from nsgan.train.config import TrainConfig
from nsgan.train.encoder_loop import train_encoder
from nsgan.train.engines import peer_failure
from nsgan.train.gan_loop import Trainer, run_gan, schedule_config
from nsgan.train.phase_runner import StopAtStepBoundary
from nsgan.train.runlock import RunLock


def train(cfg: TrainConfig, source: str = "<config>", resume: bool = False) -> Path:
    """Train to the schedule's end; returns the exported model's path (main process writes it).

    A run that fails with a user error before its first state (shards that hold no usable
    sample, a full disk, --resume of nothing) removes the run folder it created, so no
    half-started run is left behind.
    The main process holds the run folder's lock throughout: a second training into it is refused.
    """
    run_dir = Path(cfg.run_dir)
    lock = RunLock(run_dir) if str(os.environ.get("RANK", "0")) == "0" else None
    created = not run_dir.exists()  # (a --resume of a folder that does not exist creates it too, via the lock)
    try:
        with lock or nullcontext():
            return _train(cfg, source, resume)
    except NsganError:
        if created and lock is not None and lock.acquired and find_latest(run_dir) is None:
            shutil.rmtree(run_dir, ignore_errors=True)  # ours alone: we created it and held its lock
        raise


def _train(cfg: TrainConfig, source: str, resume: bool) -> Path:
    sched_cfg = schedule_config(cfg)  # validated before anything is built or written
    trainer = Trainer(cfg, source, resume=resume)
    acc, st, layout = trainer.acc, trainer.state, trainer.layout
    lost_peer = False
    stop = StopAtStepBoundary(enabled=trainer.world == 1)
    try:
        model_path = run_gan(trainer, sched_cfg, resume, stop)
        if cfg.encoder.kimg > 0:  # f-AnoGAN's encoder, as the last phase, with G (EMA) and D frozen
            tracking.stop(acc)  # the encoder logs as its own run (RUN/tb/encoder)
            train_encoder(cfg, copy.deepcopy(trainer.G_ema), copy.deepcopy(trainer.D_raw), layout.model,
                          layout.encoder.root, acc, trainer.normal_shards, trainer.channels, resume=resume, stop=stop)
        if cfg.comparator.kimg > 0:  # the comparator C, beside the G (EMA) and E the model file now holds, all frozen
            tracking.stop(acc)  # the comparator logs as its own run (RUN/tb/comparator)
            m = load_model(layout.model)
            train_comparator(cfg, m.generator, m.encoder, layout.model, layout.comparator.root, acc, trainer.normal_shards,
                             trainer.abnormal_shards, trainer.channels, resume=resume, stop=stop)
        return model_path
    except KeyboardInterrupt:
        raise  # mid-step (a second Ctrl-C, or many processes): no save, the last complete state stands
    except Exception as exc:  # a collective failing because another rank died: one clear line, exit 6, no hang
        why = peer_failure(exc) if trainer.world > 1 else None
        if why is None:
            raise
        lost_peer = True
        raise NsganError(
            f"rank {trainer.rank}: lost contact with another process of this run at kimg {st.images_seen / 1000:.3f} ({why}); "
            f"stopping. Restart all processes with --resume to continue from the last complete state in {layout.checkpoints}",
            EXIT_RUNTIME,
        ) from exc
    finally:
        stop.close()
        shutdown(acc, peers_alive=not lost_peer)

"""What the training phases share besides their loop (nsgan/train/phase_runner.py): the data a run reads, the
accelerator, batch plumbing, digests, gradient averaging and a clean shutdown."""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

from nsgan.common.errors import ConfigError, DataError
from nsgan.data.stream import read_manifest, resolve_shards
from nsgan.models.losses import Penalty
from nsgan.train.config import TrainConfig
from nsgan.train.engines import deepspeed_requested, make_deepspeed_accelerator
from nsgan.train.tracking import logging_dir, resolve_log_with


class BatchTaker:
    """Pulls exactly `n` images from a stream of fixed-size chunks (n is a multiple of the chunk)."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.iterator: Iterator[Any] = iter(stream)
        self.position: Any = stream.position
        self.skipped = 0
        self.masks: torch.Tensor | None = None  # the last batch's defect masks, from a stream with masks
        self.sources: list[str] | None = None  # the last batch's tile sources, from a stream with `exclude`

    def take(self, n: int, device: torch.device) -> torch.Tensor:
        parts, masks, sources, have = [], [], [], 0
        while have < n:
            chunk = next(self.iterator)
            parts.append(chunk.images)
            masks.append(chunk.masks)
            sources.append(getattr(chunk, "sources", None))
            have += chunk.images.shape[0]
            self.skipped += int(chunk.skipped)
            self.position = chunk.position
        if have != n:  # cannot happen when n is a multiple of the chunk; guard resume exactness
            raise RuntimeError(f"stream chunking broke: wanted {n} images, got {have}")
        self.masks = torch.cat(masks).to(device) if masks[0] is not None else None
        self.sources = [x for part in sources for x in part] if sources[0] is not None else None
        return torch.cat(parts).to(device, non_blocking=True)


def resolve_data(cfg: TrainConfig, source: str) -> tuple[list[str], list[str], int]:
    """Shard lists and channel count, checked before anything is written (ConfigError names the key)."""
    try:
        normal = resolve_shards(cfg.data.normal)
    except DataError as err:
        raise ConfigError(f"{source}: key 'data.normal': {err}") from None
    abnormal: list[str] = []
    if cfg.data.abnormal:
        try:
            abnormal = resolve_shards(cfg.data.abnormal)
        except DataError as err:
            raise ConfigError(f"{source}: key 'data.abnormal': {err}") from None
    channels = cfg.data.channels
    manifest = find_manifest(cfg.data.normal)
    if manifest is not None:
        tile = int(manifest.get("tile", cfg.model.resolution))
        if tile != cfg.model.resolution:
            raise ConfigError(f"{source}: key 'model.resolution' is {cfg.model.resolution} but the shards hold {tile}-px tiles")
        if channels == 0:
            channels = int(manifest.get("channels", 0))
    if channels == 0:
        raise ConfigError(f"{source}: key 'data.channels' must be set (1 or 3): no manifest.json beside the shards tells it")
    if abnormal and cfg.loss.penalty == Penalty.PATCH_MASK and cfg.loss.gamma > 0:
        _check_abnormal_masks(cfg, source)
    return normal, abnormal, channels


def find_manifest(spec: str) -> dict | None:
    """The shard manifest of a data spec (the shard-set folder, or one of its normal/abnormal folders), or None."""
    for where in (spec, str(Path(spec).parent)):
        try:
            return read_manifest(where)
        except (DataError, OSError, ValueError):
            continue
    return None


def data_summary(cfg: TrainConfig) -> dict[str, Any]:
    """What the model was trained on, for its metadata and model card: the specs and the manifest's counts."""
    summary: dict[str, Any] = {"normal": cfg.data.normal, "abnormal": cfg.data.abnormal or None}
    manifest = find_manifest(cfg.data.normal)
    if manifest is not None:
        summary["manifest"] = {k: manifest.get(k) for k in ("tile", "channels", "stride", "random_crops", "abnormal_centred",
                                                             "counts", "inputs", "nsgan_version")}
    return summary


def _check_abnormal_masks(cfg: TrainConfig, source: str) -> None:
    """patch_mask needs masks in the abnormal samples; a manifest that says there are none is an error
    (without a manifest nothing is known: samples without a mask count as masked all over)."""
    for spec in (cfg.data.abnormal, str(Path(cfg.data.abnormal).parent)):
        try:
            manifest = read_manifest(spec)
        except (DataError, OSError, ValueError):
            continue
        if not manifest.get("counts", {}).get("tiles_abnormal_with_mask"):
            raise ConfigError(f"{source}: key 'loss.penalty' is patch_mask but the abnormal shards ({cfg.data.abnormal}) hold no "
                              "masks; cut them with `nsgan shards --abnormal-masks`, or use loss.penalty=patch_mil")
        return


def make_accelerator(cfg: TrainConfig, model_dir: str | Path | None = None, source: str = "<config>"):
    """Accelerate, with DDP told that progressive growing leaves some layers unused per phase.

    The trackers of `train.log_with` log into `model_dir`/tb (default: the run folder); a named
    tracker whose package is missing is a ConfigError here, before any process group exists.
    """
    trackers = {"log_with": resolve_log_with(cfg.train.log_with, source),
                "project_dir": str(logging_dir(model_dir if model_dir is not None else cfg.run_dir))}
    timeout = timedelta(seconds=float(os.environ.get("NSGAN_PG_TIMEOUT", "600")))
    if deepspeed_requested():  # engine: DeepSpeed ZeRO-1/2 (nsgan/train/engines.py)
        return make_deepspeed_accelerator(cfg, timeout, **trackers)
    mp = None if cfg.train.mixed_precision == "auto" else cfg.train.mixed_precision
    backend = os.environ.get("NSGAN_PG_BACKEND")  # e.g. gloo: two ranks on one GPU (tools/bench/gpu_check.py), which NCCL refuses
    handlers = [
        DistributedDataParallelKwargs(find_unused_parameters=True),
        InitProcessGroupKwargs(timeout=timeout, **({"backend": backend} if backend else {})),
    ]
    return Accelerator(mixed_precision=mp, kwargs_handlers=handlers, **trackers)


def weights_digest(modules) -> str:
    """SHA-256 over the modules' parameters and buffers (in order): equal on all ranks or a bug."""
    h = hashlib.sha256()
    for module in modules:
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            h.update(name.encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def shutdown(acc, peers_alive: bool = True) -> None:
    """Leave the process group cleanly: gloo jobs that skip this sometimes abort at exit.
    With a peer gone there is nobody to wait for: skip the barrier, only drop the group."""
    try:
        if peers_alive:
            acc.wait_for_everyone()
        acc.end_training()
    except Exception:
        pass
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        try:
            torch.distributed.destroy_process_group()
        except Exception:
            pass


def average_gradients(module: torch.nn.Module) -> None:
    """Mean of every gradient over all processes in one all-reduce (what DDP would do)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    k = 0
    for g in grads:
        g.copy_(flat[k:k + g.numel()].view_as(g))
        k += g.numel()


def short_digest(*modules: torch.nn.Module) -> str:
    """The first 16 hex digits of weights_digest: names a set of networks in states and model files."""
    return weights_digest(modules)[:16]

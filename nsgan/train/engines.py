"""Training engines: how G and D are wrapped, updated and checkpointed across processes.

The loop (nsgan.train.gan_loop) asks its engine for four things and is otherwise the same everywhere:
  * `prepare`: wrap G, D and their optimizers;
  * `forward_modules`: which modules the D step and the G step call;
  * `update`: backward + optimizer step for one network;
  * `optimizer_states` / `load_optimizer_states`: optimizer moments for the resumable state.

DDP (accelerate's default, any number of processes / nodes): G and D are DDP-wrapped; the D step
runs through wrapped D (R1 in the same backward, so its gradients are averaged too), the G step
through wrapped G and the bare D.

DeepSpeed ZeRO-1/2 (`accelerate launch --config_file configs/accelerate/deepspeed-zero{1,2}.yaml`):
two DeepSpeed plugins (one engine per network, accelerate's `deepspeed_plugins={...}`). Every
forward goes through the engines' wrapped modules (`engine.module`): R1's `autograd.grad` through
the engine's own forward fails under ZeRO, the module path works, and ZeRO's gradient hooks sit on
the parameters, so `engine.backward` still reduces (stage 2: reduce-scatters) the gradients.
`engine.step` updates this rank's optimizer partition and all-gathers the weights, so every rank
holds full weights for the EMA and the export, which therefore has the DDP format. Each rank keeps
only its partition of Adam's moments: a state stores every rank's partition and a rank loads its own.

Not supported, each with an error (never a silent fallback to DDP):
  * ZeRO-3: it partitions the weights themselves, and the loop needs whole weights outside the
    engine's forward (R1's double backward, G's pass through a frozen D, the EMA).
  * DeepSpeed bf16/fp16: DeepSpeed keeps the weights themselves in 16 bit (not autocast as under
    DDP), which is a different training recipe for R1 and the EMA; nsgan does not claim it.
  * ACCELERATE_USE_CPU / `--cpu` with a DeepSpeed config: accelerate would then quietly train with
    plain DDP; DeepSpeed runs on CPU without that flag (gloo).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin, DistributedType, InitProcessGroupKwargs, gather_object

from nsgan.common.errors import ConfigError
from nsgan.train.checkpoint import flatten_optimizer, unflatten_optimizer

DEEPSPEED_STAGES = (1, 2)


def deepspeed_requested() -> bool:
    """True when the launcher asked for DeepSpeed (accelerate sets this from its config)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


# ----------------------------------------------------------------------------- DDP


class DDPEngine:
    """accelerate's own wrapping (DDP when there are several processes, nothing on one)."""

    name = "ddp"
    shards_optimizer = False  # every rank holds all of Adam's moments: the main process saves them

    def prepare(self, acc, G, D, opt_G, opt_D):
        return acc.prepare(G, D, opt_G, opt_D)

    def forward_modules(self, G, D, G_raw, D_raw):
        """(G for the G step, D for the D step): the DDP-wrapped ones, whose backward averages."""
        return G, D

    def update(self, acc, model, opt, loss) -> None:
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        opt.step()

    def optimizer_states(self, acc, named) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {}
        info: dict[str, Any] = {}
        if acc.is_main_process:
            for prefix, opt in named:
                t, plain = flatten_optimizer(prefix, opt.state_dict())
                tensors.update(t)
                info[prefix] = plain
        return tensors, info

    def load_optimizer_states(self, named, saved: dict[str, Any], tensors: dict[str, torch.Tensor], rank: int) -> None:
        for prefix, opt in named:
            opt.load_state_dict(unflatten_optimizer(saved[prefix], tensors))


# ----------------------------------------------------------------------------- DeepSpeed


class DeepSpeedEngine:
    """ZeRO stage 1 or 2, one DeepSpeed engine for G and one for D."""

    shards_optimizer = True  # each rank holds its partition of Adam's moments

    def __init__(self, stage: int):
        self.stage = stage
        self.name = f"deepspeed-zero{stage}"

    def prepare(self, acc, G, D, opt_G, opt_D):
        acc.state.select_deepspeed_plugin("D")
        D, opt_D = acc.prepare(D, opt_D)
        acc.state.select_deepspeed_plugin("G")
        G, opt_G = acc.prepare(G, opt_G)
        return G, D, opt_G, opt_D

    def forward_modules(self, G, D, G_raw, D_raw):
        """The engines' wrapped modules: R1's autograd.grad fails through the engine's forward."""
        return G_raw, D_raw

    def update(self, acc, model, opt, loss) -> None:
        # accelerate's backward() drives only the first engine prepared; drive each one directly.
        model.backward(loss)  # ZeRO reduces (stage 2: reduce-scatters) the gradients here
        model.step()  # this rank's partition steps, the weights are all-gathered, grads zeroed

    @staticmethod
    def _inner(opt):
        """The torch Adam that DeepSpeed steps on this rank's flat fp32 partition."""
        return opt.optimizer.optimizer  # accelerate wrapper -> DeepSpeedZeroOptimizer -> torch.optim.Adam

    def optimizer_states(self, acc, named) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        mine = {}
        for prefix, opt in named:
            sd = self._inner(opt).state_dict()
            sd["state"] = {k: {n: v.detach().cpu() if torch.is_tensor(v) else v for n, v in s.items()} for k, s in sd["state"].items()}
            mine[prefix] = sd
        everyone = gather_object([mine])  # a collective: every rank takes part
        tensors: dict[str, torch.Tensor] = {}
        info: dict[str, Any] = {}
        if acc.is_main_process:
            for prefix, _ in named:
                ranks = []
                for r, states in enumerate(everyone):
                    t, plain = flatten_optimizer(f"{prefix}.rank{r}", states[prefix])
                    tensors.update(t)
                    ranks.append(plain)
                info[prefix] = {"engine": self.name, "ranks": ranks}
        return tensors, info

    def load_optimizer_states(self, named, saved: dict[str, Any], tensors: dict[str, torch.Tensor], rank: int) -> None:
        for prefix, opt in named:
            entry = saved[prefix]
            if entry.get("engine") != self.name or rank >= len(entry.get("ranks", [])):
                raise ConfigError(f"optimizer state {prefix} was saved by engine {entry.get('engine', 'ddp')!r}, "
                                  f"not {self.name!r} with this number of processes; resume with the engine it was trained with")
            self._inner(opt).load_state_dict(unflatten_optimizer(entry["ranks"][rank], tensors))


# ----------------------------------------------------------------------------- choosing


def make_deepspeed_accelerator(cfg, timeout: timedelta, log_with=None, project_dir=None):
    """An Accelerator with one DeepSpeed plugin per network, checked to really run DeepSpeed (trackers as under DDP)."""
    if _truthy("ACCELERATE_USE_CPU"):
        raise ConfigError("a DeepSpeed accelerate config was given together with ACCELERATE_USE_CPU / --cpu: accelerate would "
                          "then silently train with plain DDP. Unset it: DeepSpeed runs on CPU without it (over gloo)")
    mp = cfg.train.mixed_precision if cfg.train.mixed_precision != "auto" else os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if mp != "no":
        raise ConfigError(f"key 'train.mixed_precision' is {mp!r} (or accelerate's --mixed_precision is) under DeepSpeed: DeepSpeed's "
                          "bf16/fp16 keep the weights themselves in 16 bit, a different recipe from DDP's autocast that nsgan "
                          "does not train; use train.mixed_precision=no with DeepSpeed, or DDP for bf16")
    clip = float(os.environ.get("ACCELERATE_GRADIENT_CLIPPING", "0") or 0)  # nsgan never clips under DDP either
    plugins = {}
    for key in ("D", "G"):
        plugin = DeepSpeedPlugin(gradient_clipping=clip)
        stage = int(plugin.zero_stage)
        if stage not in DEEPSPEED_STAGES:
            why = ("ZeRO-3 partitions the weights, and R1's double backward, G's pass through a frozen D and the EMA need "
                   "whole weights outside the engine's forward" if stage == 3 else "stage 0 is plain data parallelism: use the DDP configs")
            raise ConfigError(f"DeepSpeed ZeRO stage {stage} is not supported for this GAN: {why}; use stage 1 or 2")
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.schedule.default_batch  # bookkeeping only: nsgan feeds batches itself
        plugins[key] = plugin
    backend = "nccl" if torch.cuda.is_available() else "gloo"  # without it accelerate sees no backend on CPU and runs 1 process per rank
    acc = Accelerator(mixed_precision="no", deepspeed_plugins=plugins, log_with=log_with, project_dir=project_dir,
                      kwargs_handlers=[InitProcessGroupKwargs(backend=backend, timeout=timeout)])
    if acc.distributed_type != DistributedType.DEEPSPEED:
        raise ConfigError(f"DeepSpeed was requested but accelerate set up {acc.distributed_type}; refusing to train with another engine")
    if acc.num_processes != int(os.environ.get("WORLD_SIZE", acc.num_processes)):
        raise ConfigError(f"DeepSpeed set up {acc.num_processes} process(es) but the launcher started {os.environ.get('WORLD_SIZE')}")
    return acc


def engine_for(acc):
    """The engine matching the Accelerator that make_accelerator built."""
    if acc.distributed_type == DistributedType.DEEPSPEED:
        return DeepSpeedEngine(int(acc.state.get_deepspeed_plugin("D").zero_stage))
    return DDPEngine()


# ----------------------------------------------------------------------------- lost peers

# What gloo / NCCL / the store say when the other side of a collective is gone. Naming the backend
# is not enough: "NCCL error ... unhandled cuda error" is this process's own GPU failing.
_PEER_LOST = re.compile(r"connection (closed|reset|refused)|closed by peer|reset by peer|broken pipe|timed out|timeout|"
                        r"remote process|network error|communicator was aborted", re.IGNORECASE)
# Failures of this process's own device, whatever error type carries them: never a lost peer.
_LOCAL_FAILURE = re.compile(r"cuda|out of memory|illegal memory access|cublas|cudnn|device-side assert", re.IGNORECASE)


def peer_failure(exc: BaseException) -> str | None:
    """A one-line reason when `exc` is a collective that failed because another rank is gone."""
    dist_errors: tuple[type, ...] = ()
    if torch.distributed.is_available():
        dist_errors = tuple(getattr(torch.distributed, n) for n in ("DistError", "DistBackendError", "DistNetworkError", "DistStoreError")
                            if hasattr(torch.distributed, n))
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if _LOCAL_FAILURE.search(str(exc)):
        return None
    if dist_errors and isinstance(exc, dist_errors):
        return text
    if type(exc) is RuntimeError and _PEER_LOST.search(str(exc)):
        return text
    return None

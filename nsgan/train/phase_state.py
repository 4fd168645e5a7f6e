"""The resumable state of a phase that trains one network beside frozen ones (the encoder, the comparator).

One state holds the network (`<prefix>.*` tensors), its Adam (`opt_<prefix>.*`), the phase's
progress, its config section, every rank's own payload (stream position, RNG state) and the
digest of the frozen networks it was trained for. A resume is refused, with the reason, when the
state is of another kind, was saved with another number of processes, belongs to other frozen
networks, or its config section differs in anything but the keys that may change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object

from nsgan.common.errors import ConfigError, OutputError
from nsgan.train.checkpoint import find_latest, flatten_optimizer, load_state, save_state, unflatten_optimizer
from nsgan.train.phase_runner import Progress

MAY_CHANGE_ON_RESUME = ("kimg", "checkpoint_kimg", "log_every")


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


@dataclass(frozen=True)
class NetworkState:
    """How one kind of phase stores its network; `save` and `load` take the phase (acc, cfg, layout, progress)."""

    kind: str  # the state's "kind" and the phase's config section ("encoder", "comparator")
    prefix: str  # the network's tensor prefix ("E", "C")
    digest_key: str  # where the frozen networks' digest is kept ("gan_digest", "basis_digest")
    basis: str  # what those frozen networks are, for the message ("generator/discriminator")

    def section(self, phase: Any) -> dict[str, Any]:
        return phase.cfg.to_dict()[self.kind]

    def save(self, phase: Any, net: torch.nn.Module, opt: torch.optim.Optimizer, mine: dict[str, Any], digest: str) -> None:
        """Gather every rank's payload `mine`; the main process writes one state (a collective)."""
        acc, st = phase.acc, phase.progress
        payloads = gather_object([mine]) if acc.num_processes > 1 else [mine]
        if acc.is_main_process:
            opt_tensors, opt_plain = flatten_optimizer(f"opt_{self.prefix}", opt.state_dict())
            tensors = {f"{self.prefix}.{k}": v for k, v in net.state_dict().items()}
            tensors.update(opt_tensors)
            info = {"kind": self.kind, "step": st.step, "seconds": st.seconds, "world_size": acc.num_processes,
                    f"{self.kind}_config": self.section(phase), "optimizer": opt_plain, "ranks": payloads,
                    self.digest_key: digest}
            save_state(phase.layout.root, st.images_seen, tensors, info, keep=phase.cfg.train.keep_checkpoints)
        acc.wait_for_everyone()

    def load(self, phase: Any, net: torch.nn.Module, opt: torch.optim.Optimizer, digest: str) -> tuple[Progress, dict[str, Any]]:
        """The latest state into `net` and `opt`; returns its progress and this rank's payload (ConfigError if it does not fit)."""
        state_dir = find_latest(phase.layout.root)
        tensors, info = load_state(state_dir)
        world = phase.acc.num_processes
        if info.get("kind") != self.kind:
            raise ConfigError(f"{state_dir}: not {_a(self.kind)} training state")
        if info.get("world_size") != world:
            raise ConfigError(f"{state_dir}: saved with {info.get('world_size')} processes, resumed with {world}; "
                              "exact resume needs the same number of processes")
        if info.get(self.digest_key) != digest:
            raise ConfigError(f"{state_dir}: this {self.kind} run was started for another {self.basis}; "
                              f"use a new {self.kind} run folder")
        now = {k: v for k, v in self.section(phase).items() if k not in MAY_CHANGE_ON_RESUME}
        if {k: v for k, v in info[f"{self.kind}_config"].items() if k in now} != now:  # keys a later nsgan dropped are no change
            raise ConfigError(f"{phase.cfg.run_dir}: key '{self.kind}' differs from the {self.kind} run being resumed ({state_dir}); "
                              f"only {self.kind}.{', '.join(MAY_CHANGE_ON_RESUME)} may change on resume")
        n = len(self.prefix) + 1
        net.load_state_dict({k[n:]: v for k, v in tensors.items() if k.startswith(self.prefix + ".")})
        opt.load_state_dict(unflatten_optimizer(info["optimizer"], tensors))
        progress = Progress(int(info["images_seen"]), int(info["step"]), float(info["seconds"]))
        return progress, info["ranks"][phase.acc.process_index]


def has_state(run_dir: Path) -> bool:
    """Whether the run folder holds a complete state to resume from."""
    return find_latest(run_dir) is not None


def check_phase_run_dir(run_dir: Path, resume: bool, label: str) -> None:
    """--resume needs a state in the run folder; a fresh run needs a folder without one (ConfigError / OutputError)."""
    present = has_state(run_dir)
    if resume and not present:
        raise ConfigError(f"{run_dir}: --resume given but the {label} run folder holds no complete {label} state")
    if not resume and present:
        raise OutputError(f"{run_dir}: already holds {_a(label)} run; pass --resume to continue it or choose another folder")

"""Resumable training state, written atomically as safetensors + JSON (no pickle).

A state is a folder `RUN/checkpoints/state-<images seen>/` holding `tensors.safetensors` (networks,
optimizer moments, RNG states) and `state.json` (everything else). It is written under a `.tmp`
name, flushed, then renamed, and only then does `latest.json` move to it: a run killed at any
moment, even while saving, leaves the previous complete state intact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from nsgan import __version__
from nsgan.common.atomic import atomic_write_json, fsync_dir, fsync_file
from nsgan.common.errors import ModelError, OutputError
from nsgan.train.layout import CHECKPOINTS, LATEST

STATE_FORMAT = "nsgan-state/1"
TENSORS = "tensors.safetensors"
STATE_JSON = "state.json"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON next to `path` and rename it into place (never a half-written file)."""
    atomic_write_json(path, obj, indent=1)


def flatten_optimizer(prefix: str, state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and a JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": state_dict["param_groups"], "state": {}}
    for idx, entry in state_dict["state"].items():
        plain_entry = {}
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{idx}.{name}"] = value.detach().cpu().contiguous()
                plain_entry[name] = {"tensor": f"{prefix}.{idx}.{name}"}
            else:
                plain_entry[name] = value
        plain["state"][str(idx)] = plain_entry
    return tensors, plain


def unflatten_optimizer(plain: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state = {}
    for idx, entry in plain["state"].items():
        state[int(idx)] = {
            name: tensors[value["tensor"]] if isinstance(value, dict) and "tensor" in value else value
            for name, value in entry.items()
        }
    return {"state": state, "param_groups": plain["param_groups"]}


def save_state(run_dir: Path, images_seen: int, tensors: dict[str, torch.Tensor], info: dict[str, Any], keep: int = 3) -> Path:
    """Write one complete state and point latest.json at it; prune to the newest `keep` states."""
    ckpt_dir = Path(run_dir) / CHECKPOINTS
    name = f"state-{images_seen:012d}"
    final = ckpt_dir / name
    tmp = ckpt_dir / (name + ".tmp")
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS))
        except OSError:
            raise
        except Exception as exc:  # safetensors reports a full disk or a size limit as its own error type
            raise OSError(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None
        fsync_file(tmp / TENSORS)
        write_json_atomic(tmp / STATE_JSON, {"format": STATE_FORMAT, "nsgan_version": __version__, "images_seen": images_seen, **info})
        if final.exists():  # same position saved twice (e.g. end right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(ckpt_dir)
        write_json_atomic(ckpt_dir / LATEST, {"state": name, "images_seen": images_seen})
    except (OSError, OutputError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # the half-written state; the previous complete one stays
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise OutputError(f"{final}: cannot save the training state ({why}); the last complete state in {ckpt_dir} "
                          "is intact: free space, then resume with --resume") from None
    for old in complete_states(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_states(ckpt_dir: Path) -> list[Path]:
    """Complete state folders, oldest first (a folder counts once its state.json is in place)."""
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.glob("state-*") if p.is_dir() and not p.name.endswith(".tmp") and (p / STATE_JSON).is_file() and (p / TENSORS).is_file()]
    return sorted(found, key=lambda p: p.name)


def find_latest(run_dir: Path) -> Path | None:
    """The state latest.json points to, or the newest complete one if the pointer is damaged."""
    ckpt_dir = Path(run_dir) / CHECKPOINTS
    try:
        pointer = json.loads((ckpt_dir / LATEST).read_text())
        candidate = ckpt_dir / pointer["state"]
        if (candidate / STATE_JSON).is_file() and (candidate / TENSORS).is_file():
            return candidate
    except (OSError, ValueError, KeyError, TypeError):
        pass
    states = complete_states(ckpt_dir)
    return states[-1] if states else None


def load_state(state_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a state folder; ModelError (naming the folder) if it is damaged or foreign."""
    try:
        info = json.loads((state_dir / STATE_JSON).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{state_dir / STATE_JSON}: unreadable training state ({exc})") from None
    if info.get("format") != STATE_FORMAT:
        raise ModelError(f"{state_dir / STATE_JSON}: not an nsgan training state")
    try:
        tensors = load_file(str(state_dir / TENSORS))
    except Exception as exc:
        raise ModelError(f"{state_dir / TENSORS}: truncated or corrupt ({type(exc).__name__}: {exc})") from None
    return tensors, info

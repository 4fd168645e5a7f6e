"""The shared model file: `model.safetensors` with the EMA generator, the discriminator and,
once trained, the f-AnoGAN encoder (`E.*` tensors; a model without it still scores by search).

Everything needed to rebuild the networks (their constructor arguments), the training config,
images seen, the nsgan version and, once calibrated, the thresholds travel in the safetensors
metadata as JSON strings, so the file loads without the training config and without pickle.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import ModelError

FORMAT = "nsgan-model/1"
G_PREFIX = "G_ema."
D_PREFIX = "D."
E_PREFIX = "E."


@dataclass
class LoadedModel:
    """An exported model, ready to generate or score: both networks in eval mode, frozen."""

    generator: torch.nn.Module
    discriminator: torch.nn.Module
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    encoder: torch.nn.Module | None = None  # None: the file holds no encoder (scoring by search only)

    @property
    def resolution(self) -> int:
        return int(self.meta["resolution"])

    @property
    def channels(self) -> int:
        return int(self.meta["channels"])

    @property
    def latent_dim(self) -> int:
        return int(self.meta["latent_dim"])

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.meta.get("thresholds") or {})


def _state(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().to("cpu", torch.float32).contiguous() for k, v in module.state_dict().items()}


def _atomic_save(tensors: dict[str, torch.Tensor], meta: dict[str, str], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_model(path: str | Path, generator: torch.nn.Module, discriminator: torch.nn.Module, metadata: dict[str, Any]) -> Path:
    """Write G (EMA) and D with JSON metadata, atomically. `metadata` needs at least `config`."""
    from .networks import network_kwargs

    path = Path(path)
    gk, dk = network_kwargs(generator), network_kwargs(discriminator)
    meta = {
        "format": FORMAT,
        "nsgan_version": __version__,
        "resolution": gk["resolution"],
        "channels": gk["channels"],
        "latent_dim": gk["latent_dim"],
        "generator": gk,
        "discriminator": dk,
        **metadata,
    }
    tensors = {**_state(generator, G_PREFIX), **_state(discriminator, D_PREFIX)}
    _atomic_save(tensors, {k: json.dumps(v) for k, v in meta.items()}, path)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a model file, decoded; ModelError if the file is not an nsgan model."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = fh.metadata() or {}
    except Exception as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    try:
        meta = {k: json.loads(v) for k, v in raw.items()}
    except json.JSONDecodeError:
        raise ModelError(f"{path}: safetensors metadata is not nsgan's (not JSON)") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path}: not an nsgan model (format is {meta.get('format')!r}, expected {FORMAT!r})")
    for key in ("generator", "discriminator", "resolution", "channels", "latent_dim"):
        if key not in meta:
            raise ModelError(f"{path}: nsgan model metadata lacks {key!r}")
    return meta


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild both networks from a model file; clear ModelError for missing, truncated or foreign files."""
    from safetensors.torch import load_file

    from .networks import Discriminator, Generator

    path = Path(path)
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:
        raise ModelError(f"{path}: truncated or corrupt model file ({type(exc).__name__}: {exc})") from None
    try:
        g = Generator(**meta["generator"])
        d = Discriminator(**meta["discriminator"])
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: network settings in the metadata are not usable ({exc})") from None
    e = None
    if "encoder" in meta:
        from .encoder import Encoder

        try:
            e = Encoder(**meta["encoder"]["network"])
        except (TypeError, ValueError, KeyError) as exc:
            raise ModelError(f"{path}: encoder settings in the metadata are not usable ({exc})") from None
    modules = [(g, G_PREFIX, "generator"), (d, D_PREFIX, "discriminator")] + ([(e, E_PREFIX, "encoder")] if e is not None else [])
    for module, prefix, name in modules:
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ModelError(f"{path}: {name} weights do not match its settings ({first})") from None
        module.eval().requires_grad_(False).to(device)
    return LoadedModel(generator=g, discriminator=d, meta=meta, path=path, encoder=e)


def add_encoder(path: str | Path, encoder: torch.nn.Module, info: dict[str, Any]) -> None:
    """Put a trained encoder (E.* tensors, its settings and `info` in metadata["encoder"]) into a model file.

    Replaces an earlier encoder; G, D, thresholds and everything else stay as they are. Thresholds
    calibrated for an encoder mode no longer hold for the new E, so they are dropped then.
    """
    from safetensors.torch import load_file

    from .encoder import encoder_kwargs

    path = Path(path)
    meta = read_metadata(path)
    tensors = {k: v for k, v in load_file(str(path), device="cpu").items() if not k.startswith(E_PREFIX)}
    tensors.update(_state(encoder, E_PREFIX))
    meta["encoder"] = {"network": encoder_kwargs(encoder), **info}
    mode = ((meta.get("thresholds") or {}).get("search") or {}).get("mode", "search")
    if mode != "search":
        meta.pop("thresholds", None)
    _atomic_save(tensors, {k: json.dumps(v) for k, v in meta.items()}, path)


def update_metadata(path: str | Path, **entries: Any) -> None:
    """Add or replace metadata entries (e.g. thresholds from `nsgan calibrate`), atomically."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_metadata(path)
    meta.update(entries)
    tensors = load_file(str(path), device="cpu")
    _atomic_save(tensors, {k: json.dumps(v) for k, v in meta.items()}, path)

"""The shared model file: `model.safetensors` with the EMA generator, the discriminator and,
once trained, the f-AnoGAN encoder (`E.*` tensors; a model without it still scores by search) and
the comparator (`C.*` tensors, nsgan/models/comparator.py; a learned map read beside G(E(x))).

C is trained for one G and E: its metadata records their digest (`basis_digest`), a file whose G or E
differs from it is refused at load, and a new encoder (add_encoder) drops C and what was made with it.

Everything needed to rebuild the networks (their constructor arguments), the training config,
images seen, the nsgan version and, once calibrated, the thresholds travel in the safetensors
metadata as JSON strings, so the file loads without the training config and without pickle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from nsgan import __version__
from nsgan.common.atomic import atomic_write
from nsgan.common.errors import ModelError, OutputError
from nsgan.models.comparator import Comparator, ComparatorSpec
from nsgan.models.encoder import Encoder, encoder_kwargs
from nsgan.models.networks import Discriminator, Generator, network_kwargs

FORMAT = "nsgan-model/1"
G_PREFIX = "G_ema."
D_PREFIX = "D."
E_PREFIX = "E."
C_PREFIX = "C."
# Values of score.choices' Residual.COMPARATOR and Inversion.SEARCH, spelled as the model file's JSON holds them:
# models sits below score, so it cannot import the enums (tests/test_scoring.py checks they agree).
COMPARATOR_RESIDUAL = "comparator"  # the map residual C makes
SEARCH_MODE = "search"  # AnoGAN's latent search, what thresholds of a model without E were made with


class ModelMeta:
    """The figures every exported model states in its metadata (`self.meta`): safetensors or ONNX alike."""

    meta: dict[str, Any]

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
    def thresholds(self) -> dict[str, Any]:
        return dict(self.meta.get("thresholds") or {})


@dataclass
class LoadedModel(ModelMeta):
    """An exported model, ready to generate or score: both networks in eval mode, frozen."""

    generator: torch.nn.Module
    discriminator: torch.nn.Module
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    encoder: torch.nn.Module | None = None  # None: the file holds no encoder (scoring by search only)
    comparator: torch.nn.Module | None = None  # None: the file holds no comparator (no `comparator` residual)


def basis_digest(generator: torch.nn.Module, encoder: torch.nn.Module | None) -> str:
    """16 hex digits naming the (G, E) a comparator was trained for: sha256 over their stored tensors, in order."""
    h = hashlib.sha256()
    for prefix, module in ((G_PREFIX, generator), (E_PREFIX, encoder)):
        if module is None:
            continue
        for name, t in _state(module, prefix).items():
            h.update(name.encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _state(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().to("cpu", torch.float32).contiguous() for k, v in module.state_dict().items()}


def _atomic_save(tensors: dict[str, torch.Tensor], meta: dict[str, str], path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path.parent}: cannot create the model's folder ({exc.strerror or exc})") from None

    def write(tmp: Path) -> None:
        try:
            save_file(tensors, str(tmp), metadata=meta)
        except OSError:
            raise
        except Exception as exc:  # safetensors reports a full disk or a size limit as its own error type
            raise OSError(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None

    atomic_write(path, write)


def save_model(path: str | Path, generator: torch.nn.Module, discriminator: torch.nn.Module, metadata: dict[str, Any]) -> Path:
    """Write G (EMA) and D with JSON metadata, atomically. `metadata` needs at least `config`."""
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


# An nsgan model's safetensors header (tensor index + JSON metadata) is a few hundred kB at most;
# safetensors itself allows 100 MB. Anything larger is refused before it is parsed.
MAX_HEADER_BYTES = 16 * 2**20


def _read_header(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The safetensors header of `path` (tensor index, raw metadata), checked against the file's size."""
    size = path.stat().st_size
    if size < 8:
        raise ModelError(f"{path}: {size} bytes, too short to be a model file; export or copy it again")
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if n > MAX_HEADER_BYTES:
            raise ModelError(f"{path}: safetensors header length {n} exceeds nsgan's limit of {MAX_HEADER_BYTES} bytes; "
                             "not an nsgan model file")
        if 8 + n > size:
            raise ModelError(f"{path}: safetensors header length {n} exceeds the file ({size} bytes): truncated or not "
                             "a model file; copy or export it again")
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ModelError(f"{path}: not a readable safetensors file (its header is not JSON); pass a model.safetensors "
                         "written by nsgan") from None
    if not isinstance(header, dict):
        raise ModelError(f"{path}: not a readable safetensors file (its header is not a JSON object)")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ModelError(f"{path}: not a readable safetensors file (its metadata is not a map of strings)")
    try:
        end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise ModelError(f"{path}: not a readable safetensors file (its tensor index is malformed)") from None
    if 8 + n + end > size:
        raise ModelError(f"{path}: truncated model file ({size} bytes, its header promises {8 + n + end}); copy or export it again")
    return header, meta


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a model file, decoded; ModelError if the file is not an nsgan model."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    _, raw = _read_header(path)
    try:
        meta = {k: json.loads(v) for k, v in raw.items()}
    except json.JSONDecodeError:
        raise ModelError(f"{path}: not an nsgan model (its metadata is not nsgan's JSON); pass a model.safetensors "
                         "written by nsgan train") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path}: not an nsgan model (format is {meta.get('format')!r}, expected {FORMAT!r})")
    for key in ("generator", "discriminator", "resolution", "channels", "latent_dim"):
        if key not in meta:
            raise ModelError(f"{path}: nsgan model metadata lacks {key!r}; the file is damaged, export it again")
    for key in ("resolution", "channels", "latent_dim"):
        if not isinstance(meta[key], int) or isinstance(meta[key], bool) or meta[key] < 1:
            raise ModelError(f"{path}: nsgan model metadata {key!r} is {meta[key]!r}, expected a positive integer; "
                             "the file is damaged, export it again")
    for key in ("generator", "discriminator"):
        if not isinstance(meta[key], dict):
            raise ModelError(f"{path}: nsgan model metadata {key!r} is not a mapping; the file is damaged, export it again")
    return meta


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild both networks from a model file; clear ModelError for missing, truncated or foreign files."""
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
        try:
            e = Encoder(**meta["encoder"]["network"])
        except (TypeError, ValueError, KeyError) as exc:
            raise ModelError(f"{path}: encoder settings in the metadata are not usable ({exc})") from None
    c = None
    if "comparator" in meta:
        try:
            c = Comparator(ComparatorSpec.from_dict(meta["comparator"]["network"]))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ModelError(f"{path}: comparator settings in the metadata are not usable ({exc})") from None
    modules = [(g, G_PREFIX, "generator"), (d, D_PREFIX, "discriminator")] + ([(e, E_PREFIX, "encoder")] if e is not None else []) \
        + ([(c, C_PREFIX, "comparator")] if c is not None else [])
    for module, prefix, name in modules:
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ModelError(f"{path}: {name} weights do not match its settings ({first})") from None
        module.eval().requires_grad_(False)
    if c is not None and meta["comparator"].get("basis_digest") != basis_digest(g, e):
        raise ModelError(f"{path}: its comparator was trained for another generator/encoder (basis digest "
                         f"{meta['comparator'].get('basis_digest')}, this file's {basis_digest(g, e)}); train it again with "
                         f"`nsgan train-comparator --model {path} comparator.kimg=N`")
    for module in (g, d, e, c):
        if module is not None:
            module.to(device)
    return LoadedModel(generator=g, discriminator=d, meta=meta, path=path, encoder=e, comparator=c)


def add_encoder(path: str | Path, encoder: torch.nn.Module, info: dict[str, Any]) -> None:
    """Put a trained encoder (E.* tensors, its settings and `info` in metadata["encoder"]) into a model file.

    Replaces an earlier encoder; G, D, thresholds and everything else stay as they are. Thresholds
    calibrated for an encoder mode no longer hold for the new E, so they are dropped then, and so
    are evaluation figures measured in an encoder mode. A comparator was trained beside the old E:
    it is dropped too (C.* and metadata["comparator"]), with thresholds and evaluations made with it.
    """
    path = Path(path)
    meta = read_metadata(path)
    tensors = {k: v for k, v in load_file(str(path), device="cpu").items() if not k.startswith((E_PREFIX, C_PREFIX))}
    tensors.update(_state(encoder, E_PREFIX))
    meta["encoder"] = {"network": encoder_kwargs(encoder), **info}
    meta.pop("comparator", None)
    mode = ((meta.get("thresholds") or {}).get("search") or {}).get("mode", SEARCH_MODE)
    if mode != SEARCH_MODE or _made_with_comparator(meta.get("thresholds")):
        meta.pop("thresholds", None)
    if "evaluations" in meta:
        meta["evaluations"] = [e for e in meta["evaluations"] or [] if isinstance(e, dict) and isinstance(e.get("search"), dict)
                               and e["search"].get("mode") == SEARCH_MODE and not _made_with_comparator(e)]
    _atomic_save(tensors, {k: json.dumps(v) for k, v in meta.items()}, path)


def _made_with_comparator(record: Any) -> bool:
    """Whether thresholds or an evaluation record were made with the comparator's map."""
    if not isinstance(record, dict):
        return False
    for key in ("map", "map_settings"):  # thresholds record "map"; evaluation records "map_settings"
        if isinstance(record.get(key), dict):
            return record[key].get("residual") == COMPARATOR_RESIDUAL
    return record.get("residual") == COMPARATOR_RESIDUAL


def add_comparator(path: str | Path, comparator: torch.nn.Module, info: dict[str, Any]) -> None:
    """Put a trained comparator (C.* tensors, its spec and `info` in metadata["comparator"]) into a model file.

    `info` must hold `basis_digest` (basis_digest(G, E) of the networks it was trained beside; load_model
    refuses the file when they differ). Replaces an earlier C; thresholds and evaluations made with the
    comparator's map are dropped (they were C's), the others hold (G and E are unchanged).
    """
    path = Path(path)
    meta = read_metadata(path)
    if "basis_digest" not in info:
        raise ValueError("add_comparator: info needs the basis_digest of the G and E it was trained for")
    tensors = {k: v for k, v in load_file(str(path), device="cpu").items() if not k.startswith(C_PREFIX)}
    tensors.update(_state(comparator, C_PREFIX))
    meta["comparator"] = {"network": comparator.spec.to_dict(), **info}
    if _made_with_comparator(meta.get("thresholds")):
        meta.pop("thresholds", None)
    if "evaluations" in meta:
        meta["evaluations"] = [e for e in meta["evaluations"] or [] if not _made_with_comparator(e)]
    _atomic_save(tensors, {k: json.dumps(v) for k, v in meta.items()}, path)


def comparator_training_config(meta: dict[str, Any]) -> dict[str, Any]:
    """The config tree that trained the file's C: the stored config (the run that wrote the file, often the GAN's)
    with C's own section, data and seed where C recorded them. `nsgan train-comparator` may add C with other
    settings or shards than the GAN run stored; whatever retrains a C like it (the audit's fold comparators) or asks
    which images it saw must read these, not the GAN's."""
    tree = json.loads(json.dumps(meta.get("config") or {}))  # a deep copy: the caller may apply overrides
    record = meta.get("comparator")
    if not isinstance(record, dict) or not tree:
        return tree
    if isinstance(record.get("config"), dict):  # older files may lack keys a newer version added: the stored ones stay
        tree["comparator"] = {**(tree.get("comparator") or {}), **record["config"]}
    if isinstance(record.get("data"), dict):
        tree["data"] = {**(tree.get("data") or {}), **record["data"]}
    if "seed" in record:
        tree["seed"] = record["seed"]
    return tree


def update_metadata(path: str | Path, **entries: Any) -> None:
    """Add or replace metadata entries (e.g. thresholds from `nsgan calibrate`), atomically."""
    path = Path(path)
    meta = read_metadata(path)
    meta.update(entries)
    tensors = load_file(str(path), device="cpu")
    _atomic_save(tensors, {k: json.dumps(v) for k, v in meta.items()}, path)

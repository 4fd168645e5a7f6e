"""ONNX Runtime for the per-tile call by default on the CPU: the export made once, cached by the model's sha256.

`scorer_for(model, options, backend="auto")` returns a Scorer and a one-line note saying which
backend makes the per-tile network call and why. "auto" takes ONNX Runtime only when all of these
hold: no accelerator with several processes, no CUDA device, the model has an encoder, the
resolved inversion mode is encoder and fp32, onnxruntime is importable (and, for an export, onnx
and onnxscript), and either the cache already holds the export or the job has at least
ONNX_MIN_TILES tiles (an export costs seconds; a job of a few tiles would not earn it back).
Anything else, or any failure on the way, is the torch Scorer, with the reason in the note.

The cache: `<root>/<model sha256>/tile-<residual>-<image score>[-lam<λ>]-op<opset>-nsgan<version>.onnx`,
root = $NSGAN_CACHE_DIR, else $XDG_CACHE_HOME/nsgan/onnx, else ~/.cache/nsgan/onnx
(%LOCALAPPDATA%\\nsgan\\onnx on Windows). Never beside the model, which may sit in a read-only Hub
cache; keyed by content, so every copy of the same model file hits. A cached file is checked
against torch on a few random tiles each time it is loaded (the export itself is checked at batch
1 and 5 by `export_onnx`); one that fails is exported again. The score command's `--backend` (or
$NSGAN_SCORE_BACKEND) chooses torch or onnx explicitly.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from PIL import Image

from nsgan import __version__
from nsgan.common.errors import ConfigError, NsganError
from nsgan.data.tiling import TileGrid
from nsgan.models.model_file import load_model, read_metadata
from nsgan.score.choices import Backend, ImageScore, Inversion, Precision
from nsgan.score.loading import resolve_pretrained
from nsgan.score.options import ScoreOptions, comparator_runs_alone, resolve_image_score, resolve_residual
from nsgan.score.scorer import Scorer
from nsgan.share import onnx_export  # by module: tests swap export_onnx and torch_tile_outputs there

BACKENDS = Backend.values()
BACKEND_ENV = "NSGAN_SCORE_BACKEND"
CACHE_ENV = "NSGAN_CACHE_DIR"
ONNX_MIN_TILES = 4096  # tiles in a job before auto pays for an export: a 2048² image of 32-px tiles, where cold ≈ torch and warm is faster (docs/benchmarks.md)
CHECK_TILES = 5


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "nsgan" / "onnx"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "nsgan" / "onnx"


def cache_file(sha256: str, options: ScoreOptions, opset: int) -> Path:
    lam = f"-lam{options.search.lam:g}" if options.image_score == ImageScore.TILE else ""
    return cache_root() / sha256 / f"tile-{options.residual}-{options.image_score}{lam}-op{opset}-nsgan{__version__}.onnx"


def image_tiles(paths: list[Path], tile: int, stride: int) -> int:
    """Tiles of all images, from their headers (TIFF tags, PIL's size): nothing is decoded."""
    total = 0
    for p in paths:
        try:
            if p.suffix.lower() in (".tif", ".tiff"):
                with tifffile.TiffFile(p) as tf:
                    h, w = tf.pages[0].shape[:2]
            else:
                with Image.open(p) as im:
                    w, h = im.size
        except Exception:  # unreadable here: scoring itself will say so, with its own message
            continue
        total += TileGrid(int(h), int(w), tile, stride).n_tiles
    return total


def _check_against_torch(net, model, options: ScoreOptions, seed: int = 0) -> float:
    """Max |ORT − torch| of the residual and score on a few random tiles (the cached file's load-time check)."""
    rng = np.random.default_rng(seed)
    tiles = rng.random((CHECK_TILES, model.channels, model.resolution, model.resolution), dtype=np.float32)
    ref = onnx_export.torch_tile_outputs(model.generator, model.discriminator, model.encoder, tiles, options.residual,
                                         options.search.lam, options.image_score, comparator=model.comparator)
    res, score = net(tiles)
    return float(max(np.abs(res.astype(np.float64) - ref["residual"]).max(), np.abs(score.astype(np.float64) - ref["score"]).max()))


def cached_network(model_path: Path, sha256: str, model, options: ScoreOptions):
    """(OnnxTileNetwork, note): the cached export, made now if missing or failing its check. NsganError/OSError on failure."""
    path = cache_file(sha256, options, onnx_export.DEFAULT_OPSET)
    if path.is_file():
        try:
            net = onnx_export.OnnxTileNetwork.from_file(path)
            if net.meta.get("source_sha256") == sha256:
                worst = _check_against_torch(net, model, options)
                if worst <= onnx_export.TOLERANCE:
                    return net, f"cached export {path}"
        except NsganError:
            pass
        path.unlink(missing_ok=True)  # damaged, stale or off: export again
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cache {path.parent} not writable ({exc.strerror or exc})") from None
    if not os.access(path.parent, os.W_OK):
        raise OSError(f"cache {path.parent} not writable")
    report = onnx_export.export_onnx(model_path, path, overwrite=True, residual=options.residual, lam=options.search.lam,
                                     image_score=options.image_score)
    return (onnx_export.OnnxTileNetwork.from_file(path),
            f"exported once to {path} in {report.seconds:.1f} s (max |ORT − torch| {report.worst:.1e})")


def _why_not_onnx(meta: dict[str, Any], options: ScoreOptions, accelerator: Any) -> str | None:
    if accelerator is not None and accelerator.num_processes > 1:
        return "several processes"
    if accelerator is not None and accelerator.device.type != "cpu" or accelerator is None and torch.cuda.is_available():
        return "a CUDA device"
    if not meta.get("encoder"):
        return "the model has no encoder"
    reference = ((meta.get("comparator") or {}).get("network") or {}).get("reference")
    if comparator_runs_alone(reference, options):
        return f"the comparator reads x beside {reference!r}, not G(E(x)): torch runs C alone, without E and G"
    search = options.search.resolved(True)
    if search.mode != Inversion.ENCODER:
        return f"inversion mode {search.mode}"
    if search.precision != Precision.FP32:
        return f"precision {search.precision}"
    return None


def scorer_for(model: str | Path, options: ScoreOptions, backend: str = Backend.AUTO, *, images: list[Path] = (),
               accelerator: Any = None, progress: bool = False):
    """(Scorer, note) for a model file, folder or Hub repo id; see the module's docstring for what auto picks."""
    backend = Backend.parse(backend, "--backend", listed=True)
    kwargs = dict(accelerator=accelerator, progress=progress)
    if backend == Backend.TORCH:
        return Scorer.from_pretrained(model, options, **kwargs), "torch (asked for)"
    path, name = resolve_pretrained(model)
    meta = read_metadata(path)
    # `auto` names what this model computes (the comparator's map when it has C and that is the default):
    # the cache file, the export and its check against torch must all mean the same residual.
    options = replace(options, residual=resolve_residual(options.residual, "comparator" in meta))
    options = replace(options, image_score=resolve_image_score(options.image_score, options.residual))
    why = _why_not_onnx(meta, options, accelerator)
    if why is None:
        try:  # deferred: onnxruntime is optional; without it, torch scores
            import onnxruntime  # noqa: F401
        except ImportError:
            why = "onnxruntime is not installed (pip install '.[onnx]')"
    if why is not None:
        if backend == Backend.ONNX:
            raise ConfigError(f"--backend onnx: {name} cannot be scored with ONNX Runtime here: {why}")
        return Scorer.from_file(path, options, name=name, **kwargs), f"torch ({why})"
    scorer = Scorer.from_file(path, options, name=name, **kwargs)
    sha = scorer.model_sha256
    if backend == Backend.AUTO and not cache_file(sha, options, onnx_export.DEFAULT_OPSET).is_file():
        n = image_tiles(list(images), scorer.tile, scorer.stride)
        if n < ONNX_MIN_TILES:
            return scorer, f"torch ({n} tiles: an ONNX export would not pay for itself below {ONNX_MIN_TILES})"
    try:
        net, how = cached_network(path, sha, load_model(path), options)
    except (NsganError, OSError) as exc:
        if backend == Backend.ONNX:
            raise ConfigError(f"--backend onnx: {name}: {exc}") from None
        return scorer, f"torch (ONNX export unavailable: {str(exc).splitlines()[0][:200]})"
    onnx_scorer = Scorer(None, None, resolution=net.resolution, channels=net.channels, thresholds=scorer.thresholds,
                         options=options, name=name, network=net, device="cpu", **kwargs)
    onnx_scorer.model_path, onnx_scorer._sha256 = path, sha  # reports name the .safetensors file, as with torch
    return onnx_scorer, f"onnxruntime, {how}"

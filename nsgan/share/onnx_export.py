"""`nsgan export-onnx`: the feed-forward scoring path as one ONNX file, checked in ONNX Runtime.

With an encoder, the file holds what the torch scorer computes per tile in encoder mode
(`--inversion encoder`, the default for such a model), from the tile as the Scorer cuts it:

    tile (N, C, T, T) in [0, 1] -> x = 2·tile − 1 -> z = E(x) -> reconstruction = G(z)
        residual (N, T, T): the model's per-tile map (maps.tile_residual, `detail`, `pixel` or `comparator`:
                             sigmoid(C(x, G(z))), the comparator C in the graph)
        score (N,):          mean|x − G(z)| as the scorer computes it for the default image score
                             (map_max or top_k_mean, both after blending; D not run); with `--image-score tile` AnoGAN's tile loss
                             (1−λ)·mean|x − G(z)| + λ·mean|f(x) − f(G(z))| (f: D's features, D in the graph)
        z (N, latent_dim)

N is dynamic. Everything after the network call stays in nsgan: tiling, the blending of the tiles'
maps, the map's Gaussian smoothing (map_sigma), the image score, regions and reports
(`nsgan score --onnx m.onnx`, `scorer_from_onnx`). Without an encoder the file holds G alone
(z -> image in about [-1, 1]); it cannot score images.

Right after the export, and before the file is written, ONNX Runtime runs the graph on the CPU on
random tiles at batch 1 and 5 against the torch path; a difference above the tolerance stops the
export. nsgan's settings travel in the ONNX model's metadata_props as JSON strings.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nsgan import __version__
from nsgan.common.atomic import atomic_write_bytes
from nsgan.common.errors import (
    EXIT_RUNTIME,
    ConfigError,
    ModelError,
    NsganError,
    OutputError,
)
from nsgan.models.model_file import LoadedModel, ModelMeta, load_model
from nsgan.score.choices import ImageScore, Inversion, Precision, Residual
from nsgan.score.loading import file_sha256
from nsgan.score.maps import DETAIL_SIGMA, IMAGE_SCORES, RESIDUALS, tile_residual
from nsgan.score.options import ScoreOptions, resolve_image_score, resolve_residual
from nsgan.score.scorer import Scorer
from nsgan.score.search import LatentSearch, SearchConfig

__all__ = ["export_onnx", "scorer_from_onnx", "ExportReport", "OnnxTileNetwork", "TileNetwork", "torch_tile_outputs",
           "file_sha256", "require_onnxruntime"]

FORMAT = "nsgan-onnx/1"
KIND_TILE = "tile-scorer"  # tile -> reconstruction, residual, score, z
KIND_GENERATOR = "generator"  # z -> image (a model without an encoder)
DEFAULT_OPSET = 18  # the lowest opset torch's exporter writes; ONNX Runtime ≥ 1.14 runs it
TOLERANCE = 1e-4  # max abs difference allowed between ONNX Runtime and torch, every output, fp32
CHECK_BATCHES = (1, 5)  # batch sizes of the check: 1 and another prove the batch axis is dynamic
TILE_OUTPUTS = ("reconstruction", "residual", "score", "z")
INSTALL_HINT = "install nsgan's onnx extra: pip install '.[onnx]' in its checkout (onnx, onnxruntime, onnxscript)"


class TileNetwork(nn.Module):
    """The torch scorer's per-tile work in encoder mode, as one module: tile in [0, 1] -> TILE_OUTPUTS.

    forward makes the calls the torch tile runner makes (nsgan/score/tiles.py TorchTiles: LatentSearch in
    encoder mode, D only when the tile loss is asked for, then maps.tile_residual), so the export cannot
    drift from the torch path.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, encoder: nn.Module, residual: Residual, lam: float,
                 tile_losses: bool, comparator: nn.Module | None = None):
        super().__init__()
        self.G, self.D, self.E = generator, discriminator, encoder
        self.C = comparator if residual == Residual.COMPARATOR else None
        self.residual, self.tile_losses = residual, tile_losses
        self.search = LatentSearch(generator, discriminator, SearchConfig(mode=Inversion.ENCODER, lam=lam), encoder=encoder)

    def forward(self, tile: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = tile * 2.0 - 1.0
        out = self.search.encoder_pass(x, tile_losses=self.tile_losses)  # what search() runs in encoder mode
        return out.reconstructions, tile_residual(x, out.reconstructions, self.residual, self.C), out.scores, out.latents


def torch_tile_outputs(generator: nn.Module, discriminator: nn.Module, encoder: nn.Module, tiles: np.ndarray,
                       residual: str, lam: float, image_score: str, comparator: nn.Module | None = None) -> dict[str, np.ndarray]:
    """TILE_OUTPUTS of tiles (N, C, T, T) in [0, 1] as the torch scorer computes them (Scorer.tile_outputs' calls)."""
    options = ScoreOptions(search=SearchConfig(mode=Inversion.ENCODER, lam=lam), residual=residual, image_score=image_score)
    scorer = Scorer(generator, discriminator, resolution=int(generator.resolution), channels=int(generator.channels),
                    options=options, device="cpu", encoder=encoder, comparator=comparator)
    x = torch.from_numpy(np.ascontiguousarray(tiles, np.float32)) * 2.0 - 1.0
    out = scorer.search.search(x, range(len(x)), tile_losses=scorer.options.image_score == ImageScore.TILE)
    res, _ = scorer.tile_outputs(np.ascontiguousarray(tiles, np.float32), range(len(x)))
    # the graph's score is always the encoder pass's (a C that reads no G(E(x)) lets the runner skip that pass)
    return {"reconstruction": out.reconstructions.numpy(), "residual": res.numpy(), "score": out.scores.numpy(),
            "z": out.latents.numpy()}


# -- the optional packages: deferred, so that nsgan runs (and scores with torch) without them ------------
def require_onnxruntime():
    """The onnxruntime module, or one line saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise NsganError(f"onnxruntime is not installed; {INSTALL_HINT}") from None
    return onnxruntime


def _require_exporter():
    """onnx (checker, metadata) and onnxscript (torch's exporter needs it), or one line naming the fix."""
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            raise NsganError(f"{name} is not installed (needed to export ONNX); {INSTALL_HINT}") from None
    import onnx

    return onnx


@contextlib.contextmanager
def _quiet_exporter():
    """torch's exporter prints progress, warnings and log lines; keep them off the user's terminal."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# -- export -----------------------------------------------------------------------------------------------
@dataclass
class ExportReport:
    """What `export_onnx` wrote and measured."""

    path: Path
    kind: str
    opset: int
    tolerance: float
    max_abs_diff: dict[int, dict[str, float]] = field(default_factory=dict)  # batch -> output -> max |ORT − torch|
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def worst(self) -> float:
        return max((d for per in self.max_abs_diff.values() for d in per.values()), default=0.0)


@dataclass(frozen=True)
class TileSettings:
    """The scoring options a tile-scorer graph computes (what `nsgan score --onnx` must then score with)."""

    residual: Residual  # resolved for the model: never auto
    lam: float
    image_score: ImageScore

    @property
    def tile_losses(self) -> bool:  # AnoGAN's tile loss needs D in the graph
        return self.image_score == ImageScore.TILE


@dataclass
class _Graph:
    """The module to export, its input/output names and an example input (batch axis 0 is dynamic)."""

    module: nn.Module
    inputs: list[str]
    outputs: list[str]
    example: torch.Tensor


def export_onnx(model_path: str | Path, out: str | Path, *, opset: int = DEFAULT_OPSET, overwrite: bool = False,
                residual: str | None = None, lam: float | None = None, image_score: str | None = None,
                tolerance: float = TOLERANCE, seed: int = 0) -> ExportReport:
    """Export a model file's feed-forward path to `out` (atomically), checked in ONNX Runtime against torch.

    With E: TileNetwork (TILE_OUTPUTS); without: G. `residual`, `image_score` and `lam` default to the
    scorer's defaults (ScoreOptions, SearchConfig); `image_score="tile"` puts D in the graph for the tile loss. Raises NsganError (one line) for anything the user can fix, and an
    exit-6 error, writing nothing, if ONNX Runtime and torch differ by more than `tolerance`.
    """
    model_path, out = Path(model_path), Path(out)
    onnx = _require_exporter()
    ort = require_onnxruntime()
    residual, lam, image_score = _check_request(onnx, out, opset, overwrite, residual, lam, image_score, tolerance)
    t0 = time.perf_counter()
    model = load_model(model_path)
    residual = _model_residual(model, model_path, residual)
    settings = TileSettings(residual, lam, resolve_image_score(image_score, residual))
    comparator = model.comparator if settings.residual == Residual.COMPARATOR else None
    graph = _graph(model, settings, comparator)
    meta = export_metadata(model, model_path, opset, tolerance, settings, comparator)
    data = _export(onnx, graph, meta, opset, model_path)
    report = ExportReport(out, meta["kind"], opset, tolerance, meta=meta)
    report.max_abs_diff = _verify(ort, data, graph, model, settings, comparator, out=out, opset=opset,
                                  tolerance=tolerance, seed=seed)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out.parent}: cannot create the folder for the ONNX file ({exc.strerror or exc})") from None
    atomic_write_bytes(out, data)
    report.seconds = time.perf_counter() - t0
    return report


def _check_request(onnx, out: Path, opset: int, overwrite: bool, residual: str | None, lam: float | None,
                   image_score: str | None, tolerance: float) -> tuple[Residual, float, ImageScore]:
    """The export's own arguments, checked before any model is loaded: (residual, lam, image score), defaults filled in."""
    if isinstance(opset, bool) or not isinstance(opset, int) or not DEFAULT_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ConfigError(f"--opset: {opset!r} is not one this exporter writes "
                          f"({DEFAULT_OPSET}..{onnx.defs.onnx_opset_version()}; torch's exporter starts at {DEFAULT_OPSET})")
    if not (tolerance > 0 and np.isfinite(tolerance)):
        raise ConfigError(f"--tolerance: {tolerance!r} must be a positive number")
    defaults = ScoreOptions()
    residual = Residual.parse(defaults.residual if residual is None else residual, "--residual", listed=True)
    image_score = ImageScore.parse(defaults.image_score if image_score is None else image_score, "--image-score", listed=True)
    lam = SearchConfig(mode=Inversion.ENCODER, lam=SearchConfig().lam if lam is None else float(lam)).lam  # the search's own check
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; pass a file name such as {out / 'model.onnx'}")
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: exists (use --overwrite to replace it)")
    return residual, lam, image_score


def _model_residual(model: LoadedModel, model_path: Path, residual: Residual) -> Residual:
    """`auto` resolved for this model; ModelError when it asks for a comparator the model does not hold."""
    residual = resolve_residual(residual, model.comparator is not None)
    if residual == Residual.COMPARATOR and model.comparator is None:
        raise ModelError(f"{model_path}: holds no comparator, so --residual comparator cannot be exported; train one with "
                         f"`nsgan train-comparator --model {model_path} comparator.kimg=N` or export with --residual detail")
    return residual


def _graph(model: LoadedModel, settings: TileSettings, comparator: nn.Module | None) -> _Graph:
    """With an encoder the tile scorer (TileNetwork), else G alone."""
    r, c = model.resolution, model.channels
    if model.encoder is not None:
        module = TileNetwork(model.generator, model.discriminator, model.encoder, settings.residual, settings.lam,
                             settings.tile_losses, comparator).eval()
        return _Graph(module, ["tile"], list(TILE_OUTPUTS), torch.rand(2, c, r, r))
    return _Graph(model.generator.eval(), ["z"], ["image"], torch.randn(2, model.latent_dim))


def export_metadata(model: LoadedModel, model_path: Path, opset: int, tolerance: float, settings: TileSettings,
                    comparator: nn.Module | None) -> dict[str, Any]:
    """nsgan's settings for the file's metadata_props (each value JSON): what the graph computes and from what."""
    r, c = model.resolution, model.channels
    meta: dict[str, Any] = {
        "format": FORMAT,
        "nsgan_version": __version__,
        "opset": opset,
        "resolution": r,
        "channels": c,
        "latent_dim": model.latent_dim,
        "source_model": model_path.name,
        "source_sha256": file_sha256(model_path),
        "images_seen": model.meta.get("images_seen"),
        "tolerance": tolerance,
    }
    if model.encoder is None:
        meta.update({
            "kind": KIND_GENERATOR,
            "input": {"z": [None, model.latent_dim]},
            "outputs": {"image": [None, c, r, r]},
            "output_range": "about [-1, 1] (G's linear output); image = (out + 1) / 2",
        })
        return meta
    meta.update({
        "kind": KIND_TILE,
        "input": {"tile": [None, c, r, r], "range": [0.0, 1.0], "as": "the Scorer's tiles (nsgan.data.tiling.cut_tiles)"},
        "outputs": {"reconstruction": [None, c, r, r], "residual": [None, r, r], "score": [None],
                    "z": [None, model.latent_dim]},
        "inversion": Inversion.ENCODER,
        "residual": settings.residual,
        "detail_sigma": DETAIL_SIGMA,
        "image_score": settings.image_score,
        "score": ("AnoGAN tile loss (1-lam)*mean|x-G(z)| + lam*mean|f(x)-f(G(z))|, f: D's features" if settings.tile_losses
                  else "mean|x-G(z)| (D not in the graph)"),
        "lam": settings.lam if settings.tile_losses else None,
        # applied by nsgan after blending, not in the graph; the scorer's default, for the record
        "after_blending": {"map_sigma": ScoreOptions().map_sigma},
        "thresholds": model.thresholds or None,
        "encoder": {k: v for k, v in (model.meta.get("encoder") or {}).items() if k != "config"},
        "comparator": ({k: (model.meta.get("comparator") or {}).get(k) for k in ("network", "digest", "basis_digest")}
                       if comparator is not None else None),
    })
    return meta


def _export(onnx, graph: _Graph, meta: dict[str, Any], opset: int, model_path: Path) -> bytes:
    """The graph through torch's exporter (dynamic batch), nsgan's metadata in it, checked by onnx: the file's bytes."""
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            graph.module, (graph.example,), None, input_names=graph.inputs, output_names=graph.outputs,
            opset_version=opset, dynamic_shapes={graph.inputs[0]: {0: torch.export.Dim("batch")}}, external_data=False,
            dynamo=True, verbose=False,
        )
        proto = program.model_proto
    written = {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")}
    if written != {opset}:
        raise ConfigError(f"--opset: {opset} was asked for but the exporter wrote {sorted(written)}; use --opset {DEFAULT_OPSET}")
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    proto.producer_name, proto.producer_version = "nsgan", __version__
    proto.doc_string = (f"nsgan {meta['kind']} exported from {model_path.name}"
                        + (" (tile in [0, 1] -> reconstruction, residual, score, z)" if meta["kind"] == KIND_TILE else ""))
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def _verify(ort, data: bytes, graph: _Graph, model: LoadedModel, settings: TileSettings, comparator: nn.Module | None,
            *, out: Path, opset: int, tolerance: float, seed: int) -> dict[int, dict[str, float]]:
    """Max |ORT − torch| per output at each of CHECK_BATCHES on random inputs; an error (nothing written) above `tolerance`."""
    try:
        session = _session(ort, data, threads=torch.get_num_threads())
    except Exception as exc:  # e.g. an opset newer than this onnxruntime knows
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"--opset {opset}: onnxruntime {ort.__version__} cannot load the exported graph ({first[:200]}); "
                          f"try --opset {DEFAULT_OPSET}") from None
    rng = np.random.default_rng(seed)
    diffs_at: dict[int, dict[str, float]] = {}
    for n in CHECK_BATCHES:
        feed, ref = _reference(rng, n, graph, model, settings, comparator)
        try:
            got = dict(zip(graph.outputs, session.run(graph.outputs, {graph.inputs[0]: feed})))
        except Exception as exc:  # e.g. a batch axis the exporter fixed after all
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise NsganError(f"{out}: ONNX Runtime could not run the export at batch {n} ({first[:200]}); the export is "
                             "wrong, nothing was written", exit_code=EXIT_RUNTIME) from None
        diffs_at[n] = diffs = {}
        for name in graph.outputs:
            if got[name].shape != ref[name].shape:
                raise NsganError(f"{out}: ONNX Runtime gives {name} of shape {got[name].shape} at batch {n}, torch "
                                 f"{ref[name].shape}; the export is wrong, nothing was written", exit_code=EXIT_RUNTIME)
            diffs[name] = float(np.abs(got[name].astype(np.float64) - ref[name]).max())
        bad = {k: v for k, v in diffs.items() if not v <= tolerance}
        if bad:
            name, d = max(bad.items(), key=lambda kv: kv[1])
            raise NsganError(f"{out}: ONNX Runtime and torch differ by {d:.3g} in {name!r} at batch {n} (tolerance "
                             f"{tolerance:g}); nothing was written", exit_code=EXIT_RUNTIME)
    return diffs_at


def _reference(rng: np.random.Generator, n: int, graph: _Graph, model: LoadedModel, settings: TileSettings,
               comparator: nn.Module | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(random input of batch n, torch's outputs for it): tiles in [0, 1] for the tile scorer, z for G."""
    c, r = model.channels, model.resolution
    if model.encoder is not None:  # the tile scorer (_graph)
        feed = rng.random((n, c, r, r), dtype=np.float32)
        return feed, torch_tile_outputs(model.generator, model.discriminator, model.encoder, feed, settings.residual,
                                        settings.lam, settings.image_score, comparator)
    feed = rng.standard_normal((n, model.latent_dim), dtype=np.float32)
    with torch.no_grad():
        return feed, {"image": model.generator(torch.from_numpy(feed)).numpy()}


def _session(ort, model: bytes | str, threads: int | None = None):
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


# -- scoring with an exported file -------------------------------------------------------------------------
def read_onnx_metadata(session, path: Path) -> dict[str, Any]:
    """nsgan's metadata of a loaded ONNX model; ModelError when it is not an nsgan export."""
    raw = session.get_modelmeta().custom_metadata_map or {}
    if "format" not in raw:
        raise ModelError(f"{path}: an ONNX model, but not one nsgan exported (no nsgan metadata); export one with "
                         "`nsgan export-onnx --model model.safetensors --out m.onnx`")
    try:
        meta = {k: json.loads(v) for k, v in raw.items()}
    except json.JSONDecodeError:
        raise ModelError(f"{path}: an ONNX model whose metadata is not nsgan's JSON; export it again") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path}: not an nsgan ONNX export (format is {meta.get('format')!r}, expected {FORMAT!r})")
    for key in ("resolution", "channels", "latent_dim"):
        v = meta.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ModelError(f"{path}: nsgan ONNX metadata {key!r} is {v!r}, expected a positive integer; export it again")
    if meta.get("kind") not in (KIND_TILE, KIND_GENERATOR):
        raise ModelError(f"{path}: nsgan ONNX metadata 'kind' is {meta.get('kind')!r}; export it again")
    return meta


class OnnxTileNetwork(ModelMeta):
    """An exported tile scorer in an ONNX Runtime session: the Scorer's per-tile network call.

    `network(tiles)` takes tiles (N, C, T, T) in [0, 1] (float32, as the Scorer cuts them) and returns
    the residual maps (N, T, T) and tile scores (N,) as numpy arrays.
    """

    def __init__(self, session, meta: dict[str, Any], path: Path):
        self.session, self.meta, self.path = session, meta, path
        self.has_comparator = meta.get("residual") == Residual.COMPARATOR
        self.comparator_digest = (meta.get("comparator") or {}).get("digest") if self.has_comparator else None

    @classmethod
    def from_file(cls, path: str | Path, threads: int | None = None) -> "OnnxTileNetwork":
        path = Path(path)
        ort = require_onnxruntime()
        if not path.is_file():
            raise ModelError(f"{path}: no such ONNX file")
        try:
            session = _session(ort, str(path), threads if threads is not None else torch.get_num_threads())
        except Exception as exc:  # onnxruntime raises its own types for a file that is not ONNX
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(f"{path}: not a readable ONNX model ({first[:200]}); pass a file written by "
                             "`nsgan export-onnx`") from None
        meta = read_onnx_metadata(session, path)
        if meta["kind"] != KIND_TILE:
            raise ModelError(f"{path}: holds only the generator (its model had no encoder), so it cannot score images; "
                             f"train one with `nsgan train-encoder --model {meta.get('source_model', 'M')} encoder.kimg=N` "
                             "and export again")
        r, c = meta["resolution"], meta["channels"]
        ins = {i.name: i.shape for i in session.get_inputs()}
        outs = {o.name for o in session.get_outputs()}
        if list(ins) != ["tile"] or list(ins["tile"][1:]) != [c, r, r] or not {"residual", "score"} <= outs:
            raise ModelError(f"{path}: its graph does not take tile ({c}, {r}, {r}) -> residual, score as its "
                             "metadata says; export it again")
        if meta.get("residual") not in RESIDUALS or meta.get("image_score") not in IMAGE_SCORES or (
                meta["image_score"] == ImageScore.TILE and not isinstance(meta.get("lam"), (int, float))):
            raise ModelError(f"{path}: nsgan ONNX metadata lacks its residual, image score or lam; export it again")
        return cls(session, meta, path)

    def check_options(self, options) -> None:
        """ConfigError for scoring options the exported graph does not compute (resolved ScoreOptions)."""
        s = options.search
        options = replace(options, residual=resolve_residual(options.residual, self.has_comparator))
        options = replace(options, image_score=resolve_image_score(options.image_score, options.residual))
        if s.mode != Inversion.ENCODER:
            raise ConfigError(f"--inversion {s.mode}: {self.path} computes the encoder's one pass only; score with "
                              "--inversion encoder, or with --model for search/refine")
        if s.precision != Precision.FP32:
            raise ConfigError(f"--precision {s.precision}: {self.path} computes in fp32; score with --precision fp32")
        if options.residual != self.meta["residual"]:
            raise ConfigError(f"--residual {options.residual}: {self.path} computes the {self.meta['residual']!r} residual; "
                              f"score with --residual {self.meta['residual']} or export again with --residual {options.residual}")
        # only the tile loss is in the graph; the map's image scores (map_max, top_k_mean) are computed after blending
        if (options.image_score == ImageScore.TILE) != (self.meta["image_score"] == ImageScore.TILE):
            what = "the AnoGAN tile loss (D in the graph)" if self.meta["image_score"] == ImageScore.TILE else "no tile loss (no D)"
            raise ConfigError(f"--image-score {options.image_score}: {self.path} computes {what}; score with --image-score "
                              f"{self.meta['image_score']} or export again with --image-score {options.image_score}")
        if self.meta["image_score"] == ImageScore.TILE and float(s.lam) != float(self.meta["lam"]):
            raise ConfigError(f"--lam {s.lam:g}: {self.path} was exported with lam {self.meta['lam']:g}; score with "
                              f"--lam {self.meta['lam']:g} or export again with --lam {s.lam:g}")

    def __call__(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        res, score = self.session.run(["residual", "score"], {"tile": np.ascontiguousarray(tiles, np.float32)})
        return res, score


# -- a Scorer around an exported file ---------------------------------------------------------------------


def scorer_from_onnx(path: str | Path, options: ScoreOptions | None = None, threads: int | None = None, **kwargs) -> Scorer:
    """A Scorer whose per-tile call is a file from `nsgan export-onnx` in ONNX Runtime (CPU): only that call
    changes. ModelError for a file that is not an nsgan tile-scorer export, ConfigError for options it
    does not compute (another inversion mode, residual, image score or λ, bf16)."""
    net = OnnxTileNetwork.from_file(path, threads=threads)
    if kwargs.get("accelerator") is None:
        kwargs.setdefault("device", "cpu")  # ONNX Runtime runs on the CPU; keep the maps there
    scorer = Scorer(None, None, resolution=net.resolution, channels=net.channels, thresholds=net.thresholds,
                    options=options, name=str(path), network=net, **kwargs)
    scorer.model_path = Path(path)  # the reports name the ONNX file's sha256 (its metadata, the source model's)
    return scorer

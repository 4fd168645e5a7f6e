"""What a hostile or broken file can do: no code runs from it (no pickle), its metadata and pixel
counts are bounded before anything big is allocated, and gigapixel TIFFs still open lazily."""

from __future__ import annotations

import ast
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from nsgan.common.errors import DataError, ModelError

from .conftest import REPO

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal", "cloudpickle"}
UNSAFE_CALLS = {"torch.load", "yaml.load", "yaml.unsafe_load", "yaml.full_load", "np.load", "numpy.load", "eval", "exec"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def unsafe_uses(source: str) -> list[tuple[int, str]]:
    """(line, what) for every import of an unpickler and every call that can run code from a file."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            hits += [(node.lineno, f"import {a.name}") for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            hits.append((node.lineno, f"from {node.module} import"))
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            pickled = any(k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False) for k in node.keywords)
            if name in UNSAFE_CALLS and not (name in ("np.load", "numpy.load") and not pickled):
                hits.append((node.lineno, name))
    return hits


def test_the_scan_finds_what_it_looks_for():
    bad = "import pickle\nfrom dill import loads\nimport torch\ntorch.load(p)\nnp.load(p, allow_pickle=True)\neval(s)\nyaml.load(t)\n"
    assert [w for _, w in unsafe_uses(bad)] == ["import pickle", "from dill import", "torch.load", "np.load", "eval", "yaml.load"]
    assert unsafe_uses("m.eval()\nnp.load(p)\nx = 'torch.load(p) without pickle'\n") == []


def test_no_module_can_unpickle_or_execute_a_file():
    """No torch.load, pickle, unsafe YAML or eval anywhere in the package, its launchers and tools."""
    hits = []
    for path in [*REPO.glob("nsgan/**/*.py"), *REPO.glob("launch/*.py"), *REPO.glob("tools/**/*.py")]:
        hits += [f"{path.relative_to(REPO)}:{line}: {what}" for line, what in unsafe_uses(path.read_text())]
    assert hits == []


def test_models_states_shards_and_images_load_with_unpickling_forbidden(monkeypatch, uninterrupted_tiny_model, tiny_shards):
    """The real loading paths run with torch.load and every unpickler replaced by a trap."""
    def trap(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(torch, "load", trap)
    monkeypatch.setattr(pickle, "load", trap)
    monkeypatch.setattr(pickle, "loads", trap)
    monkeypatch.setattr(pickle, "Unpickler", trap)
    from nsgan.train.checkpoint import find_latest, load_state
    from nsgan.data.stream import ShardStream
    from nsgan.models.model_file import load_model
    from nsgan.score.options import ScoreOptions
    from nsgan.score.scorer import Scorer
    from nsgan.score.search import SearchConfig

    m = load_model(uninterrupted_tiny_model)
    tensors, info = load_state(find_latest(uninterrupted_tiny_model.parent))
    assert tensors and info["images_seen"] == m.meta["images_seen"]
    batch = next(iter(ShardStream(sorted(str(p) for p in (tiny_shards / "normal").glob("*.tar")), tile=16, channels=1, batch=4, seed=0, num_workers=0)))
    assert batch.images.shape == (4, 1, 16, 16)
    scorer = Scorer.from_file(uninterrupted_tiny_model, ScoreOptions(search=SearchConfig(iterations=2, restarts=1)))
    assert np.isfinite(scorer.score(np.full((20, 20), 0.5, np.float32)).score)


def test_an_oversized_model_header_is_refused_before_it_is_parsed(tmp_path):
    from nsgan.models.model_file import MAX_HEADER_BYTES, read_metadata

    path = tmp_path / "huge.safetensors"
    n = MAX_HEADER_BYTES + 1
    path.write_bytes(struct.pack("<Q", n) + b"{" + b" " * (n - 2) + b"}")
    with pytest.raises(ModelError, match=r"huge\.safetensors: safetensors header length \d+ exceeds nsgan's limit"):
        read_metadata(path)


def test_metadata_of_the_wrong_shape_is_refused_not_trusted(tmp_path, model_file):
    from safetensors.torch import save_file

    from nsgan.models.model_file import load_model

    path = tmp_path / "m.safetensors"
    save_file({"G_ema.x": torch.zeros(1)}, str(path), metadata={
        "format": '"nsgan-model/1"', "resolution": "16", "channels": "1", "latent_dim": "-5",
        "generator": "{}", "discriminator": "{}"})
    with pytest.raises(ModelError, match="'latent_dim' is -5, expected a positive integer"):
        load_model(path)


def test_decoder_pixel_limit_is_set_deliberately(tmp_path):
    from PIL import Image

    from nsgan.data.imageio import MAX_DECODE_PIXELS, read_image, write_png

    write_png(tmp_path / "ok.png", np.zeros((8, 8, 1), np.float32))
    read_image(tmp_path / "ok.png")
    assert Image.MAX_IMAGE_PIXELS == MAX_DECODE_PIXELS == 2**28


def _sparse_tiled_tiff(path: Path, side: int, tile: int = 256) -> Path:
    """A side × side 8-bit gray tiled TIFF of ~100 kB: every tile entry points at one stored zero tile."""
    n = (side // tile) ** 2
    data_at, offsets_at = 8, 8 + tile * tile
    counts_at = offsets_at + 4 * n
    ifd_at = counts_at + 4 * n
    entries = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (277, 3, 1, 1),
               (322, 4, 1, tile), (323, 4, 1, tile), (324, 4, n, offsets_at), (325, 4, n, counts_at)]
    with open(path, "wb") as fh:
        fh.write(b"II*\x00" + struct.pack("<I", ifd_at))
        fh.write(bytes(tile * tile))
        fh.write(struct.pack(f"<{n}I", *([data_at] * n)))
        fh.write(struct.pack(f"<{n}I", *([tile * tile] * n)))
        fh.write(struct.pack("<H", len(entries)))
        for tag, typ, count, value in entries:
            fh.write(struct.pack("<HHII", tag, typ, count, value))
        fh.write(struct.pack("<I", 0))
    return path


def test_a_gigapixel_tiff_opens_lazily_though_it_is_over_the_limit_for_whole_reads(tmp_path):
    from nsgan.data.bigimage import open_image
    from nsgan.data.imageio import MAX_DECODE_PIXELS, read_image

    side = 32768  # 1.07 gigapixels, 4x the whole-read limit, ~130 kB on disk
    path = _sparse_tiled_tiff(tmp_path / "giga.tif", side)
    assert side * side > MAX_DECODE_PIXELS and path.stat().st_size < 200_000
    with open_image(path) as src:
        assert src.shape == (side, side) and src.channels == 1
        region = src.read(side - 40, side, side - 300, side)
        assert region.shape == (40, 300, 1) and region.max() == 0.0
    with pytest.raises(DataError, match=r"giga\.tif: 32768×32768 pixels exceeds nsgan's pixel limit"):
        read_image(path)

"""Shared fixtures: a tiny painted dataset as shards, and a tiny training config around it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two cores shared by everything: one thread per process is much faster for tiny networks.
torch.set_num_threads(1)

# `nsgan score`'s ONNX cache (nsgan/share/onnx_cache.py): never the user's ~/.cache from a test.
if "NSGAN_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["NSGAN_CACHE_DIR"] = tempfile.mkdtemp(prefix="nsgan-test-cache-")

REPO = Path(__file__).resolve().parent.parent

# Tiny settings every training test starts from: 16-px gray tiles, narrow networks, a few hundred images.
TINY = [
    "model.resolution=16", "model.latent_dim=16", "model.fmap_base=64", "model.fmap_max=16",
    "schedule.start_resolution=8", "schedule.stable_kimg=0.064", "schedule.fade_kimg=0.064",
    "schedule.total_kimg=0.256", "schedule.batch={8: 16, 16: 8}", "schedule.default_batch=8",
    "train.checkpoint_kimg=0.064", "train.log_every=2", "train.grid_size=2", "train.display=false",
    "train.mixed_precision=no", "data.num_workers=0", "loss.gamma=0.2", "loss.r1_gamma=1",
]


# A 16-px model that learns smooth material in about a minute (tests/test_detection.py, tests/test_audit.py).
SMOOTH_MATERIAL_TRAIN = [
    "model.resolution=16", "model.latent_dim=16", "model.fmap_base=128", "model.fmap_max=32",
    "schedule.start_resolution=8", "schedule.stable_kimg=0.5", "schedule.fade_kimg=0.5", "schedule.total_kimg=2",
    "schedule.batch={8: 16, 16: 16}", "schedule.default_batch=16", "schedule.lr=0.002", "train.ema_kimg=0.5",
    "train.checkpoint_kimg=100", "train.grid_size=4", "train.display=false", "train.mixed_precision=no",
    "data.num_workers=0", "loss.r1_gamma=0.1", "encoder.kimg=1", "encoder.batch=16",
]


def smooth_material(rng, n: int = 64):
    """Smooth random 'material' (n, n) float32 in [0.25, 0.75]: what that small G learns within a minute."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal((n, n)), 3, mode="wrap")
    f = (f - f.min()) / (f.max() - f.min())
    return (0.25 + 0.5 * f).astype(np.float32)


def write_dirty_folder(folder: Path, rng, n_clean: int, n_dirty: int, size: int, sub_every: int) -> dict[str, bool]:
    """A 'normal' folder of smooth material whose last `n_dirty` images hide painted defects (every `sub_every`-th
    in a subfolder); returns {relative path: dirty} (the audit tests' training folders)."""
    import numpy as np
    from PIL import Image

    from nsgan.data.painter import paint_defects

    (folder / "sub").mkdir(parents=True)
    names = {}
    for i in range(n_clean + n_dirty):
        img = smooth_material(rng, size)
        if i >= n_clean:
            img = paint_defects(img[..., None], rng, count=2, max_area_frac=0.01)[0][..., 0]
        rel = f"sub/img{i:02d}.png" if i % sub_every == 0 else f"img{i:02d}.png"
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / rel)
        names[rel] = i >= n_clean
    return names


def with_untrained_comparator(base: Path, dest: Path, comparator, digest: str | None = None) -> Path:
    """A copy of model file `base` at `dest` with `comparator` (untrained) added for its G and E; `digest` defaults
    to the comparator's weights digest."""
    import shutil

    from nsgan.models.model_file import add_comparator, basis_digest, load_model
    from nsgan.train.common import weights_digest

    shutil.copy(base, dest)
    m = load_model(dest)
    add_comparator(dest, comparator, {"basis_digest": basis_digest(m.generator, m.encoder),
                                      "digest": digest or weights_digest([comparator])})
    return dest


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> Path:
    """Shards of 16-px tiles cut from a few painted brick images (normal + abnormal with masks)."""
    from nsgan.demo import build_dataset
    from nsgan.data.shards import write_shards

    root = tmp_path_factory.mktemp("tiny")
    build_dataset(root / "data", n_normal=6, n_abnormal=3, size=64, seed=0)
    write_shards(root / "data" / "normal", root / "data" / "abnormal", root / "data" / "abnormal_masks",
                 tile=16, out=root / "shards", stride=16, channels=1, seed=0)
    return root / "shards"


@pytest.fixture
def tiny_overrides(tiny_shards, tmp_path) -> list[str]:
    return [*TINY, f"data.normal={tiny_shards / 'normal'}", f"data.abnormal={tiny_shards / 'abnormal'}", f"run_dir={tmp_path / 'run'}"]


def subprocess_env() -> dict[str, str]:
    """Environment for child processes: the repo importable, CPU only, unbuffered, few threads."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env["ACCELERATE_USE_CPU"] = "1"
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    env.pop("LOCAL_RANK", None)
    return env


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    """A real (untrained) exported 16-px gray model, for the CLI paths of score and evaluate."""
    from nsgan.models.model_file import save_model
    from nsgan.models.networks import Discriminator, Generator

    torch.manual_seed(0)
    g = Generator(16, 1, latent_dim=16, fmap_base=64, fmap_max=16)
    d = Discriminator(16, 1, fmap_base=64, fmap_max=16)
    return save_model(tmp_path_factory.mktemp("model") / "m.safetensors", g, d, {"config": {}, "images_seen": 0})


@pytest.fixture(scope="session")
def gan_model_with_encoder(model_file, tmp_path_factory) -> Path:
    """The untrained model of `model_file` plus an (untrained) encoder: enough for the encoder code paths."""
    import shutil

    from nsgan.models.encoder import Encoder
    from nsgan.models.model_file import add_encoder

    path = tmp_path_factory.mktemp("model-e") / "m.safetensors"
    shutil.copy(model_file, path)
    torch.manual_seed(1)
    add_encoder(path, Encoder(16, 1, 16, fmap_base=64, fmap_max=16), {"images_seen": 0})
    return path


@pytest.fixture(scope="session")
def uninterrupted_tiny_model(tiny_shards, tmp_path_factory) -> Path:
    """The tiny config trained start to end without a break: what every resumed run must equal exactly."""
    from nsgan.train.config import load_config
    from nsgan.train.pipeline import train

    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    overrides = [*TINY, f"data.normal={tiny_shards / 'normal'}", f"data.abnormal={tiny_shards / 'abnormal'}", f"run_dir={run}"]
    return train(load_config(None, overrides))


def assert_same_model(a: Path, b: Path) -> None:
    """Two model files hold bit-identical tensors and the same images seen."""
    from safetensors.torch import load_file

    from nsgan.models.model_file import read_metadata

    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs between {a} and {b}"
    assert read_metadata(a)["images_seen"] == read_metadata(b)["images_seen"]


def free_port() -> int:
    """A TCP port nobody listens on now, for a test's process-group rendezvous (a fixed one can collide)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tensorboard_log(folder: Path) -> dict:
    """What TensorBoard itself reads from a run's event files (its own EventAccumulator), and which processes wrote them.

    {"scalars": {tag: [(step, value), ...]}, "images": {tag: [(step, width, height), ...]},
     "pids": the process ids in the names of every event file under `folder`}
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    files = list(Path(folder).rglob("events.out.tfevents.*"))
    return {
        "scalars": {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags["scalars"]},
        "images": {t: [(e.step, e.width, e.height) for e in acc.Images(t)] for t in tags["images"]},
        "pids": {f.name.split(".")[-2] for f in files},  # events.out.tfevents.<time>.<host>.<pid>.<n>
    }


def training_rows(path: Path) -> list[dict]:
    """metrics.jsonl's training rows: the rows a phase measured at its edges (sample quality) carry a `kind` and are left out."""
    import json

    return [r for r in (json.loads(line) for line in Path(path).read_text().splitlines()) if "kind" not in r]

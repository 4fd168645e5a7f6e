"""Loading a model by file, folder or Hugging Face Hub repo id: `Scorer.from_pretrained`, `nsgan score --model`.

The Hub tests use an offline cache built here (HF_HUB_OFFLINE=1, HF_HUB_CACHE), never the network.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nsgan.share.card import write_card
from nsgan.common.errors import ModelError
from nsgan.score.options import ScoreOptions
from nsgan.score.scorer import Scorer
from nsgan.score.search import SearchConfig

from .conftest import REPO, subprocess_env

REPO_ID = "acme/brick-gan"


def offline_cache(root: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """A Hugging Face hub cache holding `files` at revision main, laid out as huggingface_hub writes it."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = root / f"models--{repo_id.replace('/', '--')}"
    for sub in ("blobs", "refs", f"snapshots/{commit}"):
        (repo / sub).mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for name, src in files.items():
        data = src.read_bytes()
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (repo / "snapshots" / commit / name).symlink_to(Path("..") / ".." / "blobs" / blob)
    return root


@pytest.fixture
def model_folder(gan_model_with_encoder, tmp_path) -> Path:
    folder = tmp_path / "published"
    folder.mkdir()
    shutil.copy(gan_model_with_encoder, folder / "model.safetensors")
    write_card(folder / "model.safetensors")
    return folder


@pytest.fixture
def offline_hub(model_folder, tmp_path, monkeypatch) -> Path:
    """HF_HUB_OFFLINE=1 and HF_HUB_CACHE at a cache holding REPO_ID, as huggingface_hub sees them in this process."""
    from huggingface_hub import constants

    cache = offline_cache(tmp_path / "hub", REPO_ID, {"model.safetensors": model_folder / "model.safetensors",
                                                      "README.md": model_folder / "README.md"})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_from_pretrained_folder_and_offline_hub_cache_score_as_the_file(model_folder, offline_hub, gan_model_with_encoder):
    img = np.random.default_rng(5).random((24, 20)).astype(np.float32)
    options = ScoreOptions(search=SearchConfig(mode="refine", iterations=2))
    reference = Scorer.from_file(gan_model_with_encoder, options).score(img)
    for ref in (model_folder, str(model_folder), str(model_folder / "model.safetensors"), REPO_ID):
        scorer = Scorer.from_pretrained(ref, options)
        got = scorer.score(img)
        np.testing.assert_array_equal(got.map, reference.map)
        assert got.score == reference.score
    assert Scorer.from_pretrained(REPO_ID).name == REPO_ID
    snapshot = next((offline_hub / f"models--{REPO_ID.replace('/', '--')}" / "snapshots").iterdir())
    assert (snapshot / "README.md").is_file()


@pytest.mark.parametrize("case", ["missing-folder", "folder-without-model", "missing-file", "repo-not-in-cache"])
def test_from_pretrained_bad_inputs_are_one_line_model_errors(case, offline_hub, tmp_path):
    (tmp_path / "empty").mkdir()
    ref, needles = {
        "missing-folder": (str(tmp_path / "nope"), ("nope", "no such model file or folder")),
        "folder-without-model": (str(tmp_path / "empty"), ("empty", "holds no model.safetensors")),
        "missing-file": ("gone/model.safetensors", ("gone/model.safetensors", "no such model file")),
        "repo-not-in-cache": ("acme/other-gan", ("acme/other-gan", "not in the Hugging Face cache", "HF_HUB_OFFLINE")),
    }[case]
    with pytest.raises(ModelError) as err:
        Scorer.from_pretrained(ref)
    msg = str(err.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    assert err.value.exit_code == 4


def test_nsgan_score_takes_a_hub_repo_id_from_the_offline_cache(model_folder, tmp_path):
    """The real environment variables, in a fresh process: HF_HUB_OFFLINE=1 and HF_HUB_CACHE."""
    from PIL import Image

    cache = offline_cache(tmp_path / "hub", REPO_ID, {"model.safetensors": model_folder / "model.safetensors"})
    Image.fromarray((np.random.default_rng(3).random((20, 20)) * 255).astype(np.uint8)).save(tmp_path / "img.png")
    env = {**subprocess_env(), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    run = [sys.executable, "-m", "nsgan.cli.main", "score", "--image", str(tmp_path / "img.png"), "--no-progress"]
    ok = subprocess.run([*run, "--model", REPO_ID, "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True,
                        timeout=300, cwd=REPO)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "img.json").read_text())["model"] == REPO_ID
    missing = subprocess.run([*run, "--model", "acme/missing", "--out", str(tmp_path / "out2")], env=env, capture_output=True,
                             text=True, timeout=300, cwd=REPO)
    err = missing.stderr.strip().splitlines()
    assert missing.returncode == 4 and len(err) == 1 and "acme/missing" in err[0] and "HF_HUB_OFFLINE" in err[0], missing.stderr

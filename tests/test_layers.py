"""The house's import direction is a checked contract (.importlinter), not a hope: the real tree keeps it,
and a planted upward import or loop circle breaks it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy under test, ahead of the installed nsgan
    return subprocess.run([LINT, "--no-cache", "--no-logo", str(root / ".importlinter")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def house(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "nsgan", tmp_path / "nsgan", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def _plant(root: Path, module: str, line: str) -> None:
    path = root / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n\ndef _planted():\n    {line}\n")


def test_the_tree_keeps_every_contract(house):
    proc = _lint(house)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize("module, line, broken", [
    # scoring reaching up to the page it is shown on: the circle issue 17 removed
    ("nsgan.score.scorer", "from nsgan.share.html_page import ScorePage", "Rooms import downward only"),
    # a data module importing the training loop
    ("nsgan.data.shards", "from nsgan.train.pipeline import train", "Rooms import downward only"),
    # the encoder loop importing the GAN loop back: the old training <-> encoder_training circle
    ("nsgan.train.encoder_loop", "from nsgan.train.gan_loop import Trainer", "do not import each other"),
])
def test_a_planted_forbidden_import_breaks_the_contract(house, module, line, broken):
    _plant(house, module, line)
    proc = _lint(house)
    assert proc.returncode != 0
    out = proc.stdout
    assert "BROKEN" in out and broken in out.split("Broken contracts", 1)[1], out
    assert module in out.split("Broken contracts", 1)[1], out

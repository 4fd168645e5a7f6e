"""The README's promises that code can check: CI runs its test line, and the files it names exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def quick_start_lines() -> list[str]:
    block = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.strip().splitlines() if line.strip()]


def test_quick_start_is_two_lines_and_ci_runs_the_test_line():
    lines = quick_start_lines()
    assert len(lines) == 2 and "nsgan demo" in lines[0] and lines[1].endswith("pytest -q")
    assert lines[1] in (REPO / ".ci" / "run").read_text().splitlines()


def test_every_config_tool_and_launch_path_the_readme_names_exists():
    named = set(re.findall(r"\b((?:configs|tools|launch)/[\w./-]+\.(?:yaml|py|sbatch))", README))
    assert len(named) > 10
    missing = sorted(p for p in named if not (REPO / p).is_file())
    assert not missing, missing

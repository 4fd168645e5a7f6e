"""Scripts under tools/ use nsgan's public API only (`nsgan`'s root names, `nsgan.cli`), so every benchmark and
experiment measures what users run, and the rooms inside nsgan can move without breaking them (issue 24)."""

from __future__ import annotations

import ast
import importlib
import re
import shutil
from pathlib import Path

import pytest

import nsgan

REPO = Path(__file__).resolve().parent.parent
ALLOWED_MODULES = {"nsgan", "nsgan.cli"}
PUBLIC = set(nsgan._API) | {"__version__"}
MODULE_NAME = re.compile(r"nsgan(\.\w+)+")  # a whole string naming a module (importlib's argument, `python -m`'s), or
# a public name ("nsgan.RunLayout" as a quoted annotation: allowed)


def _import_problems(tree: ast.AST, where: str) -> list[str]:
    problems = []
    nsgan_names = set()  # local names bound to the nsgan package itself
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "nsgan":
                    continue
                if alias.name not in ALLOWED_MODULES:
                    problems.append(f"{where}:{node.lineno}: import {alias.name}")
                elif alias.name == "nsgan":
                    nsgan_names.add(alias.asname or "nsgan")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "nsgan":
            if node.module not in ALLOWED_MODULES:
                problems.append(f"{where}:{node.lineno}: from {node.module} import ...")
            elif node.module == "nsgan":
                problems += [f"{where}:{node.lineno}: from nsgan import {a.name} (not a public name)"
                             for a in node.names if a.name not in PUBLIC and a.name != "cli"]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if MODULE_NAME.fullmatch(text) and text not in ALLOWED_MODULES and text.removeprefix("nsgan.") not in PUBLIC:
                problems.append(f"{where}:{node.lineno}: module name {text!r}")
            elif "import" in text and "\n" in text:  # code handed to `python -c`
                try:
                    inner = ast.parse(text)
                except SyntaxError:
                    continue
                problems += _import_problems(inner, f"{where}:{node.lineno} (code in a string)")
        elif isinstance(node, ast.JoinedStr) and node.values:  # f"nsgan.{name}" handed to importlib
            head = node.values[0]
            if isinstance(head, ast.Constant) and isinstance(head.value, str) and re.match(r"nsgan\.\w*", head.value) \
                    and not head.value.startswith("nsgan.cli"):
                problems.append(f"{where}:{node.lineno}: module name f{head.value!r}...")
    for node in ast.walk(tree):  # nsgan.<inner module>.<name> reached through the package
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in nsgan_names:
            if node.attr not in PUBLIC and node.attr != "cli":
                problems.append(f"{where}:{node.lineno}: {node.value.id}.{node.attr} (not a public name)")
    return problems


def violations(root: Path) -> list[str]:
    """Every import of nsgan, under `root`/tools, that is not the public API."""
    problems = []
    for path in sorted((root / "tools").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        problems += _import_problems(ast.parse(path.read_text(encoding="utf-8"), filename=rel), rel)
    return problems


def test_every_script_under_tools_uses_the_public_api_only():
    assert violations(REPO) == []


PLANTED = {
    "import_inner": "import nsgan.score.scorer\n",
    "from_inner": "from nsgan.train.gan_loop import Trainer\n",
    "from_root_private": "from nsgan import _API\n",
    "attribute": "import nsgan\n\nx = nsgan.score\n",
    "attribute_aliased": "import nsgan as ns\n\nx = ns.train_loop\n",
    "importlib": "import importlib\n\nm = importlib.import_module('nsgan.evaluate.metrics')\n",
    "importlib_fstring": "import importlib\n\nname = 'maps'\nm = importlib.import_module(f'nsgan.score.{name}')\n",
    "python_m": "import subprocess\nimport sys\n\nsubprocess.run([sys.executable, '-m', 'nsgan.train.pipeline'])\n",
    "python_c": "CHILD = '''\nimport sys\nfrom nsgan.score.search import LatentSearch\n'''\n",
}


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_a_planted_private_import_fails(tmp_path, kind):
    shutil.copytree(REPO / "tools", tmp_path / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    assert violations(tmp_path) == []
    (tmp_path / "tools" / "bench" / f"planted_{kind}.py").write_text(PLANTED[kind])
    found = violations(tmp_path)
    assert len(found) == 1 and f"tools/bench/planted_{kind}.py" in found[0], found


def test_the_public_forms_pass(tmp_path):
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "ok.py").write_text(
        "import nsgan\nimport nsgan.cli\nfrom nsgan import Scorer, train, __version__\nfrom nsgan.cli import set_process_defaults\n"
        "import subprocess, sys\nsubprocess.run([sys.executable, '-m', 'nsgan.cli', 'train'])\nx = nsgan.RunLayout\n")
    assert violations(tmp_path) == []


def test_every_public_name_is_the_object_its_module_defines():
    """A room that moves a name the API lists breaks here, not in a user's script; and `nsgan.train` /
    `nsgan.evaluate` stay the functions after their subpackages are imported (which sets the attribute)."""
    import nsgan.evaluate.metrics  # noqa: F401  (the subpackages first: the import system sets nsgan.train, nsgan.evaluate)
    import nsgan.train.config  # noqa: F401

    for name, target in nsgan._API.items():
        module, _, attribute = target.partition(":")
        assert getattr(nsgan, name) is getattr(importlib.import_module(module), attribute or name), name
    assert callable(nsgan.train) and callable(nsgan.evaluate)
    from nsgan import evaluate, train

    assert train.__module__ == "nsgan.train.pipeline" and evaluate.__module__ == "nsgan.evaluate.evaluation"


def test_no_experiment_script_defines_a_training_loop():
    """Experiments train through nsgan.train / the CLI (issue 24): no optimizer and no backward pass of their own."""
    loops = [f"{p.relative_to(REPO)}:{n}" for p in sorted((REPO / "tools" / "experiments").glob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"\.backward\(|torch\.optim\b|\boptim\.\w+\(", line)]
    assert loops == []

"""The house rules code can check (issue 24): a function of nsgan/ does one thing at one level, so one over
MAX_LINES lines must say why in a `# long:` comment among its first lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "nsgan"
MAX_LINES = 80
REASON = "# long:"


def _long_functions_without_a_reason(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = node.end_lineno - node.lineno + 1
            head = lines[node.lineno - 1 : node.lineno + 5]
            if length > MAX_LINES and not any(REASON in line for line in head):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_nsgan_is_over_80_lines_without_a_reason():
    assert _long_functions_without_a_reason(PACKAGE) == []


def test_the_check_finds_a_long_function_and_accepts_a_stated_reason(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(f"def long_one():\n{body}\n\n\ndef short_one():\n    return 1\n")
    assert [f.split()[1] for f in _long_functions_without_a_reason(tmp_path / "pkg")] == ["long_one"]
    (tmp_path / "pkg" / "a.py").write_text(f"def long_one():\n    # long: one table of cases, read top to bottom\n{body}\n")
    assert _long_functions_without_a_reason(tmp_path / "pkg") == []

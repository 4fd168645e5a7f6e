"""The README's and docs' promises that code can check: CI runs the README's test line, the files and
modules they name exist, every `nsgan <command> --flag` they show is a real subcommand and flag, and
their links between each other resolve."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
# page (relative to the repo) -> text: the README and every page under docs/
PAGES = {"README.md": README, **{f"docs/{p.name}": p.read_text() for p in sorted((REPO / "docs").glob("*.md"))}}
ALL_TEXT = "\n".join(PAGES.values())
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def quick_start_lines() -> list[str]:
    block = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.strip().splitlines() if line.strip()]


def test_quick_start_is_two_lines_and_ci_runs_the_test_line():
    lines = quick_start_lines()
    assert len(lines) == 2 and "nsgan demo" in lines[0] and lines[1].endswith("pytest -q")
    assert lines[1] in (REPO / ".ci" / "run").read_text().splitlines()


def test_readme_stays_a_front_page():
    assert len(README.encode()) <= 12 * 1024, "README.md over 12 KB: move the detail into docs/"
    assert {"docs/results.md", "docs/benchmarks.md", "docs/scaling.md", "docs/reliability.md",
            "docs/formats.md"} <= set(PAGES)


def test_every_config_tool_launch_and_module_path_the_docs_name_exists():
    named = set(re.findall(r"\b((?:configs|tools|launch|nsgan|tests)/[\w./-]+\.(?:yaml|py|sbatch))", ALL_TEXT))
    assert len(named) > 10
    missing = sorted(p for p in named if not (REPO / p).is_file())
    assert not missing, missing


def test_every_python_dash_m_module_the_docs_run_exists():
    modules = {m for m in re.findall(r"\bpython3? -m ([\w.]+)", ALL_TEXT) if m.split(".")[0] in ("nsgan", "tools")}
    assert {"tools.protocols", "nsgan.cli.page"} <= modules

    def runnable(module: str) -> bool:
        path = REPO.joinpath(*module.split("."))
        return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()

    missing = sorted(m for m in modules if not runnable(m))
    assert not missing, missing


def code_snippets(text: str) -> list[str]:
    """Each line of every fenced block (backslash continuations joined, comments dropped), then every
    inline code span outside the blocks (whitespace collapsed, since a span may wrap a line)."""
    snippets = []
    for block in FENCE.findall(text):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            snippets.append(re.split(r"(?:^|\s)#", line, maxsplit=1)[0])
    prose = FENCE.sub("", text)
    snippets += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    return snippets


def nsgan_commands(snippet: str) -> list[tuple[str, list[str]]]:
    """(subcommand, [--flag, ...]) for each shell command `nsgan <subcommand> ...` in a snippet: `nsgan`
    as the command word (after any VAR=value, `do`, `then` or `time`), not inside Python or prose."""
    found = []
    for part in re.split(r"&&|\|\||[;|]", snippet):
        words = part.split()
        while words and (re.fullmatch(r"[A-Za-z_]\w*=\S*", words[0]) or words[0] in ("do", "then", "time")):
            words = words[1:]
        if len(words) >= 2 and words[0] == "nsgan" and re.fullmatch(r"[a-z][a-z-]*", words[1]):
            flags = [w.split("=", 1)[0] for w in words[2:] if re.fullmatch(r"--[a-z][\w-]*(=\S*)?", w)]
            found.append((words[1], flags))
    return found


def subcommand_flags(build_parser, name: str) -> set[str]:
    """The option strings of one subcommand, from the parser `nsgan` itself builds for it."""
    parser = build_parser([name])
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(subparsers.choices[name]._option_string_actions)


def test_every_nsgan_command_the_docs_show_names_a_real_subcommand_and_flag():
    from nsgan.cli.main import COMMANDS, build_parser

    shown: dict[tuple[str, str | None], set[str]] = {}  # (subcommand, flag or None) -> pages showing it
    for page, text in PAGES.items():
        for snippet in code_snippets(text):
            for command, flags in nsgan_commands(snippet):
                for flag in [None, *flags]:
                    shown.setdefault((command, flag), set()).add(page)
    commands = {command for command, _ in shown}
    assert {"demo", "shards", "train", "train-encoder", "calibrate", "score", "evaluate", "export-onnx"} <= commands
    unknown = sorted(f"nsgan {c} ({', '.join(sorted(shown[c, None]))})" for c in commands if c not in COMMANDS)
    assert not unknown, unknown

    bad = []
    for command in sorted(commands):
        options = subcommand_flags(build_parser, command)
        assert len(options) > 2, f"build_parser([{command!r}]) did not configure nsgan {command}'s options"
        bad += [f"nsgan {c} {flag} ({', '.join(sorted(pages))})"
                for (c, flag), pages in sorted(shown.items(), key=str) if c == command and flag and flag not in options]
    assert not bad, bad


def github_anchors(markdown: str) -> set[str]:
    """The ids GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", markdown), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_relative_links_between_readme_and_docs_resolve():
    broken = []
    for page, text in PAGES.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", text)):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (REPO / page).parent / path if path else REPO / page
            if not file.exists():
                broken.append(f"{page}: {target}")
            elif anchor and file.suffix == ".md" and anchor not in github_anchors(file.read_text()):
                broken.append(f"{page}: {target} (no such heading)")
    assert not broken, broken

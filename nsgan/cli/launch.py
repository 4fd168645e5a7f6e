"""The main of an `accelerate launch` script: parse, run, one-line errors on every rank, a safe exit."""

from __future__ import annotations

import argparse
import os
import sys

from nsgan.common.errors import NsganError


def launch_entry(argv: list[str] | None, prog: str, description: str, command: str, configure, run_args) -> int:
    """An `accelerate launch` script's main: parse, run, one-line errors on every rank, a safe exit."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    configure(parser)
    args = parser.parse_args(argv)
    try:
        code = run_args(args)
    except NsganError as err:
        print(f"nsgan {command}: error: {err}", file=sys.stderr)
        code = err.exit_code
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Every output is written (atomically) and the process group is gone. gloo's threads sometimes
        # abort the interpreter's teardown ("terminate called without an active exception", ~1 run in
        # 10), which would turn a finished run into a crash: leave with the run's own exit code instead.
        # Exceptions other than NsganError never get here: they still end with their traceback.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code

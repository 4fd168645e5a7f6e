"""`accelerate launch launch/score.py --model M --image PATH --out DIR`: score with many processes.

Takes the same options as `nsgan score`. Tiles are dealt out across the processes and the main
process writes the outputs; the map is the same as with one process.
"""

from __future__ import annotations

import argparse
import os
import sys

from nsgan.cli import set_process_defaults

set_process_defaults()  # before accelerate and the scorer load torch

import torch.distributed as dist  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from nsgan.cli import score as scoring  # noqa: E402
from nsgan.common.errors import EXIT_OK, NsganError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="launch/score.py", description=__doc__.splitlines()[0])
    scoring.configure_parser(parser)
    args = parser.parse_args(argv)
    accelerator = Accelerator()
    code = EXIT_OK
    try:
        code = scoring.run(args, accelerator=accelerator)
    except NsganError as err:
        if accelerator.is_main_process:
            print(f"nsgan score: error: {err}", file=sys.stderr)
        code = err.exit_code
    finally:
        # A clean shutdown of the process group; gloo sometimes aborts at exit without it.
        if dist.is_available() and dist.is_initialized():
            if code == EXIT_OK:
                dist.barrier()
            dist.destroy_process_group()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Every output is written (atomically) and the process group is gone. gloo's threads can abort
        # the interpreter's teardown ("terminate called without an active exception"), which would turn
        # finished scoring into a crash: leave with the run's own exit code, as launch/train.py does.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())

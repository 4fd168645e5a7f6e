"""`accelerate launch launch/score.py --model M --image PATH --out DIR`: score with many processes.

Takes the same options as `nsgan score`. Tiles are dealt out across the processes and the main
process writes the outputs; the map is the same as with one process.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    from accelerate import Accelerator

    from nsgan.cli import score as scoring
    from nsgan.common.errors import NsganError

    parser = argparse.ArgumentParser(prog="launch/score.py", description=__doc__.splitlines()[0])
    scoring.configure_parser(parser)
    args = parser.parse_args(argv)
    accelerator = Accelerator()
    code = 0
    try:
        code = scoring.run(args, accelerator=accelerator)
    except NsganError as err:
        if accelerator.is_main_process:
            print(f"nsgan score: error: {err}", file=sys.stderr)
        code = err.exit_code
    finally:
        # A clean shutdown of the process group; gloo sometimes aborts at exit without it.
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            if code == 0:
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

"""Entry point for `accelerate launch launch/train.py --config CFG [key=value ...]`.

The same script runs on CPU, one GPU, N GPUs and N nodes; only the accelerate config changes.
"""

import sys

from nsgan.cli import set_process_defaults

set_process_defaults()  # before the command's modules load torch

from nsgan.cli.train import launch_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(launch_main())

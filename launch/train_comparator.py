"""`accelerate launch launch/train_comparator.py --model M comparator.kimg=N`: train the comparator on any number of processes."""

import sys

from nsgan.cli import set_process_defaults

set_process_defaults()  # before the command's modules load torch

from nsgan.cli.train_comparator import launch_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(launch_main())

"""`accelerate launch launch/train_encoder.py --model M encoder.kimg=N`: train the encoder on any number of processes."""

import sys

from nsgan.cli import set_process_defaults

set_process_defaults()  # before the command's modules load torch

from nsgan.cli.train_encoder import launch_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(launch_main())

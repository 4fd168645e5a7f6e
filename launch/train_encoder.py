"""`accelerate launch launch/train_encoder.py --model M encoder.kimg=N`: train the encoder on any number of processes."""

import sys

from nsgan.cli.train_encoder import launch_main

if __name__ == "__main__":
    sys.exit(launch_main())

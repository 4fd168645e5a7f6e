"""nsgan: micro-defect detection with a progressive GAN trained on noisy normal data."""

import os

__version__ = "0.1.0"

# OpenMP threads that spin while waiting make torch 10-25x slower on a CPU shared with any other
# busy process (measured here: 3 vs 87 img/s for the demo's networks). Sleeping waiters cost little
# when the machine is quiet. Must be set before torch loads; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# DeepSpeed (imported by accelerate when installed) warns "Setting accelerator to CPU. If you have
# GPU ..." on every start when it finds no GPU. With torch's CPU wheel there can be none: say so.
from importlib.metadata import PackageNotFoundError, version as _version

try:
    if _version("torch").endswith("+cpu"):
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
except PackageNotFoundError:  # torch not installed as a distribution (a source build): leave DeepSpeed to detect
    pass

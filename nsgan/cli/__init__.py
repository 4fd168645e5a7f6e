"""The `nsgan` command: argument parsing and exit codes only, a module per command; the work is done by the library.

Process-wide settings belong to the entry points (`nsgan`, `python -m nsgan.cli`, launch/*.py, tools/
scripts), never to `import nsgan`: they call `set_process_defaults()` before torch loads.
"""

import os
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version


def set_process_defaults() -> None:
    """Environment defaults for a process that runs nsgan's work; a value the user set wins. Call before torch loads."""
    # OpenMP threads that spin while waiting make torch 10-25x slower on a CPU shared with any other
    # busy process (measured here: 3 vs 87 img/s for the demo's networks). Sleeping waiters cost little
    # when the machine is quiet. Read when torch loads its OpenMP runtime, so it must be set before.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # DeepSpeed (imported by accelerate when installed) warns "Setting accelerator to CPU. If you have
    # GPU ..." on every start when it finds no GPU. With torch's CPU wheel there can be none: say so.
    try:
        if version("torch").endswith("+cpu"):
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
    except PackageNotFoundError:  # torch not installed as a distribution (a source build): leave DeepSpeed to detect
        pass

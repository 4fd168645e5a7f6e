"""torchrun wrapper: every rank on the first visible device, then run the script (`one_gpu_rank.py SCRIPT ARGS...`).

accelerate maps LOCAL_RANK r to cuda:r; on a machine with one GPU, two ranks would ask for a device that
does not exist. With LOCAL_RANK=0 before accelerate is imported, both use cuda:0; the process group is
then gloo (gpu_check sets NSGAN_PG_BACKEND=gloo), as NCCL refuses two ranks on one device. On a CPU
(ACCELERATE_USE_CPU=1) nothing changes.
"""

import os
import runpy
import sys

if __name__ == "__main__":
    import torch

    if torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true", "yes"):
        os.environ["LOCAL_RANK"] = "0"
    script, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_path(script, run_name="__main__")

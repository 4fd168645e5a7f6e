"""FLOPs counted from the networks and the machine's own matmul rate: the two sides of "how far from the limit".

    count_flops(fn) -> FLOPs of one call (torch's FlopCounterMode: matmuls and convolutions, forward and backward,
                       double backward included; elementwise work such as Adam or the EMA is not counted)
    matmul_rate(dtype, n, repeats, device) -> FLOP/s of an n×n matmul in this process, its threads, its dtype

Used by bench_train.py, bench_inversion.py and gpu_check.py.
"""

from __future__ import annotations

import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


def count_flops(fn) -> int:
    """FLOPs of `fn()` by torch's own per-op formulas (torch.utils.flop_counter's registry).

    FlopCounterMode itself tracks modules with backward hooks, which torch.autograd.grad (R1's
    double backward) refuses; this dispatch mode counts the same ops without the module tracker.
    """
    class _Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            packet = func._overloadpacket
            if packet not in flop_registry and func is not torch.ops.prim.device.default:
                with self:  # as FlopCounterMode: an op without a formula may decompose into ones with one
                    r = func.decompose(*args, **kwargs)
                    if r is not NotImplemented:
                        return r
            out = func(*args, **kwargs)
            if packet in flop_registry:
                _Count.total += int(flop_registry[packet](*args, **kwargs, out_val=out))
            return out

    with _Count():
        fn()
    return _Count.total


def matmul_rate(dtype=None, n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """FLOP/s of `repeats` n×n @ n×n matmuls after one warm-up (synchronised on CUDA)."""
    dtype = dtype or torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return repeats * 2 * n**3 / (time.perf_counter() - t0)

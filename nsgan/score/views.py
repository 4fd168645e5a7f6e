"""Test-time augmentation: the flips and 90° turns of a tile batch, and their inverses on the maps that come back.

A view is left-right flip, then up-down flip, then transpose (each optional; each is its own inverse),
so the 8 combinations are the 8 symmetries of the square (D4) and `flip` is the 4 without transpose.
A view acts on the last two axes of a torch tensor or a numpy array alike, so the torch runner and a
per-tile network called on numpy tiles (ONNX Runtime) share it: one exported graph serves every view.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
import torch

from nsgan.score.choices import TestTimeAugment


@dataclass(frozen=True)
class View:
    """One symmetry of the square, on the last two axes (rows, columns)."""

    lr: bool = False  # mirror the columns
    ud: bool = False  # mirror the rows
    transpose: bool = False  # swap rows and columns

    @property
    def identity(self) -> bool:
        return not (self.lr or self.ud or self.transpose)

    def apply(self, a):
        """The view of `a` (a tensor or an array (..., H, W))."""
        if self.lr:
            a = _flip(a, -1)
        if self.ud:
            a = _flip(a, -2)
        return _transpose(a) if self.transpose else a

    def undo(self, a):
        """What `apply` did, undone: a map of the viewed tile back on the tile as cut."""
        if self.transpose:
            a = _transpose(a)
        if self.ud:
            a = _flip(a, -2)
        return _flip(a, -1) if self.lr else a


def views(tta: TestTimeAugment) -> tuple[View, ...]:
    """The views `tta` averages over, identity first."""
    tta = TestTimeAugment(tta)
    if tta == TestTimeAugment.AUTO:  # a bug, not a user's mistake: options.resolve_options resolves it first
        raise ValueError("views: tta 'auto' must be resolved for the model (options.resolve_tta) before scoring")
    if tta == TestTimeAugment.NONE:
        return (View(),)
    transposes = (False, True) if tta == TestTimeAugment.D4 else (False,)
    return tuple(View(lr, ud, t) for t, ud, lr in product(transposes, (False, True), (False, True)))


def _flip(a, axis: int):
    return torch.flip(a, dims=(axis,)) if isinstance(a, torch.Tensor) else np.flip(a, axis=axis)


def _transpose(a):
    return a.transpose(-2, -1) if isinstance(a, torch.Tensor) else np.swapaxes(a, -2, -1)

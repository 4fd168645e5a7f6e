"""Sample grids as PNG: what a person looks at to judge whether G draws the material."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nsgan.common.atomic import atomic_write
from nsgan.data.imageio import write_png

MIN_CELL = 64  # small early-phase samples are scaled up (nearest) so the grid stays readable


def image_grid(images: torch.Tensor, columns: int) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 (rows*H, columns*W, C) with a 1-px gap between cells."""
    x = images.detach().float().cpu().clamp(-1, 1)
    if x.shape[-1] < MIN_CELL:
        x = torch.nn.functional.interpolate(x, scale_factor=MIN_CELL // x.shape[-1], mode="nearest")
    n, c, h, w = x.shape
    rows = (n + columns - 1) // columns
    grid = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1, c), 0.5, dtype=np.float32)
    arr = ((x + 1) / 2).permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, col = divmod(i, columns)
        grid[r * (h + 1):r * (h + 1) + h, col * (w + 1):col * (w + 1) + w] = arr[i]
    return (grid * 255 + 0.5).astype(np.uint8)


def save_image_grid(images: torch.Tensor, path: str | Path, columns: int) -> Path:
    """Write a grid PNG atomically."""
    return write_grid(image_grid(images, columns), path)


def write_grid(grid: np.ndarray, path: str | Path) -> Path:
    """Write a grid made by `image_grid` as a PNG, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: write_png(tmp, grid))
    return path

"""The GAN's sample quality during training: the same reals and the same z at every measurement.

The reals are the first 2 × `quality.samples` tiles of the stream `reals.png` shows (its own seed, rank 0,
never the training streams), read again at each measurement chunk by chunk, so memory stays bounded at any
tile size (nothing but descriptors and per-pixel sums is kept); the latents come from their own seeded generator. Nothing here
draws from the RNGs a checkpoint saves, so measuring leaves a resumed run bit-identical to an
uninterrupted one. Main process only (the caller's job): G_ema is the same on every rank.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from nsgan.models.networks import fade_real, level_resolution
from nsgan.models.sample_quality import QualitySettings, measure_streams
from nsgan.train.config import TrainConfig

KIND = "sample_quality"  # the `kind` of its metrics.jsonl rows (training rows have none)
LATENT_SEED_OFFSET = 24680  # the measurement's z: seed + this, apart from the grid's and the training streams'
CHUNK = 16  # G's forward and the reals' pyramids in chunks of this many images


class QualityProbe:
    """Measures G_ema at a level and α against the fixed reals brought to the same level."""

    def __init__(self, cfg: TrainConfig, real_chunks: Callable[[int], Iterator[torch.Tensor]]):
        q = cfg.quality
        self.samples = q.samples
        self.settings = QualitySettings(min_resolution=q.min_resolution, neighbourhoods=q.neighbourhoods,
                                        directions=q.directions, repeats=q.repeats, seed=cfg.seed)
        self._real_chunks = real_chunks  # n -> the first n fixed reals, in chunks
        gen = torch.Generator().manual_seed(cfg.seed + LATENT_SEED_OFFSET)
        self.z = torch.randn(q.samples, cfg.model.latent_dim, generator=gen)

    @property
    def enabled(self) -> bool:
        return self.samples > 0

    @torch.no_grad()
    def measure(self, G: torch.nn.Module, level: int, alpha: float, device: torch.device) -> dict[str, Any]:
        """The figures' row (without where and when): resolution, α, per-level SWD, reference, ratio, diversity, seconds."""
        t0 = time.perf_counter()
        z = self.z.to(device)
        fakes = (G(z[i:i + CHUNK], level, alpha).float().cpu() for i in range(0, z.shape[0], CHUNK))
        reals = (fade_real(x.float(), level, alpha) for x in self._real_chunks(2 * self.samples))
        side = level_resolution(level)
        result = measure_streams(fakes, reals, self.samples, side, self.settings)
        return {"resolution": side, "alpha": round(float(alpha), 4), **result.row(), "seconds": round(time.perf_counter() - t0, 2)}


def last_quality_row(rows_text: str) -> dict[str, Any] | None:
    """The last sample-quality row of a metrics.jsonl's text (None: none)."""
    last = None
    for line in rows_text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("kind") == KIND:
            last = row
    return last


def summary(row: dict[str, Any]) -> str:
    """One line for the live display: SWD ratio to real-vs-real per level, and the diversity."""
    ratios = [f"{k[len('swd_ratio_'):]}:{v:.1f}×" for k, v in row.items() if k.startswith("swd_ratio_")]
    return f"SWD/real {' '.join(ratios)} spread {row.get('diversity', float('nan')):.2f}×"

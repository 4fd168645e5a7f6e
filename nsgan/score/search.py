"""Latent inversion of tiles: AnoGAN's search (Schlegl et al. 2017), f-AnoGAN's encoder, or both.

Modes: `search` (random starts, up to `iterations` Adam steps each), `encoder` (z = E(x), one
forward pass, no gradients) and `refine` (E(x) as the one start, then `iterations` search steps).

For a tile x, z* = argmin_z (1−λ)·mean|x − G(z)| + λ·mean|f(x) − f(G(z))| with f = D's
batch-independent feature layer; G and D stay frozen. All tiles × starts of a batch share one
forward/backward pass, which is what makes scoring fast; Adam is written out per latent vector so
each tile stops on its own (early stop) and drops out of the batch without disturbing the others.

Every tile's random starts come from its global tile index and the seed, never from its batch or
process, so a tile gets the same starting points however the work is split.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from nsgan.common.errors import ConfigError
from nsgan.score.choices import AUTO, Inversion, Precision

PRECISIONS = Precision.values()
MODES = Inversion.values(auto=False)
AUTO_WITH_ENCODER = Inversion.ENCODER  # best quality per second measured (README "Inversion"); refine adds little here
# AnoGAN's 500; refine 20 measured no better than 5
DEFAULT_STEPS = {Inversion.SEARCH: 500, Inversion.ENCODER: 0, Inversion.REFINE: 5}
ONE_START = (Inversion.ENCODER, Inversion.REFINE)  # modes whose one start is E(x)


@dataclass(frozen=True)
class SearchConfig:
    """Inversion settings: mode, then the search's; AnoGAN's λ = 0.1 and 500 steps by default.

    `iterations=None` takes the mode's default (DEFAULT_STEPS). In `encoder` mode there are no
    steps; `encoder` and `refine` use one start (E(x)), so `restarts` only applies to `search`.
    `mode` and `precision` are held as their enums (nsgan/score/choices.py); strings are accepted.
    """

    mode: Inversion = Inversion.AUTO
    iterations: int | None = None
    lr: float = 0.05
    lam: float = 0.1
    restarts: int = 3
    patience: int = 25  # steps without relative improvement > min_improvement before a start stops
    min_improvement: float = 1e-4
    precision: Precision = Precision.FP32
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "mode", Inversion.parse(self.mode, "search.mode", listed=True))
        if self.mode != Inversion.AUTO:
            steps = DEFAULT_STEPS[self.mode] if self.iterations is None or self.mode == Inversion.ENCODER else self.iterations
            object.__setattr__(self, "iterations", steps)
        if self.mode in ONE_START:
            object.__setattr__(self, "restarts", 1)
        checks = {
            # 0 steps only where E gives the start; `auto` may mean search, so it needs ≥ 1 too
            "iterations": self.iterations is None or self.iterations >= (0 if self.mode in ONE_START else 1),
            "lr": self.lr > 0,
            "lam": 0.0 <= self.lam <= 1.0,
            "restarts": self.restarts >= 1,
            "patience": self.patience >= 1,
            "min_improvement": self.min_improvement >= 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"search.{key}: invalid value {getattr(self, key)!r}")
        object.__setattr__(self, "precision", Precision.parse(self.precision, "search.precision"))

    def resolved(self, has_encoder: bool) -> "SearchConfig":
        """The concrete settings for a model with or without an encoder (`auto` picks the mode)."""
        if self.mode != Inversion.AUTO:
            return self
        mode = AUTO_WITH_ENCODER if has_encoder else Inversion.SEARCH
        return SearchConfig(**{**asdict(self), "mode": mode})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResult:
    """Per tile: score (loss at z*), reconstruction in [-1, 1], residual map in image units [0, 1]."""

    scores: torch.Tensor  # (N,) float32
    reconstructions: torch.Tensor  # (N, C, T, T)
    residuals: torch.Tensor  # (N, T, T): mean over channels of |x − G(z*)| / 2
    latents: torch.Tensor  # (N, latent_dim): z*
    steps: torch.Tensor  # (N,) gradient steps taken by the winning start


def start_latents(tile_ids: Sequence[int], restarts: int, latent_dim: int, seed: int) -> torch.Tensor:
    """(N·restarts, latent_dim) starting points; start r of tile i depends only on (seed, global id i, r)."""
    out = torch.empty(len(tile_ids) * restarts, latent_dim)
    gen = torch.Generator()
    k = 0
    for tid in tile_ids:
        states = np.random.SeedSequence([seed, int(tid)]).generate_state(restarts, np.uint64)
        for state in states:
            gen.manual_seed(int(state >> np.uint64(1)))
            out[k] = torch.randn(latent_dim, generator=gen)
            k += 1
    return out


class LatentSearch:
    """Finds z* for batches of tiles with G and D (and E) frozen; `search(x, tile_ids)` is the one entry point."""

    def __init__(self, generator: torch.nn.Module, discriminator: torch.nn.Module, config: SearchConfig | None = None,
                 encoder: torch.nn.Module | None = None):
        self.G = generator.eval().requires_grad_(False)
        self.D = discriminator.eval().requires_grad_(False)
        self.E = encoder.eval().requires_grad_(False) if encoder is not None else None
        self.config = (config or SearchConfig()).resolved(encoder is not None)
        self.latent_dim = int(generator.latent_dim)
        if self.config.mode != Inversion.SEARCH and self.E is None:
            raise ValueError(f"inversion mode {self.config.mode!r} needs an encoder")

    def _autocast(self, device: torch.device):
        if self.config.precision == Precision.BF16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _losses(self, x: torch.Tensor, fx: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample loss (fp32) and the generated images, for latents z against targets x."""
        lam = self.config.lam
        with self._autocast(z.device):
            g = self.G(z)
            fg = self.D.features(g)
        g, fg = g.float(), fg.float()
        residual = (x - g).abs().flatten(1).mean(1)
        feature = (fx - fg).abs().flatten(1).mean(1)
        return (1.0 - lam) * residual + lam * feature, g

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), self._autocast(x.device):
            return self.E(x).float()

    def encoder_pass(self, x: torch.Tensor, tile_losses: bool = True) -> SearchResult:
        """Encoder mode for tiles x (N, C, T, T) in [-1, 1]: z = E(x), then G (and D when tile_losses), no
        gradients. Needs no tile ids, so it also traces with a symbolic batch (the ONNX export calls it)."""
        n, device = x.shape[0], x.device
        x = x.float()
        z = self._encode(x)
        if tile_losses:  # the AnoGAN tile loss: G and two D passes
            with torch.no_grad(), self._autocast(device):
                fx = self.D.features(x).float()
            with torch.no_grad():
                scores, rec = self._losses(x, fx, z)
        else:  # one E and one G pass: the fastest path; the score is the pixel term alone
            with torch.no_grad(), self._autocast(device):
                rec = self.G(z).float()
            scores = (x - rec).abs().flatten(1).mean(1)
        return SearchResult(scores=scores, reconstructions=rec, residuals=(x - rec).abs().mean(1) / 2.0,
                            latents=z, steps=torch.zeros(n, dtype=torch.long, device=device))

    def search(self, x: torch.Tensor, tile_ids: Sequence[int], tile_losses: bool = True) -> SearchResult:
        """Invert all tiles x (N, C, T, T) in [-1, 1] together; tile_ids are their global indices.

        tile_losses=False lets the encoder mode skip D: the scores are then the pixel term alone,
        mean |x − G(z)|, and the tile costs E + G instead of E + G + two D passes (about half the time).
        """
        cfg = self.config
        n, r = x.shape[0], cfg.restarts
        if len(tile_ids) != n:
            raise ValueError(f"{len(tile_ids)} tile ids for {n} tiles")
        if cfg.mode == Inversion.ENCODER:  # one pass, no graph: the fast path
            return self.encoder_pass(x, tile_losses)
        device = x.device
        x = x.float()
        with torch.no_grad(), self._autocast(device):
            fx = self.D.features(x).float()
        xr, fxr = x.repeat_interleave(r, 0), fx.repeat_interleave(r, 0)

        if cfg.mode == Inversion.REFINE:
            z = self._encode(x)
        else:
            z = start_latents(tile_ids, r, self.latent_dim, cfg.seed).to(device)
        m, v = torch.zeros_like(z), torch.zeros_like(z)
        best_loss = torch.full((n * r,), float("inf"), device=device)
        if cfg.iterations == 0:  # no step to take: the start is the answer
            with torch.no_grad():
                best_loss = self._losses(xr, fxr, z)[0]
        best_z = z.clone()
        stale = torch.zeros(n * r, dtype=torch.long, device=device)
        steps = torch.zeros(n * r, dtype=torch.long, device=device)
        active = torch.arange(n * r, device=device)
        b1, b2, eps = 0.9, 0.999, 1e-8
        for t in range(1, cfg.iterations + 1):
            za = z[active].requires_grad_(True)
            loss, _ = self._losses(xr[active], fxr[active], za)
            (grad,) = torch.autograd.grad(loss.sum(), za)  # sum: each start gets its own gradient
            loss, za = loss.detach(), za.detach()
            better = loss < best_loss[active]
            improved = loss < best_loss[active] * (1.0 - cfg.min_improvement)
            best_z[active[better]] = za[better]
            best_loss[active] = torch.where(better, loss, best_loss[active])
            stale[active] = torch.where(improved, 0, stale[active] + 1)
            ma = b1 * m[active] + (1 - b1) * grad
            va = b2 * v[active] + (1 - b2) * grad * grad
            m[active], v[active] = ma, va
            step = (ma / (1 - b1**t)) / ((va / (1 - b2**t)).sqrt() + eps)
            z[active] = za - cfg.lr * step
            steps[active] += 1
            active = active[stale[active] < cfg.patience]
            if active.numel() == 0:
                break

        loss_nr = best_loss.view(n, r)
        pick = loss_nr.argmin(1)
        rows = torch.arange(n, device=device) * r + pick
        z_star = best_z[rows]
        with torch.no_grad():
            _, rec = self._losses(x, fx, z_star)
        residual = (x - rec).abs().mean(1) / 2.0
        return SearchResult(
            scores=loss_nr.gather(1, pick[:, None])[:, 0],
            reconstructions=rec,
            residuals=residual,
            latents=z_star,
            steps=steps[rows],
        )

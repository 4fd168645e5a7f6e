"""f-AnoGAN's izi_f encoder (Schlegl et al. 2019): one forward pass from a tile to its latent z.

AnoGAN's latent search spends hundreds of G + D forward/backward passes per tile to find z*;
an encoder E trained once, after the GAN, with G and D frozen, gives a z in one pass:

    L_E = mean‖x − G(E(x))‖² + κ·mean‖f(x) − f(G(E(x)))‖²      (f: D's feature layer, κ = 1)

Trained on izi_f alone, E collapsed here to nearly one z for every tile (G(E(x)) the same brick
for all x: the mean-image minimum). f-AnoGAN's other encoder, ziz, trains E(G(z)) ≈ z on G's own
samples, which needs E to tell tiles apart; adding it with weight `ziz` (compared after pixel
normalisation, as G sees z) kept E input-dependent and lowered the izi_f loss on held-out tiles
(README, "Inversion"). `ziz = 0` is the paper's izi_f exactly.

E is a D-like stack at the final resolution only (no progressive growing, no minibatch stddev,
so a tile's z never depends on the rest of its batch) with its own widths. Its output is a plain
vector: G pixel-normalises z at its input, so only z's direction matters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nsgan.models.networks import (
    EqualizedConv2d,
    EqualizedLinear,
    _act,
    _check_common,
    _DBlock,
    num_features,
    pixel_norm,
)


class Encoder(nn.Module):
    """Tile (B, C, R, R) in [-1, 1] -> latent (B, latent_dim)."""

    def __init__(self, resolution: int, channels: int, latent_dim: int, fmap_base: int = 2048, fmap_max: int = 128):
        super().__init__()
        self.max_level = _check_common(resolution, channels, fmap_base, fmap_max)
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        self.resolution, self.channels, self.latent_dim = resolution, channels, latent_dim
        self.fmap_base, self.fmap_max = fmap_base, fmap_max
        nf = [num_features(k, fmap_base, fmap_max) for k in range(self.max_level + 1)]
        self.from_rgb = EqualizedConv2d(channels, nf[-1], 1)
        self.blocks = nn.ModuleList([_DBlock(nf[k], nf[k - 1]) for k in range(self.max_level, 0, -1)])
        self.conv = EqualizedConv2d(nf[0], nf[0], 3)
        self.dense = EqualizedLinear(nf[0] * 16, nf[0])
        self.out = EqualizedLinear(nf[0], latent_dim, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        if x.ndim != 4 or x.shape[1] != self.channels or x.shape[2] != r or x.shape[3] != r:
            raise ValueError(f"the encoder expects (B, {self.channels}, {r}, {r}), got {tuple(x.shape)}")
        h = _act(self.from_rgb(x))
        for block in self.blocks:
            h = block(h)
        h = _act(self.conv(h))
        h = _act(self.dense(h.flatten(1)))
        return self.out(h)


def encoder_kwargs(encoder: nn.Module) -> dict:
    """JSON-able constructor kwargs (the model file stores them to rebuild E)."""
    encoder = getattr(encoder, "module", encoder)
    if not isinstance(encoder, Encoder):
        raise TypeError(f"encoder_kwargs: not an nsgan Encoder: {type(encoder).__name__}")
    return {k: getattr(encoder, k) for k in ("resolution", "channels", "latent_dim", "fmap_base", "fmap_max")}


def izif_loss(encoder: nn.Module, generator: nn.Module, discriminator: nn.Module, x: torch.Tensor,
              kappa: float = 1.0, z: torch.Tensor | None = None, ziz: float = 0.0,
              x_in: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """f-AnoGAN's izi_f loss for a batch of real tiles x in [-1, 1]; G and D are used frozen.

    `x_in`: what E reads instead of x (the denoising encoder: x with defects painted on), so G(E(x_in)) is
    pulled to the clean x and the reconstruction learns to erase defects rather than redraw them.
    With latents z and ziz > 0, adds ziz·mean‖pn(E(G(z))) − pn(z)‖² (pn: G's pixel norm).
    Returns the loss and its terms (detached) for the metrics.
    """
    with torch.no_grad():
        fx = discriminator.features(x).float()
    g = generator(encoder(x if x_in is None else x_in))
    fg = discriminator.features(g).float()
    image = F.mse_loss(g.float(), x.float())
    feature = F.mse_loss(fg, fx)
    loss = image + kappa * feature
    stats = {"e_image": image.detach(), "e_feature": feature.detach()}
    if z is not None and ziz > 0:
        with torch.no_grad():
            gz = generator(z)
        latent = F.mse_loss(pixel_norm(encoder(gz).float()), pixel_norm(z.float()))
        loss = loss + ziz * latent
        stats["e_latent"] = latent.detach()
    return loss, {"loss_e": loss.detach(), **stats}

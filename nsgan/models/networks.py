"""PGGAN generator and discriminator (Karras et al. 2018) for nsgan.

Level k works at resolution 4 * 2**k; the final level is L = log2(resolution) - 2. Every level's
parameters exist from construction on, so one set of weights (and one optimizer state) serves the
whole progressive schedule; a phase simply leaves the higher levels unused (DDP therefore needs
`find_unused_parameters=True`).

Widths follow the original PGGAN rule `nf(stage) = min(fmap_base / 2**stage, fmap_max)` with
stage = log2(res) - 1 = level + 1, i.e. `nf(k) = min(int(fmap_base / 2**(k+1)), fmap_max)`, and
never below 1. The defaults (8192, 512) give 512 channels up to 64x64 and 16 at 1024x1024.

Layers use the equalized learning rate: weights are stored N(0, 1) and multiplied at run time by
the He constant gain / sqrt(fan_in), so Adam's per-parameter step sizes treat all layers alike.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_LRELU = 0.2
_SQRT2 = math.sqrt(2.0)


def max_level_for(resolution: int) -> int:
    """Final level for a resolution; ValueError unless it is a power of two >= 4."""
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, int)
        or resolution < 4
        or resolution & (resolution - 1)
    ):
        raise ValueError(f"resolution must be a power of two >= 4, got {resolution!r}")
    return resolution.bit_length() - 3


def level_resolution(level: int) -> int:
    """Side length of the images at `level`."""
    return 4 * 2**level


def num_features(level: int, fmap_base: int, fmap_max: int) -> int:
    """Channel width of `level` (PGGAN rule, see module docstring)."""
    return max(1, min(int(fmap_base / 2 ** (level + 1)), fmap_max))


def _check_common(resolution: int, channels: int, fmap_base: int, fmap_max: int) -> int:
    max_level = max_level_for(resolution)
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    for name, value in (("fmap_base", fmap_base), ("fmap_max", fmap_max)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return max_level


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalise each pixel's feature vector to unit RMS (keeps G's magnitudes from escalating)."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour ×2, as PGGAN's generator grows."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def minibatch_stddev(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Append one channel: the mean std-dev of features within groups of samples.

    Lets D see batch-level variety (against mode collapse). The group is min(group_size, batch),
    lowered until it divides the batch. Computed in float32 so bf16 autocast keeps the small
    variances. Sample i belongs to group i % (batch // group), as in the original code.
    """
    b, c, h, w = x.shape
    g = min(group_size, b)
    while b % g:
        g -= 1
    m = b // g
    y = x.float().reshape(g, m, c, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0)  # (m, c, h, w) variance over the group
    y = (y + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (m,)
    y = y.reshape(1, m, 1, 1, 1).expand(g, m, 1, h, w).reshape(b, 1, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)


class EqualizedConv2d(nn.Module):
    """Conv with N(0,1) weights scaled at run time by gain / sqrt(fan_in) (equalized lr)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, gain: float = _SQRT2):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel * kernel)
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualizedLinear(nn.Module):
    """Dense layer with N(0,1) weights scaled at run time by gain / sqrt(fan_in)."""

    def __init__(self, in_features: int, out_features: int, gain: float = _SQRT2):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, _LRELU)


class _GInput(nn.Module):
    """Level 0 of G: latent -> 4x4 features (dense, then a 3x3 conv), pixel-normed throughout."""

    def __init__(self, latent_dim: int, nf: int):
        super().__init__()
        self.nf = nf
        # gain sqrt(2)/4 as in the original: the dense layer feeds 16 spatial positions.
        self.dense = EqualizedLinear(latent_dim, nf * 16, gain=_SQRT2 / 4)
        self.conv = EqualizedConv2d(nf, nf, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.dense(pixel_norm(z)).reshape(-1, self.nf, 4, 4)
        h = pixel_norm(_act(h))
        return pixel_norm(_act(self.conv(h)))


class _GBlock(nn.Module):
    """Level k >= 1 of G: upsample ×2, two 3x3 convs, each followed by leaky ReLU and pixel norm."""

    def __init__(self, in_nf: int, out_nf: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_nf, out_nf, 3)
        self.conv1 = EqualizedConv2d(out_nf, out_nf, 3)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = pixel_norm(_act(self.conv0(upsample2(h))))
        return pixel_norm(_act(self.conv1(h)))


class Generator(nn.Module):
    """PGGAN generator: z (B, latent_dim) -> image (B, C, 4*2**level, 4*2**level), linear output."""

    def __init__(
        self,
        resolution: int,
        channels: int,
        latent_dim: int = 512,
        fmap_base: int = 8192,
        fmap_max: int = 512,
    ):
        super().__init__()
        self.max_level = _check_common(resolution, channels, fmap_base, fmap_max)
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        self.resolution = resolution
        self.channels = channels
        self.latent_dim = latent_dim
        self.fmap_base = fmap_base
        self.fmap_max = fmap_max
        nf = [num_features(k, fmap_base, fmap_max) for k in range(self.max_level + 1)]
        self.blocks = nn.ModuleList(
            [_GInput(latent_dim, nf[0])] + [_GBlock(nf[k - 1], nf[k]) for k in range(1, self.max_level + 1)]
        )
        self.to_rgb = nn.ModuleList([EqualizedConv2d(n, channels, 1, gain=1.0) for n in nf])

    def forward(self, z: torch.Tensor, level: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        """Image at `level`; while fading in (alpha < 1) it blends in the previous level upsampled."""
        level = _resolve_level(level, self.max_level)
        alpha = _check_alpha(alpha)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        h = self.blocks[0](z)
        if level == 0:
            return self.to_rgb[0](h)
        for k in range(1, level):
            h = self.blocks[k](h)
        new = self.to_rgb[level](self.blocks[level](h))
        if alpha >= 1.0:
            return new
        old = upsample2(self.to_rgb[level - 1](h))
        return torch.lerp(old, new.to(old.dtype), alpha)


class _DBlock(nn.Module):
    """Level k >= 1 of D: two 3x3 convs (nf(k) -> nf(k) -> nf(k-1)), then avg-pool ×2."""

    def __init__(self, in_nf: int, out_nf: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_nf, in_nf, 3)
        self.conv1 = EqualizedConv2d(in_nf, out_nf, 3)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = _act(self.conv1(_act(self.conv0(h))))
        return F.avg_pool2d(h, 2)


class _DOutput(nn.Module):
    """Level 0 of D: minibatch stddev, 3x3 conv, dense 4x4 -> nf, dense -> one logit."""

    def __init__(self, nf: int, mbstd_group: int):
        super().__init__()
        self.mbstd_group = mbstd_group
        self.conv = EqualizedConv2d(nf + (1 if mbstd_group else 0), nf, 3)
        self.dense = EqualizedLinear(nf * 16, nf)
        self.out = EqualizedLinear(nf, 1, gain=1.0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.mbstd_group:
            h = minibatch_stddev(h, self.mbstd_group)
        h = _act(self.conv(h))
        h = _act(self.dense(h.flatten(1)))
        return self.out(h).squeeze(1)


class Discriminator(nn.Module):
    """PGGAN discriminator: image at `level` -> logits (B,); exposes a batch-independent feature layer.

    `mbstd_group=0` switches the minibatch-stddev layer off. `patch_grid` > 0 adds a patch head:
    `forward(..., patches=True)` also returns one logit per receptive-field patch (B, 1, g, g), read
    by a 1x1 conv off the trunk's feature map of side `patch_grid` (g = patch_grid once the level's
    images are at least twice that; below, the trunk's top map: g = res/2, and 4 at level 0). It lets the
    abnormal penalty act where the defect is instead of on its whole tile: a labelled abnormal tile is mostly normal
    material (a median 1.5% defect pixels at 32 px), so a tile-level penalty pushes mostly on normal texture.
    """

    def __init__(
        self,
        resolution: int,
        channels: int,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        mbstd_group: int = 4,
        patch_grid: int = 0,
    ):
        super().__init__()
        self.max_level = _check_common(resolution, channels, fmap_base, fmap_max)
        if isinstance(mbstd_group, bool) or not isinstance(mbstd_group, int) or mbstd_group < 0:
            raise ValueError(f"mbstd_group must be an integer >= 0, got {mbstd_group!r}")
        if isinstance(patch_grid, bool) or not isinstance(patch_grid, int) or (
            patch_grid and not (4 <= patch_grid <= resolution // 2 and patch_grid & (patch_grid - 1) == 0)
        ):
            raise ValueError(f"patch_grid must be 0 (no patch head) or a power of two in [4, {resolution // 2}], got {patch_grid!r}")
        self.resolution = resolution
        self.channels = channels
        self.fmap_base = fmap_base
        self.fmap_max = fmap_max
        self.mbstd_group = mbstd_group
        self.patch_grid = patch_grid
        nf = [num_features(k, fmap_base, fmap_max) for k in range(self.max_level + 1)]
        self.from_rgb = nn.ModuleList([EqualizedConv2d(channels, n, 1) for n in nf])
        self.blocks = nn.ModuleList(
            [_DOutput(nf[0], mbstd_group)] + [_DBlock(nf[k], nf[k - 1]) for k in range(1, self.max_level + 1)]
        )
        if patch_grid:  # one 1x1 head per map side 4, 8, ..., patch_grid (the smaller ones serve early levels)
            self.patch_out = nn.ModuleList(
                [EqualizedConv2d(nf[k], 1, 1, gain=1.0) for k in range(max_level_for(patch_grid) + 1)]
            )

    def patch_tap(self, level: int) -> int:
        """Index k of the trunk map (side 4 * 2**k) the patch head reads at `level`."""
        return min(max_level_for(self.patch_grid), max(level - 1, 0))

    def _trunk(self, x: torch.Tensor, level: int | None, alpha: float) -> torch.Tensor:
        """Features entering the final block (B, nf(0), 4, 4); per-sample, before minibatch stddev."""
        return self._trunk_tapped(x, level, alpha, None)[0]

    def _trunk_tapped(
        self, x: torch.Tensor, level: int | None, alpha: float, tap: int | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The trunk's output and (tap given) its map of side 4 * 2**tap, after any fade-in blend."""
        level = _resolve_level(level, self.max_level)
        alpha = _check_alpha(alpha)
        res = level_resolution(level)
        if x.ndim != 4 or x.shape[1] != self.channels or x.shape[2] != res or x.shape[3] != res:
            raise ValueError(
                f"D at level {level} expects (B, {self.channels}, {res}, {res}), got {tuple(x.shape)}"
            )
        h = _act(self.from_rgb[level](x))
        if level == 0:
            return h, (h if tap == 0 else None)
        h = self.blocks[level](h)
        if alpha < 1.0:
            old = _act(self.from_rgb[level - 1](F.avg_pool2d(x, 2)))
            h = torch.lerp(old, h.to(old.dtype), alpha)
        tapped = h if tap == level - 1 else None  # the map after block k has side 4 * 2**(k-1)
        for k in range(level - 1, 0, -1):
            h = self.blocks[k](h)
            if tap == k - 1:
                tapped = h
        return h, tapped

    def forward(
        self, x: torch.Tensor, level: int | None = None, alpha: float = 1.0, patches: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (B,); with `patches=True` (needs patch_grid > 0) also the patch logits (B, 1, g, g),
        from the same pass (so one DDP forward serves both outputs)."""
        if not patches:
            return self.blocks[0](self._trunk(x, level, alpha))
        if not self.patch_grid:
            raise ValueError("this Discriminator has no patch head (patch_grid=0)")
        tap = self.patch_tap(_resolve_level(level, self.max_level))
        h, tapped = self._trunk_tapped(x, level, alpha, tap)
        return self.blocks[0](h), self.patch_out[tap](tapped)

    def forward_with_features(
        self, x: torch.Tensor, level: int | None = None, alpha: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B,) and features (B, F) from one pass."""
        h = self._trunk(x, level, alpha)
        return self.blocks[0](h), h.flatten(1)

    def features(self, x: torch.Tensor, level: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        """(B, F) features for AnoGAN's feature matching; independent of the other batch members."""
        return self._trunk(x, level, alpha).flatten(1)


def _resolve_level(level: int | None, max_level: int) -> int:
    if level is None:
        return max_level
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= max_level:
        raise ValueError(f"level must be an integer in [0, {max_level}], got {level!r}")
    return level


def fade_real(x_full: torch.Tensor, level: int, alpha: float = 1.0) -> torch.Tensor:
    """Bring a full-resolution real batch to `level` and fade it the way G's output is faded.

    Avg-pools to 4*2**level, then (alpha < 1) blends with its own ×2 down-then-up copy, so real and
    fake images carry the same blur during a fade-in (PGGAN's real-image fading).
    """
    alpha = _check_alpha(alpha)
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise ValueError(f"fade_real: level must be an integer >= 0, got {level!r}")
    res = level_resolution(level)
    side = x_full.shape[-1]
    if x_full.ndim != 4 or x_full.shape[-2] != side or side < res or side % res or (side // res) & (side // res - 1):
        raise ValueError(f"fade_real: cannot bring images of shape {tuple(x_full.shape)} to {res}x{res}")
    x = F.avg_pool2d(x_full, side // res) if side != res else x_full
    if level == 0 or alpha >= 1.0:
        return x
    return torch.lerp(upsample2(F.avg_pool2d(x, 2)), x, alpha)


def network_kwargs(model: nn.Module) -> dict:
    """JSON-able constructor kwargs, so `type(model)(**network_kwargs(model))` rebuilds it (export)."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    model = getattr(model, "module", model)  # DDP / accelerate wrappers
    if isinstance(model, Generator):
        names = ("resolution", "channels", "latent_dim", "fmap_base", "fmap_max")
    elif isinstance(model, Discriminator):
        names = ("resolution", "channels", "fmap_base", "fmap_max", "mbstd_group")
        if model.patch_grid:  # only then: files without a patch head keep exactly their old metadata
            names += ("patch_grid",)
    else:
        raise TypeError(f"network_kwargs: not an nsgan Generator or Discriminator: {type(model).__name__}")
    return {name: getattr(model, name) for name in names}

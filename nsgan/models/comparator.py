"""The comparator C: a small fully-convolutional net that reads a tile beside a reference for "what normal
looks like here" and gives a per-pixel defect logit (issue 20; DRAEM's discriminative half, on nsgan's G).

A fixed residual (|x − G(E(x))|, its detail part) cannot tell a scratch from grain a 64-number code could
not reproduce; C learns that difference from painted defects (exact masks) and the user's labelled ones.
The reference is what is measured against: `reconstruction` (G(E(x)), the GAN's normal material),
`blur` (a Gaussian blur of x: the no-learning floor's own reference) or `none` (x alone). Input channels
are (x, ref, |x − ref|) for the two references, so those variants differ only in the reference.

No batch statistic anywhere: a tile's map never depends on the tiles scored beside it. Dilated 3×3
convolutions give a receptive field of 1 + 2·Σ dilations pixels at a cost far below E + G (counted in
`flops_per_tile`; the card and `nsgan train` report it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

REFERENCES = ("reconstruction", "blur", "none")


@dataclass(frozen=True)
class ComparatorSpec:
    """C's architecture, stored as JSON in the model file and rebuilt from it."""

    channels: int = 1
    reference: str = "reconstruction"
    width: int = 16
    dilations: tuple[int, ...] = (1, 1, 2, 2, 4, 1)
    blur_sigma: float = 2.0  # the `blur` reference's σ in pixels

    def __post_init__(self):
        object.__setattr__(self, "dilations", tuple(int(d) for d in self.dilations))
        if self.channels not in (1, 3):
            raise ValueError(f"comparator channels must be 1 or 3, got {self.channels!r}")
        if self.reference not in REFERENCES:
            raise ValueError(f"comparator reference must be one of {', '.join(REFERENCES)}, got {self.reference!r}")
        if isinstance(self.width, bool) or not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"comparator width must be a positive integer, got {self.width!r}")
        if not self.dilations or any(d < 1 for d in self.dilations):
            raise ValueError(f"comparator dilations must be positive integers, got {list(self.dilations)!r}")
        if not (0 < self.blur_sigma <= 16):
            raise ValueError(f"comparator blur_sigma must be in (0, 16], got {self.blur_sigma!r}")

    @property
    def receptive_field(self) -> int:
        return 1 + 2 * sum(self.dilations)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dilations"] = list(self.dilations)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ComparatorSpec":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


class Comparator(nn.Module):
    """(x, rec) tiles (N, C, T, T) in [-1, 1] -> defect logits (N, 1, T, T). `rec` only for reference='reconstruction'."""

    def __init__(self, spec: ComparatorSpec | None = None, **kwargs):
        super().__init__()
        self.spec = spec = spec or ComparatorSpec(**kwargs)
        c_in = spec.channels if spec.reference == "none" else 3 * spec.channels
        layers: list[nn.Module] = []
        for d in spec.dilations:
            layers += [nn.Conv2d(c_in, spec.width, 3, padding=d, dilation=d, padding_mode="reflect"), nn.LeakyReLU(0.2)]
            c_in = spec.width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(spec.width, 1, 1)
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.2)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.constant_(self.head.bias, -4.0)  # prior p ≈ 0.02: most pixels are normal
        self.register_buffer("blur_kernel", _gaussian_kernel(spec.blur_sigma), persistent=False)

    @property
    def needs_reconstruction(self) -> bool:
        return self.spec.reference == "reconstruction"

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur of x (reflect padding), per channel."""
        k = self.blur_kernel.to(x.dtype)
        r = (k.numel() - 1) // 2
        c = x.shape[1]
        r_eff = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
        if r_eff < r:  # a tile smaller than the kernel: trim it (reflect padding needs pad < side)
            k = k[r - r_eff:r + r_eff + 1]
            k = k / k.sum()
            r = r_eff
        h = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(F.pad(h, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    def inputs(self, x: torch.Tensor, rec: torch.Tensor | None = None) -> torch.Tensor:
        ref = self.spec.reference
        if ref == "none":
            return x
        if ref == "blur":
            rec = self.blur(x)
        elif rec is None:
            raise ValueError("this comparator reads the reconstruction G(E(x)); pass rec")
        else:  # G's output may overshoot [-1, 1]; x never does, so an overshoot is no evidence of a defect
            rec = rec.clamp(-1.0, 1.0)
        return torch.cat([x, rec, (x - rec).abs()], dim=1)

    def forward(self, x: torch.Tensor, rec: torch.Tensor | None = None) -> torch.Tensor:
        s = self.spec
        if x.ndim != 4 or x.shape[1] != s.channels:
            raise ValueError(f"the comparator expects (N, {s.channels}, T, T), got {tuple(x.shape)}")
        return self.head(self.body(self.inputs(x, rec)))


def flops_per_tile(spec: ComparatorSpec, tile: int) -> float:
    """Multiply-adds × 2 of one tile's forward pass (convolutions only), by arithmetic."""
    c_in = spec.channels if spec.reference == "none" else 3 * spec.channels
    total = 0
    for _ in spec.dilations:
        total += 2 * 9 * c_in * spec.width * tile * tile
        c_in = spec.width
    total += 2 * spec.width * tile * tile
    return float(total)

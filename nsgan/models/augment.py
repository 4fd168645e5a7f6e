"""Differentiable augmentation of what D sees, for GANs trained on few images (DiffAugment, ADA).

Zhao et al. 2020 (DiffAugment) and Karras et al. 2020 (ADA): D overfits a small training set
and G's learning signal fades; transforming every image D sees, real and fake alike, with
differentiable transforms keeps D honest without teaching G the transforms, as long as each
transform is applied to an image with a probability p < 1 (ADA §2: a "non-leaking" pipeline).
The same `Augmenter` is called on the reals, G's fakes (D step and G step) and the labelled
abnormal tiles, each image drawn on its own; its gradient reaches the input, so G learns
through it. Inference never calls it.

Transforms (`Transform`), in the order they are applied: flip (left-right), turn (k·90°),
translation (integer shift by up to `translation`·side, padded with zeros or by reflection),
brightness (+U(-0.5, 0.5), data in [-1, 1]), contrast (×U(0.5, 1.5) about the image mean),
saturation (×U(0, 2) about the pixel's channel mean; 3-channel images only), cutout (a square of
side `cutout`·side set to 0). Flips and turns are safe for textures, which have no upright.

Every random number comes from a CPU `torch.Generator` the caller owns and saves with its state:
each call draws a fixed count per image whatever p is, so a resumed run draws the same numbers
as an uninterrupted one. `AdaptiveP` is ADA's controller: r_t = E[sign(D(real))] over a window of
D steps; p moves toward keeping r_t at a target and stays in [0, p_max].
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F


class Transform(str, Enum):
    """`augment.policy`: the transforms one may switch on."""

    FLIP = "flip"
    TURN = "turn"
    TRANSLATION = "translation"
    BRIGHTNESS = "brightness"
    CONTRAST = "contrast"
    SATURATION = "saturation"
    CUTOUT = "cutout"


class Padding(str, Enum):
    """`augment.padding`: what a translation shows where the image moved away."""

    ZEROS = "zeros"
    REFLECT = "reflect"


TRANSFORMS = tuple(t.value for t in Transform)  # the config's choice list; also the order of application
PADDINGS = tuple(p.value for p in Padding)

# Columns of one image's draw: a gate per transform (applied when gate < p), then the parameters.
_GATE = {t: i for i, t in enumerate(Transform)}
_TURN, _DX, _DY, _BRIGHT, _CONTRAST, _SAT, _CX, _CY = range(len(Transform), len(Transform) + 8)
_COLUMNS = len(Transform) + 8


@dataclass(frozen=True)
class Draw:
    """One batch's random numbers (B, _COLUMNS) in [0, 1) and the probability they are gated with."""

    u: torch.Tensor
    p: float


class Augmenter:
    """The transforms of `policy`, each applied to an image with probability `p` (a plain attribute the caller may move)."""

    def __init__(self, policy: list[str] | tuple[str, ...], p: float, generator: torch.Generator,
                 translation: float = 0.125, cutout: float = 0.5, padding: str = "zeros"):
        unknown = [t for t in policy if t not in TRANSFORMS]
        if unknown:
            raise ValueError(f"Augmenter: unknown transform(s) {unknown} (known: {', '.join(TRANSFORMS)})")
        if padding not in PADDINGS:
            raise ValueError(f"Augmenter: padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        if not 0 < translation <= 0.5 or not 0 < cutout <= 1:
            raise ValueError(f"Augmenter: translation must be in (0, 0.5] and cutout in (0, 1], got {translation}, {cutout}")
        self.policy = tuple(t for t in Transform if t.value in policy)  # application order is fixed
        self.p = float(p)
        self.generator = generator
        self.translation, self.cutout, self.padding = translation, cutout, padding

    def draw(self, n: int) -> Draw:
        """The random numbers of `n` images (always the same count, so the stream position does not depend on p)."""
        return Draw(torch.rand(n, _COLUMNS, generator=self.generator), self.p)

    def __call__(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch (B, C, S, S); with `mask` (B, 1, k·S, k·S) also return the mask moved with its image
        (flip, turn, translation and cutout; colour leaves it alone), so a defect mask still covers its defect."""
        d = self.draw(x.shape[0])
        out, m = apply(x, d, self.policy, self.translation, self.cutout, self.padding, mask)
        return out if mask is None else (out, m)

    # -- state (saved with the training state, so a resume is exact) --------------------------

    def state(self) -> dict[str, Any]:
        return {"rng": self.generator.get_state().tolist(), "p": self.p}

    def load_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(torch.tensor(state["rng"], dtype=torch.uint8))
        self.p = float(state["p"])


def apply(x: torch.Tensor, d: Draw, policy: tuple[Transform, ...], translation: float, cutout: float, padding: str,
          mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`policy`'s transforms with the draw `d`; images no transform picked come back bit for bit."""
    b, c, side, width = x.shape
    if side != width:
        raise ValueError(f"augment: images must be square, got {tuple(x.shape)}")
    k = 1
    if mask is not None:
        k = mask.shape[-1] // side
        if mask.shape[0] != b or mask.shape[-1] != k * side or mask.shape[-2] != mask.shape[-1]:
            raise ValueError(f"augment: mask of shape {tuple(mask.shape)} does not fit images {tuple(x.shape)}")
    if d.p <= 0 or not policy:
        return x, mask
    u = d.u.to(x.device)
    on = {t: (u[:, _GATE[t]] < d.p) for t in policy}

    def pick(t: Transform, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        return torch.where(on[t].view(-1, 1, 1, 1), new, old)

    for t in policy:
        if t is Transform.FLIP:
            x = pick(t, x.flip(-1), x)
            mask = None if mask is None else pick(t, mask.flip(-1), mask)
        elif t is Transform.TURN:
            turns = (u[:, _TURN] * 4).long().clamp(max=3).masked_fill(~on[t], 0)
            x = _turn(x, turns)
            mask = None if mask is None else _turn(mask, turns)
        elif t is Transform.TRANSLATION:
            shift = int(side * translation + 0.5)  # DiffAugment's rounding: 1 px at 4 px and 1/8
            if shift == 0:
                continue
            dx = ((u[:, _DX] * (2 * shift + 1)).long().clamp(max=2 * shift) - shift).masked_fill(~on[t], 0)
            dy = ((u[:, _DY] * (2 * shift + 1)).long().clamp(max=2 * shift) - shift).masked_fill(~on[t], 0)
            x = _translate(x, dx, dy, shift, padding)
            mask = None if mask is None else _translate(mask, dx * k, dy * k, shift * k, padding)
        elif t is Transform.BRIGHTNESS:
            x = pick(t, x + (u[:, _BRIGHT] - 0.5).to(x.dtype).view(-1, 1, 1, 1), x)
        elif t is Transform.CONTRAST:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = pick(t, (x - mean) * (u[:, _CONTRAST] + 0.5).to(x.dtype).view(-1, 1, 1, 1) + mean, x)
        elif t is Transform.SATURATION:
            if c != 3:  # a gray image has no saturation
                continue
            mean = x.mean(dim=1, keepdim=True)
            x = pick(t, (x - mean) * (u[:, _SAT] * 2).to(x.dtype).view(-1, 1, 1, 1) + mean, x)
        elif t is Transform.CUTOUT:
            size = max(1, int(side * cutout + 0.5))
            cy = (u[:, _CY] * (side + 1 - size % 2)).long()  # DiffAugment's centre range: a square may hang over the edge
            cx = (u[:, _CX] * (side + 1 - size % 2)).long()
            keep = _outside_square(cy, cx, size, side, 1)
            x = pick(t, x * keep.to(x.dtype), x)
            if mask is not None:
                mask = pick(t, mask * _outside_square(cy, cx, size, side, k).to(mask.dtype), mask)
    return x, mask


def _turn(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Image i turned by turns[i]·90°."""
    out = x
    for q in (1, 2, 3):  # no test of which turns occur: that would wait for the device
        out = torch.where((turns == q).view(-1, 1, 1, 1), torch.rot90(x, q, dims=(-2, -1)), out)
    return out


def _translate(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, shift: int, padding: str) -> torch.Tensor:
    """Image i moved by (dx[i], dy[i]) pixels, the uncovered border padded; a gather, so gradients flow."""
    b, c, side, _ = x.shape
    mode = "constant" if padding == Padding.ZEROS else "reflect"
    padded = F.pad(x, (shift, shift, shift, shift), mode=mode)
    dev = x.device
    base = torch.arange(side, device=dev) + shift
    rows = (base.view(1, -1) - dy.to(dev).view(-1, 1))  # (B, S): row r of the output reads row r - dy
    cols = (base.view(1, -1) - dx.to(dev).view(-1, 1))
    idx = torch.arange(b, device=dev).view(-1, 1, 1)
    return padded[idx, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, S, S, C) -> (B, C, S, S)


def _outside_square(cy: torch.Tensor, cx: torch.Tensor, size: int, side: int, k: int) -> torch.Tensor:
    """(B, 1, k·side, k·side) 1 outside each image's cutout square (centre in side-pixel units), else 0."""
    grid = torch.arange(k * side, device=cy.device)
    top, left = (cy - size // 2) * k, (cx - size // 2) * k
    in_rows = (grid.view(1, -1) >= top.view(-1, 1)) & (grid.view(1, -1) < (top + size * k).view(-1, 1))
    in_cols = (grid.view(1, -1) >= left.view(-1, 1)) & (grid.view(1, -1) < (left + size * k).view(-1, 1))
    return ~(in_rows[:, None, :, None] & in_cols[:, None, None, :])


class AdaptiveP:
    """ADA's controller of p (Karras et al. 2020, §3): every `interval` D steps, r_t = E[sign(D(real))] over
    them; p += sign(r_t − target) · images / (speed_kimg · 1000), clamped to [0, p_max]. So p can cross 0 → 1
    in `speed_kimg` thousand images. The window's sums are state too: a resume mid-window is exact."""

    def __init__(self, target: float = 0.6, speed_kimg: float = 10.0, p_max: float = 0.8, interval: int = 4):
        self.target, self.speed_kimg, self.p_max, self.interval = target, speed_kimg, p_max, interval
        self.sign_sum, self.count, self.r_t = 0.0, 0, 0.0

    def observe(self, sign_mean: float, n: int) -> None:
        """One D step: the mean of sign(D(real)) over its `n` augmented reals (this process)."""
        self.sign_sum += float(sign_mean) * n
        self.count += n

    def due(self, step: int) -> bool:
        """Whether D step `step` (0-based, over the whole run) closes a window."""
        return (step + 1) % self.interval == 0

    def adjust(self, p: float, sign_sum: float, count: int) -> float:
        """The new p from the window's sums (over all processes: `count` reals shown to D); resets the window."""
        self.r_t = sign_sum / max(count, 1)
        step = count / (self.speed_kimg * 1000.0)
        moved = p + (step if self.r_t > self.target else -step if self.r_t < self.target else 0.0)
        self.sign_sum, self.count = 0.0, 0
        return min(max(moved, 0.0), self.p_max)

    def state(self) -> dict[str, Any]:
        return {"sign_sum": self.sign_sum, "count": self.count, "r_t": self.r_t}

    def load_state(self, state: dict[str, Any]) -> None:
        self.sign_sum, self.count, self.r_t = float(state["sign_sum"]), int(state["count"]), float(state["r_t"])

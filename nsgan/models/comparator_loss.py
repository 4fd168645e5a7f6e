"""The comparator's loss: a pixel term that suits targets of a few dozen pixels, a Dice term, and MIL for bags.

A defect covers 1-6% of a tile and none of most tiles, so plain BCE is dominated by easy normal
pixels. `kind` chooses the pixel term:

- `bce`: binary cross-entropy with positive pixels weighted `pos_weight`;
- `focal`: α-balanced focal loss (Lin et al. 2017), −α_t (1 − p_t)^γ log p_t, mean over all pixels;
- `focal_dice` / `bce_dice`: that term plus `dice_weight` × soft Dice, 1 − (2Σpy + 1)/(Σp + Σy + 1),
  averaged over the tiles that hold at least one target pixel (an all-normal tile has no overlap
  to reward; its pixels are taught by the pixel term alone).

`mil_loss` serves image-labelled defective images whose pixels are unknown: the image's tiles form a
bag, s = the mean of the top-k logits over all of the bag's pixels, and BCE(s, label) asks the
hottest pixels of a defective image to fire and those of a normal image not to (the image score is
the map's max, so this is the quantity that decides it).
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F


class ComparatorLossKind(str, Enum):
    """`comparator.loss`: the pixel term, with or without Dice."""

    FOCAL_DICE = "focal_dice"
    FOCAL = "focal"
    BCE = "bce"
    BCE_DICE = "bce_dice"

    @property
    def focal(self) -> bool:
        return self in (ComparatorLossKind.FOCAL, ComparatorLossKind.FOCAL_DICE)

    @property
    def dice(self) -> bool:
        return self in (ComparatorLossKind.FOCAL_DICE, ComparatorLossKind.BCE_DICE)


LOSS_KINDS = tuple(k.value for k in ComparatorLossKind)  # the config's choice list and messages read these


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 0.75) -> torch.Tensor:
    """Mean α-balanced focal loss over every pixel (α weighs the positives, 1 − α the negatives)."""
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return (a_t * (1 - p_t).pow(gamma) * ce).mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice, 1 − (2Σpy + 1)/(Σp + Σy + 1) per tile, averaged over tiles with a target pixel (0 if none)."""
    p = torch.sigmoid(logits).flatten(1)
    y = target.flatten(1)
    has = y.sum(1) > 0
    if not bool(has.any()):
        return logits.sum() * 0.0
    p, y = p[has], y[has]
    d = 1 - (2 * (p * y).sum(1) + 1) / (p.sum(1) + y.sum(1) + 1)
    return d.mean()


def mil_loss(logits: torch.Tensor, positive: bool, k: int = 16) -> torch.Tensor:
    """BCE of the mean of the top-k logits over ALL pixels of one image's tiles, against the image label.

    `logits` (N, 1, T, T) are the tiles of one image (a bag); k is capped at the bag's pixel count.
    """
    flat = logits.reshape(-1)
    if flat.numel() == 0:
        raise ValueError("mil_loss: an empty bag")
    k = max(1, min(int(k), flat.numel()))
    s = flat.topk(k).values.mean()
    return F.binary_cross_entropy_with_logits(s, torch.tensor(1.0 if positive else 0.0, dtype=s.dtype, device=s.device))


class ComparatorLoss:
    """One object the training loop calls: `loss, stats = loss_fn(logits, target)`; `mil(bag, positive)`."""

    def __init__(self, kind: str = "focal_dice", focal_gamma: float = 2.0, alpha: float = 0.75,
                 dice_weight: float = 1.0, pos_weight: float = 10.0, mil_k: int = 16, mil_weight: float = 0.1):
        if kind not in LOSS_KINDS:
            raise ValueError(f"comparator loss must be one of {', '.join(LOSS_KINDS)}, got {kind!r}")
        if focal_gamma < 0 or not 0 < alpha < 1 or dice_weight < 0 or pos_weight <= 0 or mil_k < 1 or mil_weight < 0:
            raise ValueError(f"comparator loss: bad settings gamma={focal_gamma} alpha={alpha} dice_weight={dice_weight} "
                             f"pos_weight={pos_weight} mil_k={mil_k} mil_weight={mil_weight}")
        self.kind, self.gamma, self.alpha = ComparatorLossKind(kind).value, float(focal_gamma), float(alpha)
        self.dice_weight, self.pos_weight = float(dice_weight), float(pos_weight)
        self.mil_k, self.mil_weight = int(mil_k), float(mil_weight)

    def pixel(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if ComparatorLossKind(self.kind).focal:
            return focal_loss(logits, target, self.gamma, self.alpha)
        pw = torch.tensor(self.pos_weight, dtype=logits.dtype, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """logits, target (N, 1, T, T) (target in {0, 1} as float) -> (scalar loss, stats of floats)."""
        if logits.shape != target.shape:
            raise ValueError(f"comparator loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
        logits, target = logits.float(), target.float()
        pixel = self.pixel(logits, target)
        loss = pixel
        dice = None
        if ComparatorLossKind(self.kind).dice:
            dice = dice_loss(logits, target)
            loss = loss + self.dice_weight * dice
        with torch.no_grad():
            p = torch.sigmoid(logits)
            pos = target > 0.5
            normal_tiles = ~pos.flatten(1).any(1)
            stats = {"loss_pixel": float(pixel), "loss_dice": float(dice) if dice is not None else 0.0,
                     "p_defect": float(p[pos].mean()) if bool(pos.any()) else float("nan"),
                     "p_normal_max": float(p.flatten(1)[normal_tiles].amax(1).mean()) if bool(normal_tiles.any())
                     else float("nan")}
        return loss, stats

    def mil(self, bag_logits: torch.Tensor, positive: bool) -> torch.Tensor:
        """mil_weight × mil_loss(bag, positive, mil_k)."""
        return self.mil_weight * mil_loss(bag_logits.float(), positive, self.mil_k)

    def mil_term(self, logits: torch.Tensor, bags: list[tuple[int, int]], plain: tuple[int, int]) -> torch.Tensor:
        """A step's MIL term: ½ (mean over the positive bags [a, z) of logits + one negative bag of the plain normal
        tiles [a, z) together). Pooled, the negative is a bag of several tiles as a normal image would be; one bag
        per plain tile asked far less of the normal side than a whole image's top-k asks of the positive one."""
        pos = torch.stack([self.mil(logits[a:z], True) for a, z in bags]).mean()
        a, z = plain
        neg = self.mil(logits[a:z], False) if z > a else pos * 0
        return 0.5 * (pos + neg)

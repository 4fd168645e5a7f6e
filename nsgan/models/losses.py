"""GAN losses with the abnormal-image penalty (Kimura & Yanagihara 2018; the equations are in the README).

One object, two methods the training loop calls per phase: `d_loss` (D step, regulariser
included) and `g_loss` (G step). `D` is any callable `D(x, level, alpha) -> logits (B,)`: the
bare Discriminator or its DDP/accelerate wrapper.

Each kind of batch (real, fake, abnormal, interpolates) goes through D in its OWN forward: D ends
with a minibatch-stddev layer, and a concatenated batch would let D tell kinds apart by their
mixed group statistics (and would tie R1's gradient w.r.t. the reals to the fakes in their group).

R1 / the gradient penalty is taken with `torch.autograd.grad(create_graph=True)` on the same
forward and added to the same scalar, so the loop runs ONE backward per D step. Under DDP a
separate regulariser backward leaves gradients un-averaged across ranks, which broke the next step.

Lazy R1 (StyleGAN2's lazy regularisation): with `r1_every = k` R1 is taken on every k-th D step
only, weighted by k so its average pull is unchanged; the caller passes `regularise=r1_due(step)`
with `step` the D steps taken so far (a saved counter, so a resumed run regularises on the same
steps). It still rides in D's one backward on those steps, not in a separate regulariser step, so
StyleGAN2's Adam correction for a separate step does not apply. WGAN-GP's penalty runs every step.

Where the abnormal penalty acts (`penalty`): "tile" (the paper's form) on the whole tile's logit;
the patch forms on D's per-patch logits (`D(x, level, alpha, patches=True)`), since a labelled
abnormal tile is mostly normal material: "patch_mask" at the patches that touch the defect mask
(the other patches of the tile count as real), "patch_mil" (image labels only, multiple-instance)
at each abnormal tile's `mil_k` least-real patches, as at least one patch holds the defect. With a
patch form, the real and fake terms, R1 and G's loss apply to the patch logits too.
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F


class GanLossKind(str, Enum):
    """`loss.kind`: the GAN objective."""

    NSGAN = "nsgan"  # non-saturating logistic + R1 (the paper's)
    WGANGP = "wgangp"  # WGAN-GP with drift (original PGGAN)


class Penalty(str, Enum):
    """`loss.penalty`: where the abnormal penalty γ acts."""

    TILE = "tile"  # the whole tile's logit (the paper's form)
    PATCH_MASK = "patch_mask"  # the patches that touch the defect mask
    PATCH_MIL = "patch_mil"  # each abnormal tile's k least-real patches (image labels only)

    @property
    def on_patches(self) -> bool:
        return self is not Penalty.TILE


KINDS = tuple(k.value for k in GanLossKind)  # the config's choice lists and messages read these
PENALTIES = tuple(p.value for p in Penalty)


def penalty_fits(kind: str, penalty: str) -> bool:
    """The patch forms are written for the non-saturating loss only (WGAN-GP's critic has no patch term)."""
    return not Penalty(penalty).on_patches or GanLossKind(kind) is GanLossKind.NSGAN


def _check_weight(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"GANLoss: {name} must be a number >= 0, got {value!r}")
    return float(value)


def _stats(**values: torch.Tensor) -> dict[str, float]:
    """Scalars -> floats with one device sync for the whole dict."""
    names = list(values)
    numbers = torch.stack([v.detach().float().reshape(()) for v in values.values()]).tolist()
    return dict(zip(names, numbers))


class GANLoss:
    """D and G losses of one kind.

    kind "nsgan" (the paper's, default): non-saturating logistic loss; the abnormal batch is one
    more kind of fake with weight `gamma`; R1 on the reals with weight `r1_gamma` (0 = off).
    gamma = 0 is plain AnoGAN-style training: the abnormal term is not computed at all.

    kind "wgangp" (original PGGAN): WGAN-GP with drift. The fake side is the paper's mixture
    (p_g + gamma·p_a)/(1 + gamma): mean D(fake)/(1+gamma) + gamma/(1+gamma)·mean D(abnormal).
    Normalising keeps the critic's objective bounded (with weights 1 and gamma, adding a constant
    c to D changes the loss by gamma·c, so D would drift off); gamma = 0 gives PGGAN's loss exactly.
    The gradient penalty is on interpolates between reals and G's fakes only.
    """

    def __init__(
        self,
        kind: str = "nsgan",
        gamma: float = 0.0,
        r1_gamma: float = 10.0,
        gp_lambda: float = 10.0,
        drift: float = 0.001,
        penalty: str = "tile",
        mil_k: int = 1,
        r1_every: int = 1,
    ):
        kind = getattr(kind, "value", kind)  # accept a str Enum as well
        if kind not in KINDS:
            raise ValueError(f"GANLoss: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        penalty = getattr(penalty, "value", penalty)
        if penalty not in PENALTIES:
            raise ValueError(f"GANLoss: penalty must be one of {', '.join(PENALTIES)}, got {penalty!r}")
        if not penalty_fits(kind, penalty):
            raise ValueError(f"GANLoss: penalty {penalty!r} needs kind 'nsgan', got {kind!r}")
        if isinstance(mil_k, bool) or not isinstance(mil_k, int) or mil_k < 1:
            raise ValueError(f"GANLoss: mil_k must be an integer >= 1, got {mil_k!r}")
        if isinstance(r1_every, bool) or not isinstance(r1_every, int) or r1_every < 1:
            raise ValueError(f"GANLoss: r1_every must be an integer >= 1, got {r1_every!r}")
        self.kind = kind
        self.gamma = _check_weight("gamma", gamma)
        self.r1_gamma = _check_weight("r1_gamma", r1_gamma)
        self.gp_lambda = _check_weight("gp_lambda", gp_lambda)
        self.drift = _check_weight("drift", drift)
        self.penalty = penalty
        self.mil_k = mil_k
        self.r1_every = r1_every

    def r1_due(self, step: int) -> bool:
        """Whether D step number `step` (0-based, counted over the whole run) carries R1."""
        return self.kind == GanLossKind.NSGAN and self.r1_gamma > 0 and step % self.r1_every == 0

    @property
    def uses_patches(self) -> bool:
        """True when D's patch logits take part (D needs a patch head)."""
        return Penalty(self.penalty).on_patches

    def __repr__(self) -> str:
        return (
            f"GANLoss(kind={self.kind!r}, gamma={self.gamma}, r1_gamma={self.r1_gamma}, "
            f"gp_lambda={self.gp_lambda}, drift={self.drift}, penalty={self.penalty!r}, mil_k={self.mil_k}, "
            f"r1_every={self.r1_every})"
        )

    def d_loss(
        self,
        D,
        real: torch.Tensor,
        fake: torch.Tensor,
        abnormal: torch.Tensor | None = None,
        level: int | None = None,
        alpha: float = 1.0,
        abnormal_mask: torch.Tensor | None = None,
        regularise: bool = True,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """D's loss (scalar, float32, regulariser included) and floats for logging.

        `regularise` (nsgan): take R1 on this step, weighted by r1_gamma·r1_every/2; with
        r1_every > 1 pass `r1_due(step)`. The "r1" stat is present only on steps that take it.

        `fake` is detached here (the D step must not reach G). `abnormal` is required when
        gamma > 0 and ignored when gamma == 0. `abnormal_mask` (B_a, 1, H, W), any side that is a
        multiple of the patch grid: the defect masks, needed by penalty "patch_mask". Needs grad
        mode on (R1/GP differentiate D).
        """
        if self.gamma > 0 and abnormal is None:
            raise ValueError("GANLoss: gamma > 0 needs an abnormal batch, got None")
        if self.gamma > 0 and self.penalty == Penalty.PATCH_MASK and abnormal_mask is None:
            raise ValueError("GANLoss: penalty 'patch_mask' needs the abnormal batch's masks, got None")
        if not torch.is_grad_enabled():
            raise RuntimeError("GANLoss.d_loss needs grad mode (it differentiates D)")
        real, fake = real.detach(), fake.detach()
        abnormal = abnormal.detach() if self.gamma > 0 else None
        if self.kind == GanLossKind.NSGAN:
            return self._d_nsgan(D, real, fake, abnormal, level, alpha, abnormal_mask, regularise)
        return self._d_wgangp(D, real, fake, abnormal, level, alpha)

    def g_loss(
        self, D, fake: torch.Tensor, level: int | None = None, alpha: float = 1.0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """G's loss: non-saturating softplus(-D(G(z))) for nsgan (plus the patch logits' mean with a
        patch penalty), -D(G(z)) for wgangp."""
        if self.uses_patches:
            d_fake, p_fake = (t.float() for t in D(fake, level, alpha, patches=True))
            loss = F.softplus(-d_fake).mean() + F.softplus(-p_fake).mean()
            return loss, _stats(loss_g=loss)
        d_fake = D(fake, level, alpha).float()
        loss = F.softplus(-d_fake).mean() if self.kind == GanLossKind.NSGAN else -d_fake.mean()
        return loss, _stats(loss_g=loss)

    def abnormal_patch_term(
        self, patch_logits: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The abnormal term (before γ) on patch logits (B, 1, g, g), and the mean penalised logit.

        patch_mask: mean softplus(p) over the patches that touch the mask (a mask pixel inside the
        patch's cell) + mean softplus(-p) over the others (normal material counts as real).
        patch_mil: mean softplus(p) over each tile's `mil_k` lowest (least real) patch logits.
        """
        b, _, g, _ = patch_logits.shape
        if self.penalty == Penalty.PATCH_MIL:
            least = patch_logits.flatten(1).topk(min(self.mil_k, g * g), dim=1, largest=False).values
            return F.softplus(least).mean(), least.mean()
        if mask is None or mask.shape[0] != b or mask.shape[-1] % g or mask.shape[-2] != mask.shape[-1]:
            raise ValueError(f"GANLoss: masks of shape {None if mask is None else tuple(mask.shape)} do not fit "
                             f"patch logits {tuple(patch_logits.shape)}")
        hit = patch_mask(mask, g)
        n_hit = hit.sum()
        on = torch.where(hit, F.softplus(patch_logits), 0.0).sum() / n_hit.clamp(min=1)
        off = torch.where(hit, 0.0, F.softplus(-patch_logits)).sum() / (hit.numel() - n_hit).clamp(min=1)
        shown = torch.where(hit, patch_logits, 0.0).sum() / n_hit.clamp(min=1)
        return on + off, shown

    def _d_nsgan(self, D, real, fake, abnormal, level, alpha, abnormal_mask=None, regularise=True):
        use_r1 = regularise and self.r1_gamma > 0
        real = real.requires_grad_(use_r1)
        if self.uses_patches:
            d_real, p_real = (t.float() for t in D(real, level, alpha, patches=True))
            d_fake, p_fake = (t.float() for t in D(fake, level, alpha, patches=True))
        else:
            d_real = D(real, level, alpha).float()
            d_fake = D(fake, level, alpha).float()
        loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        # real_sign: ADA's overfitting signal E[sign(D(real))] (nsgan/models/augment.py steers p by it)
        stats = dict(d_real=d_real.mean(), d_fake=d_fake.mean(), real_sign=d_real.detach().sign().mean())
        if self.uses_patches:
            loss = loss + F.softplus(-p_real).mean() + F.softplus(p_fake).mean()
            stats.update(p_real=p_real.mean(), p_fake=p_fake.mean())
        if abnormal is not None:
            if self.uses_patches:  # the tile's global logit gets no abnormal term: the patches carry it
                _, p_abnormal = D(abnormal, level, alpha, patches=True)
                term, stats["d_abnormal"] = self.abnormal_patch_term(p_abnormal.float(), abnormal_mask)
                loss = loss + self.gamma * term
            else:
                d_abnormal = D(abnormal, level, alpha).float()
                loss = loss + self.gamma * F.softplus(d_abnormal).mean()
                stats["d_abnormal"] = d_abnormal.mean()
        if use_r1:
            (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            r1 = grad.float().square().flatten(1).sum(dim=1).mean()
            if self.uses_patches:  # R1 on each sample's mean patch logit as well
                (grad,) = torch.autograd.grad(p_real.flatten(1).mean(dim=1).sum(), real, create_graph=True)
                r1 = r1 + grad.float().square().flatten(1).sum(dim=1).mean()
            loss = loss + (self.r1_gamma * self.r1_every / 2) * r1  # k = 1: r1_gamma/2 exactly, as before
            stats["r1"] = r1
        return loss, _stats(loss_d=loss, **stats)

    def _d_wgangp(self, D, real, fake, abnormal, level, alpha):
        d_real = D(real, level, alpha).float()
        d_fake = D(fake, level, alpha).float()
        fake_side = d_fake.mean()
        stats = dict(d_real=d_real.mean(), d_fake=d_fake.mean())
        if abnormal is not None:
            d_abnormal = D(abnormal, level, alpha).float()
            fake_side = (fake_side + self.gamma * d_abnormal.mean()) / (1 + self.gamma)
            stats["d_abnormal"] = d_abnormal.mean()
        loss = fake_side - d_real.mean() + self.drift * d_real.square().mean()
        if self.gp_lambda > 0:
            n = min(len(real), len(fake))
            u = torch.rand(n, 1, 1, 1, device=real.device, dtype=real.dtype)
            mixed = torch.lerp(real[:n], fake[:n].to(real.dtype), u).requires_grad_(True)
            (grad,) = torch.autograd.grad(D(mixed, level, alpha).float().sum(), mixed, create_graph=True)
            gp = (grad.float().flatten(1).norm(dim=1) - 1).square().mean()
            loss = loss + self.gp_lambda * gp
            stats["gp"] = gp
        return loss, _stats(loss_d=loss, **stats)


def patch_mask(mask: torch.Tensor, grid: int) -> torch.Tensor:
    """Masks (B, 1, H, W) -> (B, 1, grid, grid) bool: True where a mask pixel lies in the patch's cell."""
    side = mask.shape[-1]
    m = mask.float()
    return (F.max_pool2d(m, side // grid) if side != grid else m) > 0

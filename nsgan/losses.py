"""GAN losses with the abnormal-image penalty (Kimura & Yanagihara 2018); see DESIGN.md.

One object, two methods the training loop calls per phase: `d_loss` (D step, regulariser
included) and `g_loss` (G step). `D` is any callable `D(x, level, alpha) -> logits (B,)`: the
bare Discriminator or its DDP/accelerate wrapper.

Each kind of batch (real, fake, abnormal, interpolates) goes through D in its OWN forward: D ends
with a minibatch-stddev layer, and a concatenated batch would let D tell kinds apart by their
mixed group statistics (and would tie R1's gradient w.r.t. the reals to the fakes in their group).

R1 / the gradient penalty is taken with `torch.autograd.grad(create_graph=True)` on the same
forward and added to the same scalar, so the loop runs ONE backward per D step. Under DDP a
separate regulariser backward leaves gradients un-averaged across ranks (DESIGN.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KINDS = ("nsgan", "wgangp")


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
    ):
        kind = getattr(kind, "value", kind)  # accept a str Enum as well
        if kind not in KINDS:
            raise ValueError(f"GANLoss: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.kind = kind
        self.gamma = _check_weight("gamma", gamma)
        self.r1_gamma = _check_weight("r1_gamma", r1_gamma)
        self.gp_lambda = _check_weight("gp_lambda", gp_lambda)
        self.drift = _check_weight("drift", drift)

    def __repr__(self) -> str:
        return (
            f"GANLoss(kind={self.kind!r}, gamma={self.gamma}, r1_gamma={self.r1_gamma}, "
            f"gp_lambda={self.gp_lambda}, drift={self.drift})"
        )

    def d_loss(
        self,
        D,
        real: torch.Tensor,
        fake: torch.Tensor,
        abnormal: torch.Tensor | None = None,
        level: int | None = None,
        alpha: float = 1.0,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """D's loss (scalar, float32, regulariser included) and floats for logging.

        `fake` is detached here (the D step must not reach G). `abnormal` is required when
        gamma > 0 and ignored when gamma == 0. Needs grad mode on (R1/GP differentiate D).
        """
        if self.gamma > 0 and abnormal is None:
            raise ValueError("GANLoss: gamma > 0 needs an abnormal batch, got None")
        if not torch.is_grad_enabled():
            raise RuntimeError("GANLoss.d_loss needs grad mode (it differentiates D)")
        real, fake = real.detach(), fake.detach()
        abnormal = abnormal.detach() if self.gamma > 0 else None
        if self.kind == "nsgan":
            return self._d_nsgan(D, real, fake, abnormal, level, alpha)
        return self._d_wgangp(D, real, fake, abnormal, level, alpha)

    def g_loss(
        self, D, fake: torch.Tensor, level: int | None = None, alpha: float = 1.0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """G's loss: non-saturating softplus(-D(G(z))) for nsgan, -D(G(z)) for wgangp."""
        d_fake = D(fake, level, alpha).float()
        loss = F.softplus(-d_fake).mean() if self.kind == "nsgan" else -d_fake.mean()
        return loss, _stats(loss_g=loss)

    def _d_nsgan(self, D, real, fake, abnormal, level, alpha):
        use_r1 = self.r1_gamma > 0
        real = real.requires_grad_(use_r1)
        d_real = D(real, level, alpha).float()
        d_fake = D(fake, level, alpha).float()
        loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        stats = dict(d_real=d_real.mean(), d_fake=d_fake.mean())
        if abnormal is not None:
            d_abnormal = D(abnormal, level, alpha).float()
            loss = loss + self.gamma * F.softplus(d_abnormal).mean()
            stats["d_abnormal"] = d_abnormal.mean()
        if use_r1:
            (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            r1 = grad.float().square().flatten(1).sum(dim=1).mean()
            loss = loss + (self.r1_gamma / 2) * r1
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

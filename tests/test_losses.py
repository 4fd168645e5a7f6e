"""GAN losses: the abnormal penalty pushes D down on abnormal images; gamma = 0 is the baseline."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nsgan.models.losses import GANLoss
from nsgan.models.networks import Discriminator


class LinearD(nn.Module):
    """D(x) = <w, x> + b: its input gradient is w for every sample, so R1 = ||w||^2 exactly."""

    def __init__(self, numel, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(numel, generator=g, dtype=torch.float64))
        self.b = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, level=None, alpha=1.0):
        return x.flatten(1) @ self.w + self.b


class TanhD(nn.Module):
    """A small nonlinear D for a finite-difference check of R1."""

    def __init__(self, numel, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(numel, 5, generator=g, dtype=torch.float64) * 0.5)

    def forward(self, x, level=None, alpha=1.0):
        return torch.tanh(x.flatten(1) @ self.W).square().sum(dim=1)


def batches(seed=0, n=4, res=8, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(n, 1, res, res, generator=g, dtype=dtype) * 0.5 - 0.25
    fake = torch.randn(n, 1, res, res, generator=g, dtype=dtype) * 0.5
    abnormal = real.clone()
    abnormal[:, :, res // 2, :] = 1.0  # a bright scratch across each normal tile
    return real, fake, abnormal


def test_abnormal_penalty_lowers_d_on_abnormal_images_after_one_step():
    torch.manual_seed(0)
    base = Discriminator(8, 1, fmap_base=64, fmap_max=32)
    real, fake, abnormal = batches()

    def step(gamma):
        D = copy.deepcopy(base)
        opt = torch.optim.SGD(D.parameters(), lr=0.01)
        loss, _ = GANLoss("nsgan", gamma=gamma).d_loss(D, real, fake, abnormal, level=1, alpha=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            return D(abnormal, 1).mean().item()

    before = base(abnormal, 1).mean().item()
    plain, penalised = step(0.0), step(1.0)
    assert penalised < plain
    assert penalised < before


def test_gamma_zero_is_the_plain_baseline_formula():
    D = LinearD(64)
    real, fake, abnormal = batches(dtype=torch.float64)
    loss, stats = GANLoss("nsgan", gamma=0.0, r1_gamma=0.0).d_loss(D, real, fake, abnormal)
    expected = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()
    torch.testing.assert_close(loss, expected.float(), rtol=0, atol=1e-6)
    assert "d_abnormal" not in stats  # the term is absent, not multiplied by zero
    assert stats["loss_d"] == pytest.approx(expected.item(), abs=1e-6)
    assert stats["d_real"] == pytest.approx(D(real).mean().item(), abs=1e-6)


def test_abnormal_term_is_gamma_weighted_softplus():
    D = LinearD(64)
    real, fake, abnormal = batches(dtype=torch.float64)
    loss, stats = GANLoss("nsgan", gamma=0.5, r1_gamma=0.0).d_loss(D, real, fake, abnormal)
    expected = (
        F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean() + 0.5 * F.softplus(D(abnormal)).mean()
    )
    torch.testing.assert_close(loss, expected.float(), rtol=0, atol=1e-6)
    assert stats["d_abnormal"] == pytest.approx(D(abnormal).mean().item(), abs=1e-6)


def test_r1_on_a_linear_d_and_in_the_same_backward():
    D = LinearD(64)
    real, fake, _ = batches(dtype=torch.float64)
    loss, stats = GANLoss("nsgan", r1_gamma=10.0).d_loss(D, real, fake)
    w = D.w.detach()
    assert stats["r1"] == pytest.approx(w.square().sum().item(), rel=1e-6)
    loss.backward()
    # gradient of the logistic terms by hand, plus d/dw (10/2)||w||^2 = 10 w from the R1 term
    s_real, s_fake = torch.sigmoid(-(real.flatten(1) @ w)), torch.sigmoid(fake.flatten(1) @ w)
    logistic = (-(s_real[:, None] * real.flatten(1)) + s_fake[:, None] * fake.flatten(1)).mean(0)
    torch.testing.assert_close(D.w.grad, logistic + 10.0 * w)


def test_lazy_r1_is_k_times_r1_on_due_steps_and_absent_otherwise():
    D = LinearD(64)
    real, fake, _ = batches(dtype=torch.float64)
    w2 = D.w.detach().square().sum().item()
    plain, plain_stats = GANLoss("nsgan", r1_gamma=0.0).d_loss(D, real, fake)
    lazy = GANLoss("nsgan", r1_gamma=10.0, r1_every=4)
    off, off_stats = lazy.d_loss(D, real, fake, regularise=False)
    on, on_stats = lazy.d_loss(D, real, fake, regularise=True)
    assert torch.equal(off, plain) and "r1" not in off_stats and off_stats.keys() == plain_stats.keys()
    assert on.item() == pytest.approx(plain.item() + 4 * 10.0 / 2 * w2, rel=1e-6)  # weighted by k
    assert on_stats["r1"] == pytest.approx(w2, rel=1e-6)
    assert [lazy.r1_due(s) for s in range(9)] == [True, False, False, False, True, False, False, False, True]
    every, _ = GANLoss("nsgan", r1_gamma=10.0, r1_every=1).d_loss(D, real, fake)
    default, _ = GANLoss("nsgan", r1_gamma=10.0).d_loss(D, real, fake)
    assert torch.equal(every, default)  # k = 1 is bit-equal to R1 on every step
    assert not GANLoss("nsgan", r1_gamma=0.0, r1_every=4).r1_due(0) and not GANLoss("wgangp", r1_every=4).r1_due(0)


def test_r1_matches_finite_differences_on_a_nonlinear_d():
    D = TanhD(16)
    real, fake, _ = batches(res=4, dtype=torch.float64)
    _, stats = GANLoss("nsgan", r1_gamma=1.0).d_loss(D, real, fake)
    eps, flat = 1e-6, real.flatten(1)
    grads = torch.zeros_like(flat)
    with torch.no_grad():
        for j in range(flat.shape[1]):
            step = torch.zeros_like(flat)
            step[:, j] = eps
            plus, minus = D((flat + step).view_as(real)), D((flat - step).view_as(real))
            grads[:, j] = (plus - minus) / (2 * eps)
    assert stats["r1"] == pytest.approx(grads.square().sum(1).mean().item(), rel=1e-5)


def test_each_kind_of_batch_gets_its_own_forward():
    seen = []

    def D(x, level, alpha):
        seen.append((x.data_ptr(), len(x), level, alpha))
        return x.flatten(1).sum(1)

    real, fake, abnormal = batches(n=4)
    GANLoss("nsgan", gamma=1.0).d_loss(D, real, fake, abnormal[:2], level=1, alpha=0.25)
    assert [n for _, n, _, _ in seen] == [4, 4, 2]
    assert {(lv, a) for _, _, lv, a in seen} == {(1, 0.25)}
    assert [p for p, *_ in seen] == [real.data_ptr(), fake.data_ptr(), abnormal.data_ptr()]


def test_d_step_does_not_reach_the_generator():
    D = LinearD(64)
    real, fake, _ = batches(dtype=torch.float64)
    source = fake.clone().requires_grad_(True)
    loss, _ = GANLoss("nsgan").d_loss(D, real, source * 1.0)
    loss.backward()
    assert source.grad is None


def test_generator_loss_is_non_saturating_and_reaches_g():
    D = LinearD(64)
    _, fake, _ = batches(dtype=torch.float64)
    fake.requires_grad_(True)
    loss, stats = GANLoss("nsgan").g_loss(D, fake, level=1, alpha=1.0)
    torch.testing.assert_close(loss, F.softplus(-D(fake)).mean().float())
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    loss_w, _ = GANLoss("wgangp").g_loss(D, fake)
    torch.testing.assert_close(loss_w, -D(fake).mean().float())
    assert set(stats) == {"loss_g"}


def test_wgangp_is_finite_penalises_gradient_norms_and_mixes_abnormals():
    real, fake, abnormal = batches(dtype=torch.float64)
    D = LinearD(64)
    with torch.no_grad():
        D.w.mul_(2 / D.w.norm())  # input gradient norm exactly 2 everywhere: GP = (2-1)^2
    loss_fn = GANLoss("wgangp", gamma=1.0, gp_lambda=10.0, drift=0.001)
    loss, stats = loss_fn.d_loss(D, real, fake, abnormal)
    assert torch.isfinite(loss) and stats["gp"] == pytest.approx(1.0, rel=1e-6)
    expected = (
        (D(fake).mean() + D(abnormal).mean()) / 2 - D(real).mean() + 0.001 * D(real).square().mean() + 10.0
    )
    assert stats["loss_d"] == pytest.approx(expected.item(), rel=1e-5)

    torch.manual_seed(0)
    net = Discriminator(8, 1, fmap_base=64, fmap_max=32)
    loss, stats = GANLoss("wgangp").d_loss(net, *batches()[:2], level=1, alpha=0.5)
    loss.backward()
    assert torch.isfinite(loss) and stats["gp"] >= 0
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_gamma_without_abnormal_batch_raises():
    real, fake, _ = batches()
    with pytest.raises(ValueError, match="abnormal"):
        GANLoss("nsgan", gamma=0.5).d_loss(LinearD(64).float(), real, fake, None)
    with pytest.raises(ValueError, match="abnormal"):
        GANLoss("wgangp", gamma=0.5).d_loss(LinearD(64).float(), real, fake)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"kind": "hinge"}, "kind"), ({"gamma": -1}, "gamma"), ({"r1_gamma": float("nan")}, "r1_gamma"),
     ({"r1_every": 0}, "r1_every"), ({"r1_every": True}, "r1_every"), ({"r1_every": 2.0}, "r1_every")],
)
def test_bad_settings_raise_naming_the_setting(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GANLoss(**kwargs)

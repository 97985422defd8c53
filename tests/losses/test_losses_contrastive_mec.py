"""MECLoss and NTXentLoss (the baselines of Matrix-SSL) against transcriptions of their formulas.

Run: .venv/bin/python -m pytest tests/losses/test_losses_contrastive_mec.py -q
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from matrix_llm.losses import LOSSES, MECLoss, NTXentLoss

F64 = torch.float64


def _views(m: int = 6, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(m, d, generator=g, dtype=F64) for _ in range(4)]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_mec_exact_is_the_coding_length_of_the_official_code():
    """MATH.md 3.4: c = λ p zᵀ, mec = 0.5 [tr log(I + c21) + tr log(I + c12)] / m, loss = -mec / λ."""
    z1, z2, p1, p2 = _views()
    m, d = z1.shape
    out = MECLoss(eps_sq=64.0)(z1, z2, p1, p2)
    lam = d / (m * 64.0)
    logdet = [
        np.linalg.slogdet(np.eye(m) + lam * _unit(p.numpy()) @ _unit(z.numpy()).T)[1]
        for p, z in ((p2, z1), (p1, z2))
    ]
    mec = 0.5 * sum(logdet) / m
    assert out.parts["mec"].item() == pytest.approx(mec, rel=1e-12)
    assert out.total.item() == pytest.approx(-mec / lam, rel=1e-12)


def test_mec_taylor_matches_exact_inside_the_convergence_region_and_gradients_reach_the_student_only():
    z1, z2, p1, p2 = _views(m=8, d=4)  # λ m = d / ε² = 1/16: far inside the region
    exact, taylor = MECLoss(), MECLoss(log="taylor", order=4)
    assert taylor(z1, z2, p1, p2).total.item() == pytest.approx(exact(z1, z2, p1, p2).total.item(), rel=1e-5)
    z1.requires_grad_(True)
    p1.requires_grad_(True)
    exact(z1, z2, p1, p2).total.backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0 and p1.grad is None
    assert LOSSES["mec"] is MECLoss
    with pytest.raises(ValueError, match="at least 2 samples"):
        exact(*(v[:1] for v in _views()))
    with pytest.raises(ValueError, match="`eps_sq` must be a number > 0"):
        MECLoss(eps_sq=0)


def _nt_xent_reference(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    """SimCLR's NT-Xent written out: 2m anchors, the other view positive, every other row a negative."""
    z = _unit(np.concatenate([z1, z2]))
    n, m = len(z), len(z1)
    total = 0.0
    for i in range(n):
        positive = (i + m) % n
        denominator = sum(math.exp(z[i] @ z[k] / tau) for k in range(n) if k != i)
        total += -math.log(math.exp(z[i] @ z[positive] / tau) / denominator)
    return total / n


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_equals_the_written_out_loss(tau):
    z1, z2, _, _ = _views(m=5, d=7)
    out = NTXentLoss(temperature=tau)(z1, z2)
    assert out.total.item() == pytest.approx(_nt_xent_reference(z1.numpy(), z2.numpy(), tau), rel=1e-10)
    assert LOSSES["nt_xent"] is NTXentLoss


def test_nt_xent_identical_views_are_found_and_small_batches_refused():
    z1, _, _, _ = _views(m=6, d=32)
    out = NTXentLoss(temperature=0.1)(z1, z1.clone())
    assert out.parts["positive_accuracy"].item() == 1.0
    z1.requires_grad_(True)
    NTXentLoss()(z1, z1.detach() + 0.1).total.backward()
    assert torch.isfinite(z1.grad).all()
    with pytest.raises(ValueError, match="at least 2 images"):
        NTXentLoss()(z1[:1], z1[:1])
    with pytest.raises(ValueError, match="`temperature` must be a number > 0"):
        NTXentLoss(temperature=0.0)


def _barlow_twins_reference(z1: np.ndarray, z2: np.ndarray, lamb: float, eps: float = 1e-5) -> float:
    """Zbontar et al. 2021 in float64, as their code computes it: each view through a BatchNorm without affine
    parameters (batch mean, biased variance + eps), c = bn(z1)ᵀ bn(z2) / N, then on-diagonal (1 - c_ii)² plus
    lamb times the off-diagonal c_ij²."""

    def bn(z):
        return (z - z.mean(0)) / np.sqrt(z.var(0) + eps)

    c = bn(z1).T @ bn(z2) / z1.shape[0]
    on = ((1 - np.diag(c)) ** 2).sum()
    off = (c**2).sum() - (np.diag(c) ** 2).sum()
    return on + lamb * off


@pytest.mark.parametrize("lamb", [5e-3, 0.5])
def test_barlow_twins_equals_the_papers_formula_and_is_zero_at_decorrelated_identical_views(lamb):
    from matrix_llm.losses import BarlowTwinsLoss

    assert LOSSES["barlow_twins"] is BarlowTwinsLoss
    g = torch.Generator().manual_seed(3)
    z1, z2 = (
        torch.randn(24, 6, generator=g, dtype=torch.float64),
        torch.randn(24, 6, generator=g, dtype=torch.float64),
    )
    z2 = z2 + z1  # correlated views
    out = BarlowTwinsLoss(lamb=lamb)(z1, z2)
    assert out.total.item() == pytest.approx(_barlow_twins_reference(z1.numpy(), z2.numpy(), lamb), rel=1e-12)
    assert out.total.item() == pytest.approx(
        out.parts["on_diagonal"].item() + lamb * out.parts["off_diagonal"].item()
    )
    signs = torch.tensor(
        [[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=torch.float64
    )
    z = signs.repeat(3, 1)[:, 1:]  # 3 columns, each mean 0, variance 1 and orthogonal to the others
    assert BarlowTwinsLoss(lamb=lamb, eps=1e-12)(z, z).total.item() == pytest.approx(0.0, abs=1e-9)
    leaves = (z1.clone().requires_grad_(True), z2.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(lambda a, b: BarlowTwinsLoss(lamb=lamb)(a, b).total, leaves)
    with pytest.raises(ValueError, match="`lamb` must be a number >= 0"):
        BarlowTwinsLoss(lamb=-1.0)
    with pytest.raises(ValueError, match="at least 2 images"):
        BarlowTwinsLoss()(z1[:1], z2[:1])

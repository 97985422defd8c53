"""Tests for matrix_llm.losses.MatrixSSLLoss (MATH.md §3).

    .venv/bin/python -m pytest tests/losses/test_losses_ssl.py -q

The "official" preset is compared with a direct transcription of the formulas of MATH.md §3.1 (the
``mce_loss_func`` of yifanzhang-pro/Matrix-SSL main_pretrain.py at commit 422f289), written here with plain
torch: centring matrix, matmuls, the order-4 Taylor series and traces.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from matrix_llm.losses import LOSSES, LossOutput, MatrixSSLLoss


def _views(m=16, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(m, d, generator=g, dtype=dtype) for _ in range(4)]


def _centering(m):
    return torch.eye(m, dtype=torch.float64) - torch.ones(m, m, dtype=torch.float64) / m


def _taylor_log(q, order=4):
    x = q - torch.eye(q.shape[0], dtype=q.dtype)
    out = torch.zeros_like(q)
    power = x
    for k in range(1, order + 1):
        out = out + (-1) ** (k + 1) * power / k
        power = power @ x
    return out


def _eigh_log(q):
    w, v = torch.linalg.eigh((q + q.T) / 2)
    return v @ torch.diag(w.log()) @ v.T


def _reference(p, z, *, lamb, mu, correlation, log, trace_term):
    """One term of MATH.md §3.1: uniformity (correlation=True) or alignment."""
    p, z = F.normalize(p, dim=1), F.normalize(z, dim=1)
    m, d = z.shape
    h = _centering(m)
    eye = torch.eye(d, dtype=torch.float64)
    if correlation:
        big_p = lamb * eye
        q = p.T @ h @ z / m + mu * eye
        if log == "eigh":
            q = (q + q.T) / 2
    else:
        big_p = p.T @ h @ p / m + mu * eye
        q = z.T @ h @ z / m + mu * eye
    logq = _taylor_log(q) if log == "taylor" else _eigh_log(q)
    value = torch.trace(-big_p @ logq)
    return value + torch.trace(q) if trace_term else value


def _reference_total(z1, z2, p1, p2, *, gamma, lamb, mu, log, trace_term):
    kw = {"lamb": lamb, "mu": mu, "log": log, "trace_term": trace_term}
    u = _reference(p2, z1, correlation=True, **kw) + _reference(p1, z2, correlation=True, **kw)
    a = _reference(p2, z1, correlation=False, **kw) + _reference(p1, z2, correlation=False, **kw)
    return 0.5 * (u + gamma * a), 0.5 * u, 0.5 * a


def test_registry_names_matrix_ssl():
    assert LOSSES["matrix_ssl"] is MatrixSSLLoss


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_official_preset_equals_transcription_of_math_md(seed):
    z1, z2, p1, p2 = _views(seed=seed)
    out = MatrixSSLLoss(preset="official")(z1, z2, p1, p2)
    total, u, a = _reference_total(
        z1, z2, p1, p2, gamma=1.0, lamb=0.5, mu=0.5, log="taylor", trace_term=False
    )
    assert isinstance(out, LossOutput) and set(out.parts) == {"uniformity", "alignment"}
    torch.testing.assert_close(out.total, total, rtol=0, atol=1e-10)
    torch.testing.assert_close(out.parts["uniformity"], u, rtol=0, atol=1e-10)
    torch.testing.assert_close(out.parts["alignment"], a, rtol=0, atol=1e-10)


def test_official_preset_overrides_and_gradient_match_transcription():
    z1, z2, p1, p2 = _views(m=12, d=4, seed=5)
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    loss = MatrixSSLLoss(preset="official", gamma=0.3, lamb=1.0, mu=1.0)
    out = loss(z1, z2, p1, p2)
    out.total.backward()
    g1, g2 = z1.grad.clone(), z2.grad.clone()
    z1.grad = z2.grad = None
    ref, _, _ = _reference_total(z1, z2, p1, p2, gamma=0.3, lamb=1.0, mu=1.0, log="taylor", trace_term=False)
    ref.backward()
    torch.testing.assert_close(out.total, ref.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(g1, z1.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(g2, z2.grad, rtol=0, atol=1e-10)


@pytest.mark.parametrize("trace_term", [True, False])
def test_exact_preset_equals_exact_formula(trace_term):
    z1, z2, p1, p2 = _views(seed=3)
    out = MatrixSSLLoss(preset="exact", trace_term=trace_term)(z1, z2, p1, p2)
    total, u, a = _reference_total(
        z1, z2, p1, p2, gamma=1.0, lamb=0.5, mu=0.5, log="eigh", trace_term=trace_term
    )
    torch.testing.assert_close(out.total, total, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.parts["uniformity"], u, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.parts["alignment"], a, rtol=1e-10, atol=1e-10)


def test_exact_and_official_agree_when_taylor_is_accurate_and_cross_covariance_symmetric():
    # p = z makes C(p, z) symmetric; mu = 1 keeps the spectrum of Q near 1, where order-12 Taylor is accurate
    z1, z2, _, _ = _views(m=32, d=4, seed=4)
    exact = MatrixSSLLoss(preset="exact", mu=1.0, trace_term=False)(z1, z2, z2, z1).total
    official = MatrixSSLLoss(preset="official", mu=1.0, order=12)(z1, z2, z2, z1).total
    torch.testing.assert_close(exact, official, rtol=0, atol=1e-6)


@pytest.mark.parametrize("preset", ["exact", "official"])
def test_symmetric_in_the_two_views(preset):
    z1, z2, p1, p2 = _views(seed=6)
    loss = MatrixSSLLoss(preset=preset)
    a = loss(z1, z2, p1, p2)
    b = loss(z2, z1, p2, p1)
    torch.testing.assert_close(a.total, b.total, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.parts["uniformity"], b.parts["uniformity"], rtol=1e-12, atol=1e-12)


def test_exact_preset_gradients_finite_at_the_uniformity_optimum():
    # rows ±e_i: centred, C(z, z) = I/d exactly, so every Q is a multiple of I (all eigenvalues repeated)
    d = 4
    rows = torch.cat([torch.eye(d), -torch.eye(d)]).to(torch.float64)
    z1 = rows.clone().requires_grad_(True)
    z2 = rows.clone().requires_grad_(True)
    out = MatrixSSLLoss(preset="exact")(z1, z2, rows, rows)
    out.total.backward()
    assert torch.isfinite(out.total)
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    # value at the optimum: Q = (1/d + mu) I on both terms, P_align = Q (no +tr(Q) term)
    c = 1 / d + 0.5
    expected_u = -0.5 * d * torch.log(torch.tensor(c, dtype=torch.float64))
    expected_a = -d * c * torch.log(torch.tensor(c, dtype=torch.float64))
    torch.testing.assert_close(out.parts["uniformity"], expected_u)
    torch.testing.assert_close(out.parts["alignment"], expected_a)


def test_exact_preset_gradcheck_float64():
    z1, z2, p1, p2 = _views(m=6, d=3, seed=7)
    loss = MatrixSSLLoss(preset="exact", gamma=0.7)
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b, p1, p2).total, (z1, z2))


def test_official_preset_gradcheck_float64():
    z1, z2, p1, p2 = _views(m=6, d=3, seed=8)
    loss = MatrixSSLLoss(preset="official")
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b, p1, p2).total, (z1, z2))


def test_teacher_outputs_get_no_gradient():
    z1, z2, p1, p2 = _views()
    for t in (z1, z2, p1, p2):
        t.requires_grad_(True)
    MatrixSSLLoss()(z1, z2, p1, p2).total.backward()
    assert p1.grad is None and p2.grad is None
    assert z1.grad is not None and z2.grad is not None


def test_gamma_weights_alignment():
    z1, z2, p1, p2 = _views()
    out0 = MatrixSSLLoss(gamma=0.0)(z1, z2, p1, p2)
    out2 = MatrixSSLLoss(gamma=2.0)(z1, z2, p1, p2)
    torch.testing.assert_close(out0.total, out0.parts["uniformity"])
    torch.testing.assert_close(out2.total, out2.parts["uniformity"] + 2.0 * out2.parts["alignment"])


def test_gather_is_identity_on_one_process():
    z1, z2, p1, p2 = _views()
    a = MatrixSSLLoss(gather=True)(z1, z2, p1, p2).total
    b = MatrixSSLLoss(gather=False)(z1, z2, p1, p2).total
    torch.testing.assert_close(a, b)


def test_bfloat16_features_give_finite_loss_close_to_float32():
    z1, z2, p1, p2 = _views(m=32, d=8, dtype=torch.float32)
    for preset in ("exact", "official"):
        ref = MatrixSSLLoss(preset=preset)(z1, z2, p1, p2).total
        out = MatrixSSLLoss(preset=preset)(*(t.bfloat16() for t in (z1, z2, p1, p2))).total
        assert out.dtype == torch.float32 and torch.isfinite(out)
        assert abs(out.item() - ref.item()) < 2e-2 * abs(ref.item())


def test_official_preset__error_outside_taylor_region():
    # mu = 0 and collapsed features: Q = C + 0 I is singular, ||Q - I|| = 1: the series diverges
    z = torch.ones(8, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="spectral radius"):
        MatrixSSLLoss(preset="official", mu=0.0)(z, z, z, z)
    # the official code does not check: check=False reproduces it
    out = MatrixSSLLoss(preset="official", mu=0.0, check=False)(z, z, z, z)
    assert torch.isfinite(out.total)


def test_forward__error_shapes_and_non_finite():
    z1, z2, p1, p2 = _views()
    loss = MatrixSSLLoss()
    with pytest.raises(ValueError, match="`p2` must have 16 rows"):
        loss(z1, z2, p1, p2[:3])
    with pytest.raises(ValueError, match="`z2` must have 5 columns"):
        loss(z1, z2[:, :2], p1, p2)
    with pytest.raises(ValueError, match="at least 2 samples"):
        loss(z1[:1], z2[:1], p1[:1], p2[:1])
    bad = z1.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="`z1` contains non-finite"):
        loss(bad, z2, p1, p2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"preset": "paper"}, "preset"),
        ({"gamma": -1.0}, "gamma"),
        ({"mu": 0.0}, "mu"),
        ({"order": 0}, "order"),
    ],
)
def test_init__error_invalid_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MatrixSSLLoss(**kwargs)


def test_preset_defaults():
    official = MatrixSSLLoss(preset="official")
    exact = MatrixSSLLoss(preset="exact")
    assert (official.lamb, official.mu, official.gamma, official.order, official.trace_term) == (
        0.5,
        0.5,
        1.0,
        4,
        False,
    )
    assert exact.trace_term is False  # with +tr(Q) and λ = μ the uniformity optimum is C = 0: collapse


def test_trace_term_with_lamb_equal_mu_has_no_uniformity_gradient_at_collapse():
    """Why neither preset adds +tr(Q) by default: d/dc of -λ log(c + μ) + c is 0 at c = 0 when λ = μ, so the
    uniformity term stops pushing the spectrum apart at collapse (a `matrix-llm ssl` run collapsed with it)."""
    from matrix_llm import info

    c = torch.zeros(4, 4, dtype=torch.float64, requires_grad=True)
    eye = torch.eye(4, dtype=torch.float64)
    (grad_with,) = torch.autograd.grad(info.mce(0.5 * eye, c + 0.5 * eye, trace_term=True), c)
    (grad_without,) = torch.autograd.grad(info.mce(0.5 * eye, c + 0.5 * eye, trace_term=False), c)
    assert grad_with.abs().max().item() < 1e-12
    assert torch.allclose(grad_without, -eye)


@pytest.mark.parametrize("preset", ["official", "exact"])
def test_few_samples_many_dims_take_the_sample_side_and_equal_the_transcription(preset):
    """m = 6 samples of d = 48 dims (2m < d): both terms come from the m side (info.feature_uniformity /
    feature_mce) and still equal the d x d transcription; gradients equal those of the d x d matrices through
    info.mce (the transcription's plain eigh backward is NaN here: Q has the eigenvalue mu d - 2m times).
    Mutation caught: a wrong binomial or Sylvester term in the thin paths."""
    from matrix_llm import info

    z1, z2, p1, p2 = _views(m=6, d=48, seed=11)
    log, trace_term = ("taylor", False) if preset == "official" else ("eigh", False)
    ref, u, _ = _reference_total(z1, z2, p1, p2, gamma=1.0, lamb=1.0, mu=1.0, log=log, trace_term=trace_term)

    def dense(z1, z2):  # the d x d matrices, info.mce (Daleckii-Krein backward for eigh)
        total = 0.0
        eye = torch.eye(48, dtype=torch.float64)
        for p, z in ((p2, z1), (p1, z2)):
            ps, zs = F.normalize(p, dim=1), F.normalize(z, dim=1)
            c = info.covariance(torch.cat([ps, zs], -1), normalize=False)[:48, 48:]
            c = 0.5 * (c + c.T) if preset == "exact" else c
            u_ = info.mce(1.0 * eye, c + eye, log=log, trace_term=trace_term)
            a_ = info.mce(
                info.covariance(ps) + eye, info.covariance(zs) + eye, log=log, trace_term=trace_term
            )
            total = total + 0.5 * (u_ + a_)
        return total

    grads = []
    for fn in (lambda a, b: MatrixSSLLoss(preset=preset, lamb=1.0, mu=1.0)(a, b, p1, p2).total, dense):
        a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
        value = fn(a, b)
        value.backward()
        grads.append((value.detach(), a.grad, b.grad))
    (ours, g1, g2), (dense_value, r1, r2) = grads
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dense_value, ref, rtol=1e-10, atol=1e-10)
    out = MatrixSSLLoss(preset=preset, lamb=1.0, mu=1.0)(z1, z2, p1, p2)
    torch.testing.assert_close(out.parts["uniformity"], u, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g1, r1, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(g2, r2, rtol=1e-8, atol=1e-10)

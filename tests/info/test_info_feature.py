"""feature_mce / feature_mce_symmetric / feature_mkl: MCE and MKL of shifted feature covariances on the cheaper (n x n) side.

    .venv/bin/python -m pytest tests/info/test_info_feature.py -q

Checked against the dense d x d path (info.mce / info.mkl of info.covariance + shift) and against an
independent float64 numpy reference; gradients against the dense path's, finite at repeated eigenvalues, and
float64 gradcheck. Mutation caught: any change to the log mu / logdet / phi terms, the series branches or the
divided differences (the gradient and gradcheck tests).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matrix_llm import info
from matrix_llm.info._feature import _phi, _phi_divided_differences, _phi_prime

F64 = torch.float64
SIZES = [(5, 7, 12), (7, 5, 12), (12, 12, 12), (20, 16, 12), (3, 4, 50), (1, 3, 9)]


def _dense(zp, zq, lamb, mu, kind="mce", center=True, normalize=True):
    d = zp.shape[-1]
    eye = torch.eye(d, dtype=zp.dtype)
    p = info.covariance(zp, center=center, normalize=normalize) + lamb * eye
    q = info.covariance(zq, center=center, normalize=normalize) + mu * eye
    return info.mce(p, q) if kind == "mce" else info.mkl(p, q)


def _numpy_reference(zp, zq, lamb, mu, kind):
    """Textbook float64 formula with numpy's eigh: no code shared with matrix_llm."""

    def cov(z):
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        z = z - z.mean(0, keepdims=True)
        return z.T @ z / z.shape[0]

    def logm(a):
        w, v = np.linalg.eigh(a)
        return (v * np.log(w)) @ v.T

    d = zp.shape[1]
    p, q = cov(zp) + lamb * np.eye(d), cov(zq) + mu * np.eye(d)
    cross = np.trace(p @ logm(q))
    if kind == "mce":
        return -cross + np.trace(q)
    w = np.linalg.eigvalsh(p)
    plogp = sum(x * np.log(x) for x in w if x > 1e-300)
    return plogp - cross - np.trace(p) + np.trace(q)


@pytest.mark.parametrize(("n_p", "n_q", "d"), SIZES)
@pytest.mark.parametrize("lamb", [0.0, 0.3])
@pytest.mark.parametrize("kind", ["mce", "mkl"])
def test_equals_the_dense_path_and_a_numpy_reference(n_p, n_q, d, lamb, kind):
    g = torch.Generator().manual_seed(n_p * 100 + n_q)
    zp, zq = torch.randn(n_p, d, generator=g, dtype=F64), torch.randn(n_q, d, generator=g, dtype=F64)
    fn = info.feature_mce if kind == "mce" else info.feature_mkl
    got = fn(zp, zq, lamb=lamb, mu=0.5)
    assert got.dtype == F64
    torch.testing.assert_close(got, _dense(zp, zq, lamb, 0.5, kind), rtol=1e-9, atol=1e-12)
    ref = _numpy_reference(zp.numpy(), zq.numpy(), lamb, 0.5, kind)
    assert got.item() == pytest.approx(ref, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("center", "normalize"), [(False, True), (True, False), (False, False)])
def test_covariance_conventions_match(center, normalize):
    g = torch.Generator().manual_seed(1)
    zp, zq = torch.randn(6, 20, generator=g, dtype=F64), torch.randn(4, 20, generator=g, dtype=F64)
    for kind, fn in (("mce", info.feature_mce), ("mkl", info.feature_mkl)):
        got = fn(zp, zq, lamb=0.2, mu=0.7, center=center, normalize=normalize)
        torch.testing.assert_close(
            got, _dense(zp, zq, 0.2, 0.7, kind, center, normalize), rtol=1e-9, atol=1e-12
        )


def test_trace_term_off_and_batches_broadcast():
    g = torch.Generator().manual_seed(2)
    zp, zq = torch.randn(3, 5, 16, generator=g, dtype=F64), torch.randn(1, 6, 16, generator=g, dtype=F64)
    got = info.feature_mce(zp, zq, lamb=0.1, mu=0.4, trace_term=False)
    assert got.shape == (3,)
    for i in range(3):
        dense = (
            _dense(zp[i], zq[0], 0.1, 0.4) - (info.covariance(zq[0]) + 0.4 * torch.eye(16, dtype=F64)).trace()
        )
        torch.testing.assert_close(got[i], dense, rtol=1e-9, atol=1e-12)


def _grads(fn, zp, zq):
    zp, zq = zp.clone().requires_grad_(True), zq.clone().requires_grad_(True)
    fn(zp, zq).backward()
    return zp.grad, zq.grad


@pytest.mark.parametrize("kind", ["mce", "mkl"])
def test_gradients_equal_the_dense_path(kind):
    g = torch.Generator().manual_seed(3)
    zp, zq = torch.randn(6, 24, generator=g, dtype=F64), torch.randn(9, 24, generator=g, dtype=F64)
    fn = info.feature_mce if kind == "mce" else info.feature_mkl
    thin = _grads(lambda a, b: fn(a, b, lamb=0.25, mu=0.5), zp, zq)
    dense = _grads(lambda a, b: _dense(a, b, 0.25, 0.5, kind), zp, zq)
    for a, b in zip(thin, dense, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("case", ["duplicated_rows", "orthogonal_equal_norm"])
def test_gradients_are_finite_and_exact_at_repeated_eigenvalues(case):
    """Duplicated samples and orthogonal equal-norm rows make the n x n Gram's eigenvalues repeat (and centring
    adds a zero): the thin gradient stays finite and equals the dense path's (which has its own DK backward)."""
    d = 16
    if case == "duplicated_rows":
        base = torch.randn(3, d, generator=torch.Generator().manual_seed(4), dtype=F64)
        zq = torch.cat([base, base, base])  # every eigenvalue of G_q threefold
    else:
        zq = torch.eye(d, dtype=F64)[:6] * 2.0  # G_q = c I - c/n 11ᵀ: a five-fold eigenvalue and a zero
    zp = torch.randn(5, d, generator=torch.Generator().manual_seed(5), dtype=F64)
    thin = _grads(lambda a, b: info.feature_mce(a, b, lamb=0.1, mu=0.3), zp, zq)
    dense = _grads(lambda a, b: _dense(a, b, 0.1, 0.3), zp, zq)
    for a, b in zip(thin, dense, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)


def test_gradcheck_small():
    g = torch.Generator().manual_seed(6)
    zp = torch.randn(3, 7, generator=g, dtype=F64, requires_grad=True)
    zq = torch.randn(4, 7, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: info.feature_mce(a, b, lamb=0.2, mu=0.5), (zp, zq))
    assert torch.autograd.gradcheck(lambda a, b: info.feature_mkl(a, b, lamb=0.2, mu=0.5), (zp, zq))
    assert torch.autograd.gradcheck(lambda a, b: info.feature_mce_symmetric(a, b, lamb=0.2, mu=0.5), (zp, zq))


def test_phi_and_its_divided_differences_have_full_accuracy():
    """The series and near-tie branches agree with a high-precision reference (mpmath-free: float64 closed forms
    away from the switch points, compared across them)."""
    mu = 0.3
    for x in [0.0, 1e-9, 1e-5, 2.9e-4, 3.1e-4, 1e-2, 0.1, 1.0, 50.0]:
        w = torch.tensor([x], dtype=F64)
        exact = np.log1p(x / mu) / x if x > 0 else 1 / mu
        assert _phi(w, mu).item() == pytest.approx(exact, rel=1e-13)
        if x > 0.5:
            h = 1e-6 * x
            numeric = (np.log1p((x + h) / mu) / (x + h) - np.log1p((x - h) / mu) / (x - h)) / (2 * h)
            assert _phi_prime(w, mu).item() == pytest.approx(numeric, rel=1e-7)
    assert _phi_prime(torch.tensor([0.0], dtype=F64), mu).item() == pytest.approx(-1 / (2 * mu**2), rel=1e-14)
    w = torch.tensor([0.5, 0.5 + 1e-9, 0.5 + 1e-3, 2.0], dtype=F64)
    dd = _phi_divided_differences(w, mu)
    assert dd[0, 1].item() == pytest.approx(
        _phi_prime(torch.tensor([0.5 + 5e-10], dtype=F64), mu).item(), rel=1e-9
    )
    direct = (_phi(w[2:3], mu) - _phi(w[0:1], mu)) / (w[2] - w[0])
    assert dd[0, 2].item() == pytest.approx(direct.item(), rel=1e-9)


def _divided_differences_pairwise(w: torch.Tensor, mu: float) -> torch.Tensor:
    """The definition pair by pair: φ' at the midpoint within the tie threshold, the quotient elsewhere."""
    from matrix_llm.info._feature import _TIE

    phi, n = _phi(w, mu), w.shape[-1]
    out = torch.empty(n, n, dtype=F64)
    for i in range(n):
        for j in range(n):
            if abs(w[i] - w[j]) <= _TIE * (mu + max(w[i], w[j])):
                out[i, j] = _phi_prime(((w[i] + w[j]) / 2).reshape(1), mu)[0]
            else:
                out[i, j] = (phi[i] - phi[j]) / (w[i] - w[j])
    return out


@pytest.mark.parametrize(
    "spectrum",
    [
        np.sort(np.random.default_rng(0).uniform(0, 0.02, 24)).tolist(),  # distinct: only the diagonal ties
        [0.0, 0.0, 1e-9, 0.3, 0.3 + 1e-7, 0.7],  # a zero pair, a near-zero and a near-repeated pair
        [0.5 + 4e-6 * k for k in range(6)],  # a chain: neighbours tie, the ends do not
    ],
)
def test_divided_differences_equal_the_pairwise_definition(spectrum):
    mu = 0.5
    w = torch.tensor(spectrum, dtype=F64)
    dd = _phi_divided_differences(w, mu)
    torch.testing.assert_close(dd, _divided_differences_pairwise(w, mu), rtol=1e-15, atol=0)
    batch = torch.stack([w, torch.linspace(0.1, 0.9, len(spectrum), dtype=F64)])  # ties in one item only
    torch.testing.assert_close(_phi_divided_differences(batch, mu)[0], dd, rtol=1e-15, atol=0)
    torch.testing.assert_close(
        _phi_divided_differences(batch, mu)[1],
        _divided_differences_pairwise(batch[1], mu),
        rtol=1e-15,
        atol=0,
    )


@pytest.mark.parametrize("fn", [info.feature_mce, info.feature_mce_symmetric])
def test_dtypes_and_upcast(fn):
    g = torch.Generator().manual_seed(7)
    zp, zq = torch.randn(4, 32, generator=g), torch.randn(6, 32, generator=g)
    ref = fn(zp.double(), zq.double(), lamb=0.1, mu=0.5)
    f32 = fn(zp, zq, lamb=0.1, mu=0.5)
    assert f32.dtype == torch.float32 and f32.item() == pytest.approx(ref.item(), rel=1e-5)
    bf = fn(zp.bfloat16(), zq.bfloat16(), lamb=0.1, mu=0.5)
    assert bf.dtype == torch.bfloat16 and bf.float().item() == pytest.approx(ref.item(), rel=2e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fn(zp, zq, lamb=0.1, mu=0.5).dtype == torch.float32


@pytest.mark.parametrize("fn", [info.feature_mce, info.feature_mce_symmetric])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lamb": 0.1, "mu": 0.0}, "mu"),
        ({"lamb": -1.0, "mu": 0.5}, "lamb"),
        ({"lamb": 0.1, "mu": -2.0}, "mu"),
    ],
)
def test_bad_arguments(fn, kwargs, message):
    z = torch.randn(3, 8)
    with pytest.raises(ValueError, match=message):
        fn(z, z, **kwargs)
    with pytest.raises(ValueError, match="feature dimension"):
        fn(z, torch.randn(3, 9), lamb=0.1, mu=0.5)


def _dense_uniformity(zp, zq, lamb, mu, symmetric, log, trace_term):
    d = zp.shape[-1]
    ap = torch.nn.functional.normalize(zp, dim=-1)
    aq = torch.nn.functional.normalize(zq, dim=-1)
    c = info.covariance(torch.cat([ap, aq], -1), normalize=False)[..., :d, d:]
    q = (0.5 * (c + c.mT) if symmetric else c) + mu * torch.eye(d, dtype=zp.dtype)
    return info.mce(lamb * torch.eye(d, dtype=zp.dtype), q, log=log, trace_term=trace_term)


@pytest.mark.parametrize(("m", "d"), [(4, 30), (6, 12), (9, 10)])
@pytest.mark.parametrize(("symmetric", "log"), [(True, "eigh"), (True, "taylor"), (False, "taylor")])
def test_uniformity_equals_the_dense_mce(m, d, symmetric, log):
    g = torch.Generator().manual_seed(m + d)
    zp, zq = torch.randn(m, d, generator=g, dtype=F64), torch.randn(m, d, generator=g, dtype=F64)
    for trace_term in (True, False):
        got = info.feature_uniformity(
            zp, zq, lamb=0.7, mu=0.5, symmetric=symmetric, log=log, trace_term=trace_term
        )
        want = _dense_uniformity(zp, zq, 0.7, 0.5, symmetric, log, trace_term)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    thin = _grads(
        lambda a, b: info.feature_uniformity(a, b, lamb=0.7, mu=0.5, symmetric=symmetric, log=log), zp, zq
    )
    dense = _grads(lambda a, b: _dense_uniformity(a, b, 0.7, 0.5, symmetric, log, True), zp, zq)
    for a, b in zip(thin, dense, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-11)


def test_taylor_feature_mce_equals_the_dense_series_and_checks_convergence():
    g = torch.Generator().manual_seed(8)
    zp, zq = torch.randn(5, 30, generator=g, dtype=F64), torch.randn(7, 30, generator=g, dtype=F64)
    eye = torch.eye(30, dtype=F64)
    for order in (1, 4, 7):
        got = info.feature_mce(zp, zq, lamb=0.5, mu=0.5, log="taylor", order=order, trace_term=False)
        want = info.mce(
            info.covariance(zp) + 0.5 * eye,
            info.covariance(zq) + 0.5 * eye,
            log="taylor",
            order=order,
            trace_term=False,
        )
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    with pytest.raises(
        ValueError, match="spectral radius"
    ):  # mu = 0: the eigenvalue 0 of Q - I ... -1: |-1| = 1
        info.feature_mce(zp, zq, lamb=0.5, mu=0.0, log="taylor")
    assert torch.isfinite(info.feature_mce(zp, zq, lamb=0.5, mu=0.0, log="taylor", check=False))
    with pytest.raises(ValueError, match="mu"):
        info.feature_mce(zp, zq, lamb=0.5, mu=0.0)  # the exact log needs mu > 0


def test_uniformity_gradcheck_and_bad_input():
    g = torch.Generator().manual_seed(9)
    zp = torch.randn(3, 9, generator=g, dtype=F64, requires_grad=True)
    zq = torch.randn(3, 9, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: info.feature_uniformity(a, b, lamb=0.3, mu=0.5), (zp, zq))
    with pytest.raises(ValueError, match="symmetric=True"):
        info.feature_uniformity(zp, zq, lamb=0.3, mu=0.5, symmetric=False)
    with pytest.raises(ValueError, match="paired rows"):
        info.feature_uniformity(zp, zq[:2], lamb=0.3, mu=0.5)


def _both_directions(za, zb, **kwargs):
    return 0.5 * (info.feature_mce(za, zb, **kwargs) + info.feature_mce(zb, za, **kwargs))


@pytest.mark.parametrize(("n_a", "n_b", "d"), SIZES)
@pytest.mark.parametrize("lamb", [0.0, 0.3])
def test_symmetric_mce_equals_both_directions_and_a_numpy_reference(n_a, n_b, d, lamb):
    """The shared-eigenbasis form (one K, one eigh per side) against the two one-way calls (value and gradients)
    and against the numpy transcription of both directions; (12, 12, 12) and (20, 16, 12) take the dense path."""
    g = torch.Generator().manual_seed(n_a * 100 + n_b + 7)
    za, zb = torch.randn(n_a, d, generator=g, dtype=F64), torch.randn(n_b, d, generator=g, dtype=F64)
    got = info.feature_mce_symmetric(za, zb, lamb=lamb, mu=0.5)
    assert got.dtype == F64
    torch.testing.assert_close(got, _both_directions(za, zb, lamb=lamb, mu=0.5), rtol=1e-10, atol=1e-12)
    ref = 0.5 * sum(_numpy_reference(p.numpy(), q.numpy(), lamb, 0.5, "mce") for p, q in ((za, zb), (zb, za)))
    assert got.item() == pytest.approx(ref, rel=1e-9, abs=1e-12)
    fast = _grads(lambda a, b: info.feature_mce_symmetric(a, b, lamb=lamb, mu=0.5), za, zb)
    slow = _grads(lambda a, b: _both_directions(a, b, lamb=lamb, mu=0.5), za, zb)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("case", ["identical_sides", "duplicated_rows", "orthogonal_equal_norm"])
def test_symmetric_mce_gradients_are_finite_and_exact_at_ties(case):
    """Identical modalities (every eigenvalue shared by both sides), threefold duplicated rows, and a five-fold
    eigenvalue: finite gradients equal to the dense path's (its own Daleckii–Krein backward)."""
    d = 16
    g = torch.Generator().manual_seed(9)
    if case == "identical_sides":
        za = torch.randn(6, d, generator=g, dtype=F64)
        zb = za.clone()
    elif case == "duplicated_rows":
        base = torch.randn(3, d, generator=g, dtype=F64)
        za, zb = torch.cat([base, base, base]), torch.randn(5, d, generator=g, dtype=F64)
    else:
        za, zb = torch.eye(d, dtype=F64)[:6] * 2.0, torch.randn(7, d, generator=g, dtype=F64)

    def dense(a, b):
        return 0.5 * (_dense(a, b, 0.1, 0.3) + _dense(b, a, 0.1, 0.3))

    fast = _grads(lambda a, b: info.feature_mce_symmetric(a, b, lamb=0.1, mu=0.3), za, zb)
    for a, b in zip(fast, _grads(dense, za, zb), strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)


def test_symmetric_mce_batches_and_trace_term():
    g = torch.Generator().manual_seed(10)
    za, zb = torch.randn(3, 5, 16, generator=g, dtype=F64), torch.randn(1, 6, 16, generator=g, dtype=F64)
    for trace_term in (True, False):
        got = info.feature_mce_symmetric(za, zb, lamb=0.1, mu=0.4, trace_term=trace_term)
        assert got.shape == (3,)
        want = _both_directions(za, zb, lamb=0.1, mu=0.4, trace_term=trace_term)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)

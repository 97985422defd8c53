"""matrix_llm.info numerics: float64 gradcheck (incl. repeated eigenvalues and rank deficiency), dtypes, autocast,
batching, error messages.

Run: .venv/bin/python -m pytest tests/info/test_info_numerics.py -q
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from matrix_llm import info

F64 = torch.float64


def _rotated(w: list[float], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v, _ = torch.linalg.qr(torch.randn(len(w), len(w), generator=g, dtype=F64))
    return v @ torch.diag(torch.tensor(w, dtype=F64)) @ v.T


def _spd(d: int, seed: int = 0, shift: float = 0.2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=F64)
    return a @ a.T / d + shift * torch.eye(d, dtype=F64)


SPECTRA = {
    "distinct": [0.3, 0.7, 1.1, 1.6, 2.0],
    "near_repeated": [0.5, 0.5 + 1e-7, 0.5 + 2e-7, 1.3, 1.3 + 1e-8],
    "repeated": [0.8, 0.8, 0.8, 1.5, 1.5],
}


# ----------------------------------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("spectrum", list(SPECTRA))
@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_gradcheck_entropy(spectrum, alpha):
    k = _rotated(SPECTRA[spectrum]).requires_grad_()
    assert gradcheck(lambda x: info.entropy(x, alpha=alpha), (k,))
    assert gradcheck(lambda x: info.erank(x, alpha=alpha), (k,))


def test_gradcheck_entropy_at_identity():
    k = torch.eye(4, dtype=F64).requires_grad_()
    assert gradcheck(info.entropy, (k,))
    assert gradcheck(info.matrix_entropy_unnormalized, (_rotated(SPECTRA["repeated"]).requires_grad_(),))


@pytest.mark.parametrize("shape", [(7, 4), (4, 7)])
@pytest.mark.parametrize("center", [False, True])
def test_gradcheck_feature_entropy(shape, center):
    z = torch.randn(*shape, dtype=F64, requires_grad=True)
    assert gradcheck(lambda x: info.feature_entropy(x, center=center), (z,))
    assert gradcheck(lambda x: info.feature_entropy(x, alpha=2.0, center=center), (z,))


@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.5])
def test_rank_deficient_entropy_gradients_finite(alpha):
    z = torch.randn(6, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.grad(info.entropy(z @ z.T, alpha=alpha), z)[0].isfinite().all()
    k = (z @ z.T).detach().requires_grad_()
    (grad,) = torch.autograd.grad(info.entropy(k, alpha=alpha), k)
    assert grad.isfinite().all()
    dup = torch.randn(1, 5, dtype=F64).repeat(4, 1).requires_grad_()  # rank 1 (and zero after centring)
    for center in (False, True):
        (grad,) = torch.autograd.grad(info.feature_entropy(dup, alpha=alpha, center=center), dup)
        assert grad.isfinite().all()
    zero = torch.zeros(3, 3, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(info.entropy(zero, alpha=alpha), zero)
    assert grad.isfinite().all()


@pytest.mark.parametrize("spectrum", list(SPECTRA))
@pytest.mark.parametrize("trace_term", [True, False])
def test_gradcheck_mce_eigh_wrt_p_and_q(spectrum, trace_term):
    q = _rotated(SPECTRA[spectrum], seed=1).requires_grad_()
    p = _spd(5, seed=2).requires_grad_()
    assert gradcheck(lambda a, b: info.mce(a, b, trace_term=trace_term), (p, q))
    assert gradcheck(info.mkl, (p, q))
    assert gradcheck(lambda b: info.matrix_log(b), (q,))


def test_mce_gradient_at_scalar_identity_is_p_over_c_exactly():
    """MATH §2.1: at Q = 0.3 I, d/dQ tr(P log Q) = P / 0.3 (autograd through eigh gives NaN here)."""
    p = _spd(6, seed=3)
    q = (0.3 * torch.eye(6, dtype=F64)).requires_grad_()
    (grad,) = torch.autograd.grad(-info.mce(p, q, trace_term=False), q)
    torch.testing.assert_close(grad, p / 0.3, atol=1e-12, rtol=1e-12)
    # gradient wrt p is -log Q
    p.requires_grad_()
    (gp,) = torch.autograd.grad(info.mce(p, q), p)
    torch.testing.assert_close(gp, -torch.log(torch.tensor(0.3, dtype=F64)) * torch.eye(6, dtype=F64))


def test_mce_dk_gradient_matches_finite_difference_on_random_spd():
    p, q = _spd(5, seed=4), _spd(5, seed=5)
    direction = torch.randn(5, 5, dtype=F64)
    direction = direction + direction.T
    q_ = q.clone().requires_grad_()
    (grad,) = torch.autograd.grad(info.mce(p, q_), q_)
    h = 1e-6
    fd = (info.mce(p, q + h * direction) - info.mce(p, q - h * direction)) / (2 * h)
    assert (grad * direction).sum().item() == pytest.approx(fd.item(), rel=1e-7)


def test_gradcheck_mce_taylor_nonsymmetric_q():
    q = (torch.eye(5, dtype=F64) + 0.15 * torch.randn(5, 5, dtype=F64)).requires_grad_()
    p = _spd(5, seed=6).requires_grad_()
    assert gradcheck(lambda a, b: info.mce(a, b, log="taylor", order=4), (p, q))
    assert gradcheck(lambda b: info.taylor_log(b, order=6), (q,))


@pytest.mark.parametrize("shape", [(4, 9), (9, 4)])
def test_gradcheck_tcr(shape):
    z = torch.randn(*shape, dtype=F64, requires_grad=True)
    assert gradcheck(lambda x: info.tcr(x, mu=0.7), (z,))


def test_gradcheck_mi_mir_hdr_through_grams():
    z1 = torch.randn(6, 3, dtype=F64, requires_grad=True)
    z2 = torch.randn(6, 4, dtype=F64, requires_grad=True)
    for fn in (info.mutual_information, info.mir, info.hdr):
        assert gradcheck(lambda a, b, fn=fn: fn(info.gram(a), info.gram(b)), (z1, z2))


def test_gradcheck_gram_covariance():
    z = torch.randn(5, 3, dtype=F64, requires_grad=True)
    assert gradcheck(info.gram, (z,))
    assert gradcheck(info.covariance, (z,))


def _rows_by_autograd(z, normalize, center, center_first, scale):
    if center and center_first:
        z = z - z.mean(-2, keepdim=True)
    if normalize:
        z = torch.nn.functional.normalize(z, dim=-1)
    if center and not center_first:
        z = z - z.mean(-2, keepdim=True)
    return z * scale


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize(
    ("normalize", "center", "center_first", "scale"),
    [
        (True, False, False, 1.0),
        (True, True, False, 0.25),
        (True, True, True, 1.0),
        (False, True, False, 0.5),
    ],
)
def test_row_steps_match_autograd_of_f_normalize_and_mean(dtype, normalize, center, center_first, scale):
    """Every feature function normalises / centres rows through one autograd node (_Rows): the value and gradient
    of F.normalize and mean subtraction composed by autograd, including a zero row and a row below the
    normalisation's eps (gradient g / eps there), and batch dims."""
    from matrix_llm.info._spectral import _rows

    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 6, 5, generator=g, dtype=dtype)
    z[0, 1] = 0.0
    z[1, 2] = 1e-14
    weights = torch.randn(2, 6, 5, generator=g, dtype=dtype)
    steps = dict(normalize=normalize, center=center, center_first=center_first, scale=scale)
    results = []
    for rows in (lambda x: _rows(x, **steps), lambda x: _rows_by_autograd(x, **steps)):
        leaf = z.clone().requires_grad_()
        out = rows(leaf)
        (out * weights).sum().backward()
        results.append((out.detach(), leaf.grad))
    (ours, ours_grad), (ref, ref_grad) = results
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ours_grad, ref_grad)
    if normalize and not center_first:
        assert ours_grad[1, 2].abs().max() > 1e10  # the clamped row: g / eps, not projected
    assert gradcheck(lambda x: _rows(x, **steps), (z.double()[:, 3:].clone().requires_grad_(),))


# ----------------------------------------------------------------------------------------------- dtypes / autocast


def test_float64_in_float64_out_and_float32_in_float32_out():
    z = torch.randn(12, 5, dtype=F64)
    k = info.gram(z)
    q = info.covariance(z) + torch.eye(5, dtype=F64)
    for dtype in (torch.float64, torch.float32):
        zz, kk, qq = z.to(dtype), k.to(dtype), q.to(dtype)
        outs = [
            info.entropy(kk),
            info.erank(kk),
            info.feature_entropy(zz),
            info.mce(qq, qq),
            info.mkl(qq, qq),
            info.tcr(zz),
            info.mir(kk, kk),
            info.matrix_log(qq),
            info.taylor_log(qq),
            info.gram(zz),
            info.covariance(zz),
        ]
        assert all(o.dtype == dtype for o in outs)


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_inputs_upcast_and_cast_back(half):
    z = torch.randn(40, 8)
    zh = z.to(half)
    ref_z = zh.float()  # the same (rounded) input in float32
    q32 = info.covariance(ref_z) + torch.eye(8)
    p32 = info.covariance(torch.randn(40, 8)) + torch.eye(8)
    cases = [
        (info.feature_entropy(zh), info.feature_entropy(ref_z)),
        (info.entropy(info.gram(zh)), info.entropy(info.gram(ref_z))),
        (info.mce(p32.to(half), q32.to(half)), info.mce(p32.to(half).float(), q32.to(half).float())),
        (
            info.mce(p32.to(half), q32.to(half), log="taylor"),
            info.mce(p32.to(half).float(), q32.to(half).float(), log="taylor"),
        ),
        (info.tcr(zh), info.tcr(ref_z)),
    ]
    for out, ref in cases:
        assert out.dtype == half and out.isfinite().all()
        torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)
    zg = zh.clone().requires_grad_()
    info.feature_entropy(zg).backward()
    assert zg.grad.dtype == half and zg.grad.isfinite().all()


def test_autocast_is_disabled_inside():
    z = torch.randn(30, 6)
    q = info.covariance(z) + 0.5 * torch.eye(6)
    p = info.covariance(torch.randn(30, 6)) + 0.5 * torch.eye(6)
    ref = (info.feature_entropy(z), info.mce(p, q), info.tcr(z), info.gram(z))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = (info.feature_entropy(z), info.mce(p, q), info.tcr(z), info.gram(z))
    for a, b in zip(out, ref, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------------------------- batching


def test_batched_equals_per_item():
    z = torch.randn(2, 3, 10, 4, dtype=F64)
    k = info.gram(z)
    q = info.covariance(z) + 0.5 * torch.eye(4, dtype=F64)
    p = info.covariance(torch.randn(2, 3, 10, 4, dtype=F64)) + 0.5 * torch.eye(4, dtype=F64)
    batched = {
        "entropy": info.entropy(k, alpha=2.0),
        "feature_entropy": info.feature_entropy(z, center=True),
        "mce": info.mce(p, q),
        "mce_taylor": info.mce(p, q, log="taylor"),
        "mkl": info.mkl(p, q),
        "tcr": info.tcr(z, mu=0.5),
        "mi": info.mutual_information(k, k.flip(-1).flip(-2)),
    }
    for i in range(2):
        for j in range(3):
            single = {
                "entropy": info.entropy(k[i, j], alpha=2.0),
                "feature_entropy": info.feature_entropy(z[i, j], center=True),
                "mce": info.mce(p[i, j], q[i, j]),
                "mce_taylor": info.mce(p[i, j], q[i, j], log="taylor"),
                "mkl": info.mkl(p[i, j], q[i, j]),
                "tcr": info.tcr(z[i, j], mu=0.5),
                "mi": info.mutual_information(k[i, j], k[i, j].flip(-1).flip(-2)),
            }
            for name, value in single.items():
                assert batched[name].shape == (2, 3)
                torch.testing.assert_close(batched[name][i, j], value, msg=name)


def test_mce_broadcasts_target_over_batch_and_backprops():
    p = torch.eye(4, dtype=F64) / 4
    q = (info.covariance(torch.randn(3, 12, 4, dtype=F64)) + torch.eye(4, dtype=F64)).requires_grad_()
    out = info.mce(p, q)
    assert out.shape == (3,)
    out.sum().backward()
    assert q.grad.shape == q.shape and q.grad.isfinite().all()


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: info.entropy(torch.randn(3, 4)), r"entropy: expected `k` to be a non-empty batch of square"),
        (lambda: info.entropy(torch.randn(3)), r"entropy: expected `k` of shape"),
        (lambda: info.entropy(torch.eye(3), alpha=0), r"`alpha` to be a finite number > 0; got 0"),
        (lambda: info.entropy(torch.eye(3, dtype=torch.int64)), r"floating-point dtype.*torch.int64"),
        (lambda: info.entropy([[1.0]]), r"torch.Tensor; got list"),
        (lambda: info.mce(torch.eye(3), torch.eye(4)), r"mce: `p` and `q` must be matrices of the same size"),
        (lambda: info.mce(torch.eye(3), torch.eye(3), log="svd"), r"`log` to be one of \('eigh', 'taylor'\)"),
        (
            lambda: info.mce(torch.eye(3), torch.eye(3), log="taylor", order=0),
            r"`order` to be an integer >= 1",
        ),
        (lambda: info.mce(torch.ones(2, 3, 3), torch.ones(4, 3, 3)), r"batch dims .* do not broadcast"),
        (
            lambda: info.tcr(torch.randn(4, 3), mu=0.0),
            r"tcr: expected `mu` to be a finite number > 0; got 0.0",
        ),
        (lambda: info.matrix_log(torch.eye(3), method="pade"), r"`method` to be one of"),
        (
            lambda: info.mir(torch.eye(3), torch.eye(4)),
            r"mir: `k1` and `k2` must be matrices of the same size",
        ),
        (lambda: info.feature_entropy(torch.randn(0, 3)), r"feature_entropy: expected `z` .* n, d >= 1"),
    ],
)
def test_clear_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("shape", [(256, 32), (32, 256)])
def test_float32_feature_entropy_accuracy_vs_float64(shape):
    """Genuine small eigenvalues are kept in float32 (the mask is eps * max, not m * eps * max)."""
    g = torch.Generator().manual_seed(0)
    n, d = shape
    for z in (
        torch.randn(n, d, generator=g),
        torch.randn(n, 4, generator=g) @ torch.randn(4, d, generator=g)
        + 0.01 * torch.randn(n, d, generator=g),
    ):
        ref = info.feature_entropy(z.double()).item()
        assert info.feature_entropy(z).item() == pytest.approx(ref, rel=3e-6)


def test_mce_broadcast_gradient_wrt_shared_target_sums_over_batch():
    p = (torch.eye(4, dtype=F64) / 4).requires_grad_()
    q = info.covariance(torch.randn(3, 12, 4, dtype=F64)) + torch.eye(4, dtype=F64)
    (grad,) = torch.autograd.grad(info.mce(p, q).sum(), p)
    torch.testing.assert_close(grad, -info.matrix_log(q).sum(0))
    assert gradcheck(lambda a: info.mce(a, q), (p,))

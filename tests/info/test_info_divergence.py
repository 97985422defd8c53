"""matrix_llm.info: matrix log (eigh / Taylor), MCE, MKL (closed forms and identities from MATH.md §1.2, §2, §3.5).

Run: .venv/bin/python -m pytest tests/info/test_info_divergence.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from matrix_llm import info

F64 = torch.float64
TOL = 1e-9


def _spd(d: int, seed: int = 0, shift: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=F64)
    return a @ a.T / d + shift * torch.eye(d, dtype=F64)


def _with_spectrum(w: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v, _ = torch.linalg.qr(torch.randn(len(w), len(w), generator=g, dtype=F64))
    return v @ torch.diag(w.to(F64)) @ v.T


def _diag(*values: float) -> torch.Tensor:
    return torch.diag(torch.tensor(values, dtype=F64))


# ----------------------------------------------------------------------------------------------- matrix log


def test_matrix_log_eigh_inverts_matrix_exp():
    q = _spd(7)
    torch.testing.assert_close(torch.linalg.matrix_exp(info.matrix_log(q)), q, atol=1e-12, rtol=1e-12)


def test_taylor_and_eigh_agree_inside_convergence_region():
    q = _with_spectrum(torch.linspace(0.6, 1.4, 6))
    exact = info.matrix_log(q)
    torch.testing.assert_close(info.taylor_log(q, order=20), exact, atol=1e-6, rtol=0)
    torch.testing.assert_close(info.matrix_log(q, method="taylor", order=20), exact, atol=1e-6, rtol=0)
    mce_e = info.mce(q / 6, q)
    mce_t = info.mce(q / 6, q, log="taylor", order=20)
    assert mce_t.item() == pytest.approx(mce_e.item(), abs=1e-6)


def test_taylor_log_matches_scalar_partial_sums():
    """MATH §2.2 table: order-4 / order-8 partial sums of log(x) at x = 0.5 and 1.9."""
    q = _diag(0.5, 1.9)
    t4 = info.taylor_log(q, order=4).diagonal()
    t8 = info.taylor_log(q, order=8).diagonal()
    torch.testing.assert_close(t4, torch.tensor([-0.682292, 0.573975], dtype=F64), atol=1e-6, rtol=0)
    torch.testing.assert_close(t8, torch.tensor([-0.692750, 0.618019], dtype=F64), atol=1e-6, rtol=0)


def test_taylor_raises_outside_convergence_region():
    q = _with_spectrum(torch.tensor([0.5, 1.0, 2.5]))
    with pytest.raises(ValueError, match=r"spectral radius of q - I is < 1.*got spectral radius 1\.5"):
        info.taylor_log(q)
    with pytest.raises(ValueError, match="mce: .*spectral radius"):
        info.mce(torch.eye(3, dtype=F64), q, log="taylor")
    with pytest.raises(ValueError, match="spectral radius"):
        info.matrix_log(q, method="taylor")
    # check=False accepts the divergent series (here: the scalar table's x = 2.5, order 4 -> 0.234375)
    out = info.taylor_log(_diag(2.5), check=False)
    assert out.item() == pytest.approx(0.234375, abs=1e-12)


def test_taylor_check_uses_complex_spectrum_for_nonsymmetric_q():
    # ||Q - I||_F > 1 but spectral radius 0.5: accepted (exact eigvals path, not the Frobenius bound)
    q = torch.eye(2, dtype=F64) + torch.tensor([[0.5, 10.0], [0.0, -0.5]], dtype=F64)
    info.taylor_log(q)
    # a rotation-like Q - I with complex eigenvalues ±1.2i: rejected
    bad = torch.eye(2, dtype=F64) + torch.tensor([[0.0, 1.2], [-1.2, 0.0]], dtype=F64)
    with pytest.raises(ValueError, match="1.2"):
        info.mce(torch.eye(2, dtype=F64), bad, log="taylor")


def test_taylor_uses_q_as_given_nonsymmetric():
    x = 0.2 * torch.randn(5, 5, dtype=F64)
    q = torch.eye(5, dtype=F64) + x
    ref = x - x @ x / 2 + x @ x @ x / 3 - x @ x @ x @ x / 4
    torch.testing.assert_close(info.taylor_log(q, order=4), ref)
    p = _spd(5, seed=3)
    expected = -torch.trace(p @ ref)
    assert info.mce(p, q, log="taylor", trace_term=False).item() == pytest.approx(expected.item(), abs=1e-12)


# ----------------------------------------------------------------------------------------------- MCE / MKL


def test_mce_scalar_diagonal_example():
    value = info.mce(_diag(0.2, 0.3, 0.5), _diag(0.1, 0.6, 0.3))
    assert value.item() == pytest.approx(2.215751107892, abs=TOL)
    no_trace = info.mce(_diag(0.2, 0.3, 0.5), _diag(0.1, 0.6, 0.3), trace_term=False)
    assert no_trace.item() == pytest.approx(2.215751107892 - 1.0, abs=TOL)


def test_mce_of_p_with_itself_is_unnormalized_entropy_and_mkl_zero():
    p = _spd(8, seed=1)
    assert info.mce(p, p).item() == pytest.approx(info.matrix_entropy_unnormalized(p).item(), abs=TOL)
    assert info.mkl(p, p).item() == pytest.approx(0.0, abs=TOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mce_equals_entropy_plus_mkl(seed):
    p, q = _spd(8, seed=seed), _spd(8, seed=seed + 10)
    lhs = info.mce(p, q)
    rhs = info.matrix_entropy_unnormalized(p) + info.mkl(p, q)
    assert lhs.item() == pytest.approx(rhs.item(), abs=TOL)
    assert info.mkl(p, q).item() > 0


def test_mce_against_uniform_target_closed_form():
    d = 9
    q = _spd(d, seed=4)
    expected = -torch.logdet(q) / d + torch.trace(q)
    assert info.mce(torch.eye(d, dtype=F64) / d, q).item() == pytest.approx(expected.item(), abs=TOL)


def test_mce_uniform_target_minimised_at_uniform_under_unit_trace():
    d = 6
    uniform = torch.eye(d, dtype=F64) / d
    q = _spd(d, seed=5)
    q = q / q.trace()
    assert info.mce(uniform, uniform).item() < info.mce(uniform, q).item()


def test_matrix_ssl_reference_values_d8():
    """MATH §3.5: d=8, mu=1, lambda=1, uniform C = I/d, no +tr(Q): exact -0.942264, Taylor-4 -0.942220."""
    d = 8
    p = torch.eye(d, dtype=F64)
    q = torch.eye(d, dtype=F64) / d + torch.eye(d, dtype=F64)
    exact = info.mce(p, q, trace_term=False)
    taylor = info.mce(p, q, log="taylor", order=4, trace_term=False)
    assert exact.item() == pytest.approx(-0.942264, abs=5e-7)
    assert exact.item() == pytest.approx(-d * math.log(1 + 1 / d), abs=TOL)
    assert taylor.item() == pytest.approx(-0.942220, abs=5e-7)


@pytest.mark.parametrize(
    "c_value, mu, exact_ref, taylor_ref",
    [
        (0.0, 1.0, 0.0, 0.0),  # collapsed
        (0.0, 0.5, 1419.565426, 1397.333333),
        (1 / 2048, 1.0, -0.999756, -0.999756),  # uniform C = I/d
        (1 / 2048, 0.5, 1417.566402, 1395.459005),
    ],
)
def test_matrix_ssl_reference_values_d2048(c_value, mu, exact_ref, taylor_ref):
    """MATH §3.5 at d = 2048 for diagonal C = c I: MCE is additive over diagonal blocks, so a batch of 2048
    1x1 matrices gives the d = 2048 value cheaply; one 256-dim full matrix checks the scaling."""
    d = 2048
    p = torch.ones(d, 1, 1, dtype=F64)
    q = torch.full((d, 1, 1), c_value + mu, dtype=F64)
    exact = info.mce(p, q, trace_term=False).sum()
    taylor = info.mce(p, q, log="taylor", trace_term=False).sum()
    assert exact.item() == pytest.approx(exact_ref, abs=5e-7)
    assert taylor.item() == pytest.approx(taylor_ref, abs=5e-7)
    small = (c_value + mu) * torch.eye(256, dtype=F64)
    assert info.mce(torch.eye(256, dtype=F64), small, trace_term=False).item() * 8 == pytest.approx(
        exact.item(), abs=1e-8
    )


def test_mkl_nonnegative_and_zero_only_at_equality():
    p = _spd(5, seed=6)
    for seed in range(3):
        assert info.mkl(p, _spd(5, seed=20 + seed)).item() > 0
    assert info.mkl(p, p * (1 + 1e-3)).item() > 0


def test_eigh_path_raises_on_non_positive_definite_q_unless_check_false():
    q = _with_spectrum(torch.tensor([-0.2, 0.5, 1.0]))
    p = torch.eye(3, dtype=F64) / 3
    for call, name in (
        (lambda c: info.mce(p, q, check=c), "mce"),
        (lambda c: info.mkl(p, q, check=c), "mkl"),
        (lambda c: info.matrix_log(q, check=c), "matrix_log"),
    ):
        with pytest.raises(
            ValueError, match=rf"{name}: .*positive-definite `q`; its smallest eigenvalue is -0.2"
        ):
            call(True)
        assert torch.isfinite(call(False)).all()  # clamped at eps * max: finite, documented as such
    with pytest.raises(ValueError, match="smallest eigenvalue is 0"):
        info.mce(p, torch.zeros(3, 3, dtype=F64))

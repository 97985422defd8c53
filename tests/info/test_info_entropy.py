"""matrix_llm.info: gram / covariance, entropies, effective rank, MI/MIR/HDR, TCR (closed forms from MATH.md).

Run: .venv/bin/python -m pytest tests/info/test_info_entropy.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from matrix_llm import info

F64 = torch.float64
TOL = 1e-9


def _orthonormal_rows(r: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, r, generator=g, dtype=F64))
    return q.T  # (r, d), orthonormal rows


def _etf(c: int) -> torch.Tensor:
    """Simplex-ETF Gram with unit diagonal: (C/(C-1)) I - 1 1ᵀ/(C-1)."""
    return (c / (c - 1)) * torch.eye(c, dtype=F64) - torch.ones(c, c, dtype=F64) / (c - 1)


# ----------------------------------------------------------------------------------------------- gram/covariance


def test_gram_rows_normalised_unit_diagonal():
    z = torch.randn(7, 5, dtype=F64) * 3
    k = info.gram(z)
    assert k.shape == (7, 7) and k.dtype == F64
    torch.testing.assert_close(k.diagonal(), torch.ones(7, dtype=F64))
    torch.testing.assert_close(info.gram(z, normalize=False), z @ z.T)


def test_covariance_matches_centering_matrix_formula():
    n, d = 9, 4
    z = torch.randn(n, d, dtype=F64)
    zh = z / z.norm(dim=1, keepdim=True)
    h = torch.eye(n, dtype=F64) - torch.ones(n, n, dtype=F64) / n
    torch.testing.assert_close(info.covariance(z), zh.T @ h @ zh / n)
    torch.testing.assert_close(info.covariance(z, center=False), zh.T @ zh / n)
    torch.testing.assert_close(info.covariance(z, center=False, normalize=False), z.T @ z / n)
    assert info.covariance(z, center=False).trace().item() == pytest.approx(1.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------- entropy


UNIFORM_H = [(2, 0.693147180560), (10, 2.302585092994), (64, 4.158883083360), (2048, 7.624618986159)]


@pytest.mark.parametrize("n, expected", UNIFORM_H[:3])
def test_entropy_of_uniform_density_is_log_n(n, expected):
    assert info.entropy(torch.eye(n, dtype=F64) / n).item() == pytest.approx(expected, abs=TOL)
    assert info.entropy(torch.eye(n, dtype=F64) * 3.7).item() == pytest.approx(expected, abs=TOL)
    assert info.feature_entropy(torch.eye(n, dtype=F64)).item() == pytest.approx(expected, abs=TOL)


def test_entropy_of_uniform_density_n2048_from_its_spectrum():
    """n = 2048: the entropy formula applied to the spectrum of I_n/n (a 2048 x 2048 eigh is too slow for the
    default run on the shared 2-core CI machine; the full-matrix version is the `slow` test below)."""
    from matrix_llm.info._spectral import _entropy_from_eigvals

    n, expected = UNIFORM_H[3]
    w = torch.full((n,), 1.0 / n, dtype=F64)
    assert _entropy_from_eigvals(w, 1.0).item() == pytest.approx(expected, abs=TOL)
    assert _entropy_from_eigvals(w, 2.0).item() == pytest.approx(expected, abs=TOL)
    assert _entropy_from_eigvals(w, 0.5).item() == pytest.approx(expected, abs=TOL)  # every order: log n


@pytest.mark.slow
def test_entropy_of_uniform_density_n2048_full_matrix():
    n, expected = UNIFORM_H[3]
    assert info.entropy(torch.eye(n, dtype=F64) / n).item() == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("r", [1, 3, 7])
def test_rank_r_uniform_density_entropy_log_r_and_erank_r(r):
    u = _orthonormal_rows(r, 12).T  # (12, r)
    k = u @ u.T / r
    assert info.entropy(k).item() == pytest.approx(math.log(r), abs=TOL)
    assert info.erank(k).item() == pytest.approx(r, abs=1e-8)


def test_entropy_is_scale_invariant_and_symmetrises():
    z = torch.randn(6, 6, dtype=F64)
    k = z @ z.T
    h = info.entropy(k)
    assert info.entropy(11.0 * k).item() == pytest.approx(h.item(), abs=TOL)
    skew = torch.triu(torch.randn(6, 6, dtype=F64), 1)
    assert info.entropy(k + skew - skew.T).item() == pytest.approx(h.item(), abs=TOL)


@pytest.mark.parametrize("alpha", [0.5, 0.999, 1.0, 1.001, 2.0, 3.0, 10.0])
def test_renyi_entropy_of_uniform_is_log_7(alpha):
    assert info.entropy(torch.eye(7, dtype=F64) / 7, alpha=alpha).item() == pytest.approx(
        1.945910149055, abs=TOL
    )


def test_renyi_continuity_at_alpha_one_brackets_von_neumann():
    z = torch.randn(6, 4, dtype=F64)
    k = info.gram(z)
    lo, mid, hi = (info.entropy(k, alpha=a).item() for a in (0.999, 1.0, 1.001))
    assert lo > mid > hi  # Rényi entropy decreases in alpha
    assert abs(lo - mid) < 1e-3 and abs(hi - mid) < 1e-3
    assert abs((lo - mid) - (mid - hi)) < 1e-5  # smooth: nearly symmetric differences


def test_renyi_2_equals_minus_log_frobenius():
    z = torch.randn(8, 5, dtype=F64)
    k = info.gram(z)
    a = k / k.trace()
    assert info.entropy(k, alpha=2.0).item() == pytest.approx(-math.log((a**2).sum().item()), abs=TOL)


def test_entropy_rank_one_is_zero_and_zero_matrix_is_finite():
    v = torch.randn(5, 1, dtype=F64)
    assert info.entropy(v @ v.T).item() == pytest.approx(0.0, abs=1e-12)
    assert info.entropy(torch.zeros(4, 4, dtype=F64)).item() == 0.0
    assert info.entropy(torch.zeros(4, 4, dtype=F64), alpha=2.0).item() == 0.0


def test_matrix_entropy_unnormalized_uniform_is_log_d_plus_one():
    for d in (2, 8, 64):
        value = info.matrix_entropy_unnormalized(torch.eye(d, dtype=F64) / d)
        assert value.item() == pytest.approx(math.log(d) + 1, abs=TOL)


# ----------------------------------------------------------------------------------------------- erank / features


def test_erank_mkl_identity_on_unit_trace_covariance():
    z = torch.randn(96, 16, dtype=F64)
    c = info.covariance(z, center=False)  # unit rows: tr C = 1
    d = c.shape[-1]
    expected = d * torch.exp(-info.mkl(c, torch.eye(d, dtype=F64) / d))
    assert info.erank(c).item() == pytest.approx(expected.item(), abs=1e-9)
    assert 1.0 < info.erank(c).item() < d


def test_rank_r_covariance_mkl_to_uniform_is_log_d_over_r():
    d, r = 10, 4
    u = _orthonormal_rows(r, d)
    c = u.T @ u / r
    assert info.mkl(c, torch.eye(d, dtype=F64) / d).item() == pytest.approx(math.log(d / r), abs=TOL)


@pytest.mark.parametrize("shape", [(20, 6), (6, 20), (9, 9)])
@pytest.mark.parametrize("center", [False, True])
def test_feature_entropy_matches_both_sides(shape, center):
    z = torch.randn(*shape, dtype=F64)
    zc = z - z.mean(0) if center else z
    zh = zc / zc.norm(dim=1, keepdim=True)
    ref_gram = info.entropy(zh @ zh.T)
    ref_cov = info.entropy(zh.T @ zh)
    value = info.feature_entropy(z, center=center)
    assert value.item() == pytest.approx(ref_gram.item(), abs=TOL)
    assert value.item() == pytest.approx(ref_cov.item(), abs=TOL)
    v2 = info.feature_entropy(z, center=center, alpha=2.0)
    assert v2.item() == pytest.approx(info.entropy(zh @ zh.T, alpha=2.0).item(), abs=TOL)


@pytest.mark.parametrize("n", [4, 16, 64])
def test_diff_erank_of_identity_is_n_minus_one(n):
    h = info.feature_entropy(torch.eye(n, dtype=F64), center=True)
    assert h.exp().item() == pytest.approx(n - 1, abs=1e-9)
    if n == 4:
        assert (h / math.log(4)).item() == pytest.approx(0.79248125, abs=1e-8)


def test_diff_erank_two_alternating_rows_is_one_and_identical_rows_not_nan():
    rows = torch.tensor([[1.0, 2.0, -3.0, 0.5], [0.2, -1.0, 2.0, 4.0]], dtype=F64)
    z = rows.repeat(5, 1)
    assert info.feature_entropy(z, center=True).exp().item() == pytest.approx(1.0, abs=1e-12)
    same = rows[:1].repeat(6, 1)  # zero after centring: no NaN
    assert info.feature_entropy(same, center=True).item() == 0.0
    assert info.feature_entropy(rows[:1], center=True).item() == 0.0


@pytest.mark.parametrize("n", [4, 16, 64])
def test_matrix_nuclear_norm_of_identity_is_one(n):
    assert info.matrix_nuclear_norm(torch.eye(n, dtype=F64)).item() == pytest.approx(1.0, abs=1e-12)


def test_matrix_nuclear_norm_two_alternating_rows_closed_form_and_bound():
    rows = torch.tensor([[1.0, 2.0, -3.0, 0.5], [0.2, -1.0, 2.0, 4.0]], dtype=F64)
    for length in (2, 10, 3):  # 3: the rows do not alternate evenly, so the closed form does not apply
        z = rows.repeat(5, 1)[:length]
        value = info.matrix_nuclear_norm(z).item()
        assert 0.0 <= value <= math.sqrt(min(length, 4) / length) + 1e-12  # Cauchy-Schwarz (MATH.md 6.4)
        if length % 2 == 0:
            v = (rows[0] - rows[1]) / (rows[0] - rows[1]).norm()
            top = v.abs().topk(min(length, 4)).values.sum()
            assert value == pytest.approx((math.sqrt(length) * top / length).item(), abs=1e-12)


def test_matrix_nuclear_norm_uses_top_min_n_d_columns_and_never_nans():
    z = torch.randn(3, 50, dtype=F64, generator=torch.Generator().manual_seed(0))
    zc = z - z.mean(0)
    zh = zc / zc.norm(dim=1, keepdim=True)
    expected = zh.norm(dim=0).sort(descending=True).values[:3].sum() / 3
    assert info.matrix_nuclear_norm(z).item() == pytest.approx(expected.item(), abs=1e-12)
    assert info.matrix_nuclear_norm(z[:1].repeat(4, 1)).item() == 0.0  # zero after centring
    batched = info.matrix_nuclear_norm(torch.stack([z, 2 * z]))
    torch.testing.assert_close(batched, torch.full((2,), expected.item(), dtype=F64))
    assert info.matrix_nuclear_norm(z.to(torch.bfloat16)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="n, d >= 1"):
        info.matrix_nuclear_norm(torch.zeros(0, 3))


# ----------------------------------------------------------------------------------------------- MI / MIR / HDR

NC_TABLE = [
    (3, 0.693147180560, 1.039720770840, 0.346573590280, 0.500000000000),
    (4, 1.098612288668, 1.368922360740, 0.828302216596, 0.753953169048),
    (10, 2.197224577336, 2.301920609031, 2.092528545642, 0.952350782540),
    (100, 4.595119850135, 4.605169672392, 4.585070027877, 0.997812935770),
]


@pytest.mark.parametrize("c, h, hgg, mi, mir", NC_TABLE)
def test_neural_collapse_reference_values(c, h, hgg, mi, mir):
    g = _etf(c)
    assert info.entropy(g).item() == pytest.approx(h, abs=TOL)
    assert info.entropy(g * g).item() == pytest.approx(hgg, abs=TOL)
    assert info.mutual_information(g, g).item() == pytest.approx(mi, abs=TOL)
    assert info.mir(g, g).item() == pytest.approx(mir, abs=TOL)
    assert info.hdr(g, g).item() == pytest.approx(0.0, abs=1e-12)
    closed = 1 / (c - 1) + (c - 2) * math.log(c - 2) / ((c - 1) * math.log(c - 1))
    assert mir == pytest.approx(closed, abs=1e-11)


def test_neural_collapse_from_features_and_heads():
    c = 10
    w = torch.linalg.cholesky(_etf(c) + 1e-13 * torch.eye(c, dtype=F64), upper=False)  # rows with Gram = ETF
    feats = w * torch.rand(c, 1, dtype=F64).add(0.5)  # features collapse onto their heads (any scale)
    assert info.mir(info.gram(feats), info.gram(w)).item() == pytest.approx(0.952350782540, abs=1e-7)


def test_class_balanced_kronecker_batch_same_h_and_mir():
    g = torch.kron(_etf(10), torch.ones(4, 4, dtype=F64))
    assert info.entropy(g).item() == pytest.approx(2.197224577336, abs=TOL)
    assert info.mir(g, g).item() == pytest.approx(0.952350782540, abs=TOL)


def test_unbalanced_batch_differs():
    labels = torch.repeat_interleave(torch.arange(10), torch.arange(1, 11))
    g = _etf(10)[labels][:, labels]
    assert info.entropy(g).item() == pytest.approx(2.0647, abs=1e-4)
    assert info.mir(g, g).item() == pytest.approx(0.9584, abs=1e-4)


def test_mir_raises_on_zero_entropy_c2():
    """The 0/0 is its own ValueError subclass, so a caller can catch it alone."""
    assert issubclass(info.UndefinedRatioError, ValueError)
    g = _etf(2)
    with pytest.raises(info.UndefinedRatioError, match="mir: .*0/0"):
        info.mir(g, g)
    with pytest.raises(info.UndefinedRatioError, match="hdr: .*0/0"):
        info.hdr(g, g)
    assert info.mutual_information(g, g).item() == pytest.approx(0.0, abs=1e-12)


def test_mutual_information_symmetric_and_hdr_value():
    k1, k2 = info.gram(torch.randn(8, 3, dtype=F64)), info.gram(torch.randn(8, 5, dtype=F64))
    assert info.mutual_information(k1, k2).item() == pytest.approx(
        info.mutual_information(k2, k1).item(), abs=TOL
    )
    h1, h2 = info.entropy(k1).item(), info.entropy(k2).item()
    assert info.hdr(k1, k2).item() == pytest.approx(abs(h1 - h2) / max(h1, h2), abs=TOL)


def test_mir_hdr_equals_the_separate_calls_and_raises_alike():
    k1, k2 = info.gram(torch.randn(8, 3, dtype=F64)), info.gram(torch.randn(8, 5, dtype=F64))
    mir, hdr = info.mir_hdr(k1, k2)
    assert mir.item() == pytest.approx(info.mir(k1, k2).item(), abs=TOL)
    assert hdr.item() == pytest.approx(info.hdr(k1, k2).item(), abs=TOL)
    with pytest.raises(info.UndefinedRatioError, match="mir_hdr: .*0/0"):
        info.mir_hdr(_etf(2), _etf(2))


# ----------------------------------------------------------------------------------------------- TCR


def test_tcr_mmae_closed_form():
    """MATH §6.1(d): M-MAE's -loss logdet(I_d + (mu/d) ZᵀZ) with 4 orthonormal rows, d=8, mu=3: 4 log(1 + 3/8)."""
    z = _orthonormal_rows(4, 8)
    d, mu_code = 8, 3.0
    code_value = info.tcr(z, mu=d / mu_code) - d * math.log(d / mu_code)
    assert code_value.item() == pytest.approx(1.273814924474, abs=TOL)
    assert ((z @ z.T) ** 2).mean().item() == pytest.approx(0.25, abs=1e-12)  # U-MAE mean(sim^2) = 1/n


@pytest.mark.parametrize("shape", [(5, 12), (12, 5), (7, 7)])
@pytest.mark.parametrize("mu", [0.1, 1.0, 4.0])
def test_tcr_cheap_side_equals_direct_logdet(shape, mu):
    z = torch.randn(*shape, dtype=F64)
    direct = torch.logdet(mu * torch.eye(shape[1], dtype=F64) + z.T @ z)
    assert info.tcr(z, mu=mu).item() == pytest.approx(direct.item(), abs=1e-10)


def test_tcr_umae_second_order_expansion_improves_with_mu():
    n, d = 256, 32
    z = torch.nn.functional.normalize(torch.randn(n, d, dtype=F64), dim=1)
    frob2 = ((z @ z.T) ** 2).sum()
    errors = []
    for mu in (10.0, 100.0, 1000.0):
        approx = d * math.log(mu) + n / mu - frob2 / (2 * mu**2)
        errors.append(abs(info.tcr(z, mu=mu).item() - approx.item()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] / errors[2] > 100  # O(mu^-3) remainder
    assert errors[2] < 1e-3
    approx_1 = d * math.log(1.0) + n - frob2 / 2
    assert abs(info.tcr(z, mu=1.0).item() - approx_1.item()) > 100  # invalid at small mu

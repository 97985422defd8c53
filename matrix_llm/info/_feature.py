"""Matrix cross-entropy and KL of shifted feature covariances on the cheaper side (docs/formulations.md).

For ``n`` rows of dimension ``d`` with ``n < d``, ``C(z) = Ẑᵀ H Ẑ / n`` has rank ``<= n``. With the thin factor
``A = H Ẑ / √n`` (so ``C = Aᵀ A``), ``G = A Aᵀ`` (``n x n``) and ``φ_μ(x) = log(1 + x/μ) / x`` (``φ_μ(0) = 1/μ``):

    log(C_q + μ I) = log μ · I + A_qᵀ φ_μ(G_q) A_q
    tr(P log Q)    = log μ · tr P + tr(M_qpᵀ φ_μ(G_q) M_qp) + λ · logdet(I + G_q / μ),   M_qp = A_q A_pᵀ

for ``P = C_p + λ I`` and ``Q = C_q + μ I``; ``tr P = ||A_p||² + λ d``. Cost ``O(n_p n_q d + n_q³)`` instead of
``O(d³)``. The ``n_q x n_q`` eigendecomposition has a Daleckii–Krein backward (divided differences of ``φ_μ``,
computed in float64 without cancellation), so gradients stay finite and exact at repeated eigenvalues
(duplicated samples, orthogonal equal-norm rows) and at the zero eigenvalue that centring always creates.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from ._divergence import mce
from ._entropy import covariance
from ._spectral import (
    _check_positive,
    _check_tensor,
    _eigvalsh,
    _out_dtype,
    _rows,
    _sym,
    _xlogx_sum,
    no_autocast,
    work_dtype,
)

__all__ = ["feature_mce", "feature_mkl"]

_SERIES = 1e-3  # x / mu below this: φ from its power series (log1p(x)/x loses digits as x -> 0)
_SERIES_PRIME = 1e-2  # x / mu below this: φ' from its power series
_TIE = 1e-5  # |a - b| <= _TIE * (mu + max(a, b)): divided difference = φ'(midpoint) (error ~ _TIE², relative)


def _phi(w: torch.Tensor, mu: float) -> torch.Tensor:
    """``φ_μ(w) = log(1 + w/μ) / w`` for ``w >= 0``, ``1/μ`` at 0, full relative accuracy."""
    x = w / mu
    series = (1 - x / 2 + x**2 / 3 - x**3 / 4 + x**4 / 5) / mu
    direct = torch.log1p(x) / torch.where(x < _SERIES, torch.ones_like(w), w)
    return torch.where(x < _SERIES, series, direct)


def _phi_prime(w: torch.Tensor, mu: float) -> torch.Tensor:
    """``φ_μ'(w) = (w/(μ+w) - log(1 + w/μ)) / w²``; ``-1/(2μ²)`` at 0."""
    x = w / mu
    series = sum((-1) ** k * k * x ** (k - 1) / (k + 1) for k in range(1, 10)) / mu**2
    safe = torch.where(x < _SERIES_PRIME, torch.ones_like(w), w)
    direct = (safe / (mu + safe) - torch.log1p(safe / mu)) / safe**2
    return torch.where(x < _SERIES_PRIME, series, direct)


def _phi_divided_differences(w: torch.Tensor, mu: float) -> torch.Tensor:
    """``D_ij = (φ(w_i) - φ(w_j)) / (w_i - w_j)``, ``φ'`` at (near-)ties; float64, symmetric."""
    wi, wj = w.unsqueeze(-1), w.unsqueeze(-2)
    diff = wi - wj
    tie = diff.abs() <= _TIE * (mu + torch.maximum(wi, wj))
    phi = _phi(w, mu)
    direct = (phi.unsqueeze(-1) - phi.unsqueeze(-2)) / torch.where(tie, torch.ones_like(diff), diff)
    out = torch.where(tie, _phi_prime((wi + wj) / 2, mu), direct)
    return (out + out.mT) / 2


class _ThinTracePLogQ(torch.autograd.Function):
    """``tr(N φ_μ(G)) + λ Σ log(1 + w/μ)`` for symmetric PSD ``G`` (eigenvalues ``w``) and symmetric ``N``.

    Backward: ``grad_N = φ_μ(G)``; ``grad_G = V (D ∘ Vᵀ N V) Vᵀ + λ (μ I + G)⁻¹`` with ``D`` the divided
    differences of ``φ_μ`` (:func:`_phi_divided_differences`): no ``1/(w_i - w_j)`` blow-up at ties.
    """

    @staticmethod
    def forward(ctx, n_mat: torch.Tensor, g: torch.Tensor, mu: float, lamb: float) -> torch.Tensor:  # type: ignore[override]
        w, v = torch.linalg.eigh(_sym(g))
        w = w.clamp_min(0)  # round-off below zero of a PSD Gram
        w64 = w.double()
        phi = _phi(w64, mu).to(w.dtype)
        m = v.mT @ n_mat @ v
        value = (phi * m.diagonal(dim1=-2, dim2=-1)).sum(-1) + lamb * torch.log1p(w / mu).sum(-1)
        ctx.save_for_backward(w, v, m, phi)
        ctx.mu, ctx.lamb = mu, lamb
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        w, v, m, phi = ctx.saved_tensors
        g = grad[..., None, None]
        grad_n = grad_g = None
        if ctx.needs_input_grad[0]:
            grad_n = ((v * phi.unsqueeze(-2)) @ v.mT) * g
        if ctx.needs_input_grad[1]:
            dd = _phi_divided_differences(w.double(), ctx.mu).to(w.dtype)
            inner = dd * _sym(m)
            inner = inner + torch.diag_embed(ctx.lamb / (ctx.mu + w))
            grad_g = (v @ inner @ v.mT) * g
        return grad_n, grad_g, None, None


def _check_features(fn: str, zp: object, zq: object) -> tuple[torch.Tensor, torch.Tensor]:
    zp = _check_tensor(fn, "zp", zp)
    zq = _check_tensor(fn, "zq", zq)
    if zp.shape[-1] != zq.shape[-1]:
        raise ValueError(f"{fn}: `zp` and `zq` must have the same feature dimension d; got {zp.shape[-1]} and "
                         f"{zq.shape[-1]}")  # fmt: skip
    if zp.shape[-2] == 0 or zq.shape[-2] == 0:
        raise ValueError(f"{fn}: expected at least one row in `zp` and `zq`; got {tuple(zp.shape)}, {tuple(zq.shape)}")
    try:
        torch.broadcast_shapes(zp.shape[:-2], zq.shape[:-2])
    except RuntimeError:
        raise ValueError(f"{fn}: batch dims of `zp` {tuple(zp.shape[:-2])} and `zq` {tuple(zq.shape[:-2])} do not "
                         "broadcast") from None  # fmt: skip
    return zp, zq


def _check_lamb(fn: str, lamb: object) -> float:
    if isinstance(lamb, bool) or not isinstance(lamb, (int, float)) or not math.isfinite(lamb) or lamb < 0:
        raise ValueError(f"{fn}: `lamb` must be a finite number >= 0; got {lamb!r}")
    return float(lamb)


def _thin(z: torch.Tensor, *, center: bool, normalize: bool) -> torch.Tensor:
    return _rows(z, normalize=normalize, center=center) / math.sqrt(z.shape[-2])


def _cross_and_traces(zp, zq, lamb, mu, center, normalize):
    """``(tr(P log Q), tr P, tr Q)`` on the side that is cheaper for ``Q`` (work dtype, autocast off)."""
    d, nq = zq.shape[-1], zq.shape[-2]
    ap = _thin(zp, center=center, normalize=normalize)
    aq = _thin(zq, center=center, normalize=normalize)
    tr_p = ap.square().sum((-2, -1)) + lamb * d
    tr_q = aq.square().sum((-2, -1)) + mu * d
    if nq >= d:  # the d x d side is no larger: the dense exact path
        eye = torch.eye(d, dtype=zq.dtype, device=zq.device)
        p = ap.mT @ ap + lamb * eye
        q = aq.mT @ aq + mu * eye
        cross = tr_q - mce(p, q, trace_term=True)  # mce = -tr(P log Q) + tr Q
        return cross, tr_p, tr_q
    gq = aq @ aq.mT
    mqp = aq @ ap.mT
    n_mat = mqp @ mqp.mT
    shape = torch.broadcast_shapes(n_mat.shape, gq.shape)
    thin = _ThinTracePLogQ.apply(n_mat.expand(shape), gq.expand(shape), mu, lamb)
    return math.log(mu) * tr_p + thin, tr_p, tr_q


def feature_mce(
    zp: torch.Tensor,
    zq: torch.Tensor,
    *,
    lamb: float,
    mu: float,
    center: bool = True,
    normalize: bool = True,
    trace_term: bool = True,
) -> torch.Tensor:
    r"""``mce(covariance(zp) + lamb·I, covariance(zq) + mu·I)`` without forming the ``d x d`` matrices when
    ``zq`` has fewer rows than columns (module docstring).

    Args:
        zp: ``(*, n_p, d)`` rows of the target side (``P = C(zp) + lamb·I``).
        zq: ``(*, n_q, d)`` rows of the predicted side (``Q = C(zq) + mu·I``); ``n_p`` and ``n_q`` may differ;
            batch dims broadcast.
        lamb: shift of ``P``, ``>= 0``.
        mu: shift of ``Q``, ``> 0`` (``log Q`` needs it).
        center, normalize: as :func:`matrix_llm.info.covariance` (row normalisation, then centring, ``/n``).
        trace_term: add ``tr Q`` (as :func:`matrix_llm.info.mce`).

    Returns:
        ``(*)`` tensor in the promoted dtype of the inputs (float64 math for float64 input, float32 otherwise,
        autocast off). Cost ``O(n_p n_q d + n_q³)`` when ``n_q < d``; the dense exact path otherwise.

    Gradient: exact, through a Daleckii–Krein backward on the ``n_q x n_q`` side; finite at repeated
    eigenvalues.
    """
    zp, zq = _check_features("feature_mce", zp, zq)
    mu = _check_positive("feature_mce", "mu", mu)
    lamb = _check_lamb("feature_mce", lamb)
    out_dtype = _out_dtype(zp.dtype, zq.dtype)
    with no_autocast(zq):
        work = work_dtype(zp.dtype, zq.dtype)
        cross, _, tr_q = _cross_and_traces(zp.to(work), zq.to(work), lamb, mu, center, normalize)
        loss = -cross + tr_q if trace_term else -cross
        return loss.to(out_dtype)


def feature_mkl(
    zp: torch.Tensor,
    zq: torch.Tensor,
    *,
    lamb: float,
    mu: float,
    center: bool = True,
    normalize: bool = True,
) -> torch.Tensor:
    r"""``mkl(covariance(zp) + lamb·I, covariance(zq) + mu·I)`` on the cheaper side; ``tr(P log P)`` from the
    eigenvalues of the ``n_p x n_p`` Gram (``eigvalsh``, stable gradient; ``0 log 0 = 0`` when ``lamb = 0``).
    Arguments and return as :func:`feature_mce`."""
    zp, zq = _check_features("feature_mkl", zp, zq)
    mu = _check_positive("feature_mkl", "mu", mu)
    lamb = _check_lamb("feature_mkl", lamb)
    out_dtype = _out_dtype(zp.dtype, zq.dtype)
    with no_autocast(zq):
        work = work_dtype(zp.dtype, zq.dtype)
        zp, zq = zp.to(work), zq.to(work)
        cross, tr_p, tr_q = _cross_and_traces(zp, zq, lamb, mu, center, normalize)
        d, n_p = zp.shape[-1], zp.shape[-2]
        if n_p < d:  # eigenvalues of P: those of G_p + lamb, and lamb (d - n_p times)
            ap = _thin(zp, center=center, normalize=normalize)
            e = _eigvalsh(ap @ ap.mT).clamp_min(0) + lamb
            rest = (d - n_p) * lamb * math.log(lamb) if lamb > 0 else 0.0
            plogp = _xlogx_sum(e) + rest
        else:
            p = covariance(zp, center=center, normalize=normalize) + lamb * torch.eye(d, dtype=work, device=zp.device)
            plogp = _xlogx_sum(_eigvalsh(p))
        return (plogp - cross - tr_p + tr_q).to(out_dtype)

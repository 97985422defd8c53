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
from ._spectral import (
    _check_choice,
    _check_order,
    _check_positive,
    _check_taylor_converges,
    _check_tensor,
    _eigvalsh,
    _out_dtype,
    _rows,
    _sym,
    _taylor_radius,
    _xlogx_sum,
    no_autocast,
    work_dtype,
)

__all__ = ["feature_mce", "feature_mce_symmetric", "feature_mkl", "feature_uniformity"]

_SERIES = 1e-3  # x / mu below this: φ from its power series (log1p(x)/x loses digits as x -> 0)
_SERIES_PRIME = 1e-2  # x / mu below this: φ' from its power series
_TIE = 1e-5  # |a - b| <= _TIE * (mu + max(a, b)): divided difference = φ'(midpoint) (error ~ _TIE², relative)


def _series(x: torch.Tensor, coefficients: tuple[float, ...]) -> torch.Tensor:
    """``Σ_k c_k x^k`` by Horner's rule, in place on one buffer (two elementwise ops per coefficient)."""
    out = torch.full_like(x, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        out.mul_(x).add_(c)
    return out


_PHI_SERIES = tuple((-1) ** k / (k + 1) for k in range(5))  # log(1 + x) / x = Σ (-x)^k / (k + 1)
_PHI_PRIME_SERIES = tuple(
    (-1) ** (k + 1) * (k + 1) / (k + 2) for k in range(9)
)  # its derivative, term by term


def _phi(w: torch.Tensor, mu: float) -> torch.Tensor:
    """``φ_μ(w) = log(1 + w/μ) / w`` for ``w >= 0``, ``1/μ`` at 0, full relative accuracy."""
    x = w / mu
    small = x < _SERIES
    direct = torch.log1p(x).div_(w.masked_fill(small, 1.0))
    return torch.where(small, _series(x, _PHI_SERIES).div_(mu), direct)


def _phi_prime(w: torch.Tensor, mu: float) -> torch.Tensor:
    """``φ_μ'(w) = (w/(μ+w) - log(1 + w/μ)) / w²``; ``-1/(2μ²)`` at 0."""
    x = w / mu
    small = x < _SERIES_PRIME
    safe = w.masked_fill(small, 1.0)
    direct = (safe / (safe + mu)).sub_(torch.log1p(safe / mu)).div_(safe.square())
    return torch.where(small, _series(x, _PHI_PRIME_SERIES).div_(mu**2), direct)


def _phi_divided_differences(w: torch.Tensor, mu: float) -> torch.Tensor:
    """``D_ij = (φ(w_i) - φ(w_j)) / (w_i - w_j)``, ``φ'`` at (near-)ties, for ascending ``w`` (eigh's order);
    float64, symmetric (both branches are exactly symmetric in floating point). ``φ'`` is evaluated at the ties
    only: the diagonal, plus the pairs within the tie threshold when two neighbouring eigenvalues are that close
    (sorted ``w``: any tied pair has a neighbour gap below the largest threshold)."""
    phi = _phi(w, mu)
    diff = w.unsqueeze(-1) - w.unsqueeze(-2)
    out = (phi.unsqueeze(-1) - phi.unsqueeze(-2)).div_(diff)  # 0/0 at ties, replaced below
    scale = _TIE * (mu + w)  # the tie threshold of a pair is the larger of the two scales
    if bool((w[..., 1:] - w[..., :-1] <= scale[..., -1:]).any()):
        tie = diff.abs() <= torch.maximum(scale.unsqueeze(-1), scale.unsqueeze(-2))
        where = tie.nonzero(as_tuple=True)
        mid = (w.unsqueeze(-1).expand_as(out)[where] + w.unsqueeze(-2).expand_as(out)[where]) / 2
        out[where] = _phi_prime(mid, mu)
    else:
        out.diagonal(dim1=-2, dim2=-1).copy_(_phi_prime(w, mu))
    return out


def _phi_gram_gradient(
    w: torch.Tensor, v: torch.Tensor, m: torch.Tensor, mu: float, lamb: float, trace: float = 0.0
) -> torch.Tensor:
    """Gradient in ``G = V diag(w) Vᵀ`` of ``tr(N φ_μ(G)) + λ Σ log(1 + w/μ) + trace · tr G`` given ``m = Vᵀ N V``:
    ``V (D ∘ m + diag(λ / (μ + w) + trace)) Vᵀ`` (Daleckii–Krein, ``D`` from :func:`_phi_divided_differences`)."""
    inner = _phi_divided_differences(w.double(), mu).to(w.dtype).mul_(_sym(m))
    inner.diagonal(dim1=-2, dim2=-1).add_(lamb / (mu + w) + trace)
    return v @ inner @ v.mT


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
            grad_g = _phi_gram_gradient(w, v, m, ctx.mu, ctx.lamb) * g
        return grad_n, grad_g, None, None


class _ThinSymmetricCross(torch.autograd.Function):
    """``tr(Kᵀ φ_μ(G_a) K) + tr(K φ_μ(G_b) Kᵀ) + λ Σ log(1 + α/μ) + λ Σ log(1 + β/μ) + κ (tr G_a + tr G_b)`` from
    the thin factors ``A_a``, ``A_b``: ``K = A_a A_bᵀ`` and the Grams ``G_a = A_a A_aᵀ = U diag(α) Uᵀ``,
    ``G_b = V diag(β) Vᵀ`` (the two directions' cross terms of :func:`_cross_and_traces`; ``tr G = ||A||²`` carries
    the traces of ``P`` and ``Q``). With ``B = Uᵀ K V`` both cross traces are ``Σ_ij B_ij² (φ(α_i) + φ(β_j))``
    (``U``, ``V`` orthogonal), so one ``B`` serves both directions and both backward passes.

    Backward: ``grad_K = 2 U (B ∘ (φ(α)_i + φ(β)_j)) Vᵀ``, ``grad_G_a`` and ``grad_G_b`` by
    :func:`_phi_gram_gradient` with ``Uᵀ K Kᵀ U = B Bᵀ``, ``Vᵀ Kᵀ K V = Bᵀ B`` and ``κ I`` for the traces; then
    ``grad_A_a = 2 grad_G_a A_a + grad_K A_b`` and ``grad_A_b = 2 grad_G_b A_b + grad_Kᵀ A_a`` (the Grams'
    gradients are symmetric).
    """

    @staticmethod
    def forward(
        ctx, aa: torch.Tensor, ab: torch.Tensor, mu: float, lamb: float, kappa: float
    ) -> torch.Tensor:  # type: ignore[override]
        ga, gb = aa @ aa.mT, ab @ ab.mT
        traces = ga.diagonal(dim1=-2, dim2=-1).sum(-1) + gb.diagonal(dim1=-2, dim2=-1).sum(-1)
        alpha, u = torch.linalg.eigh(ga)  # eigh reads one triangle: no symmetrising needed
        beta, v = torch.linalg.eigh(gb)
        alpha, beta = alpha.clamp_min(0), beta.clamp_min(0)  # round-off below zero of PSD Grams
        weight = _phi(alpha.double(), mu).unsqueeze(-1) + _phi(beta.double(), mu).unsqueeze(-2)
        b = u.mT @ (aa @ ab.mT) @ v
        bw = b * weight.to(aa.dtype)
        logdets = torch.log1p(alpha / mu).sum(-1) + torch.log1p(beta / mu).sum(-1)
        ctx.save_for_backward(aa, ab, alpha, u, beta, v, b, bw)
        ctx.mu, ctx.lamb, ctx.kappa = mu, lamb, kappa
        return (b * bw).sum((-2, -1)) + lamb * logdets + kappa * traces

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        aa, ab, alpha, u, beta, v, b, bw = ctx.saved_tensors
        g2 = 2 * grad[..., None, None]
        half_grad_k = u @ bw @ v.mT
        grad_aa = grad_ab = None
        if ctx.needs_input_grad[0]:
            grad_ga = _phi_gram_gradient(alpha, u, b @ b.mT, ctx.mu, ctx.lamb, ctx.kappa)
            grad_aa = (grad_ga @ aa).add_(half_grad_k @ ab).mul_(g2)
        if ctx.needs_input_grad[1]:
            grad_gb = _phi_gram_gradient(beta, v, b.mT @ b, ctx.mu, ctx.lamb, ctx.kappa)
            grad_ab = (grad_gb @ ab).add_(half_grad_k.mT @ aa).mul_(g2)
        return grad_aa, grad_ab, None, None, None


def _check_features(fn: str, zp: object, zq: object) -> tuple[torch.Tensor, torch.Tensor]:
    zp = _check_tensor(fn, "zp", zp)
    zq = _check_tensor(fn, "zq", zq)
    if zp.shape[-1] != zq.shape[-1]:
        raise ValueError(
            f"{fn}: `zp` and `zq` must have the same feature dimension d; got {zp.shape[-1]} and "
            f"{zq.shape[-1]}"
        )
    if zp.shape[-2] == 0 or zq.shape[-2] == 0:
        raise ValueError(
            f"{fn}: expected at least one row in `zp` and `zq`; got {tuple(zp.shape)}, {tuple(zq.shape)}"
        )
    try:
        torch.broadcast_shapes(zp.shape[:-2], zq.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"{fn}: batch dims of `zp` {tuple(zp.shape[:-2])} and `zq` {tuple(zq.shape[:-2])} do not "
            "broadcast"
        ) from None
    return zp, zq


def _check_lamb(fn: str, lamb: object, name: str = "lamb") -> float:
    if isinstance(lamb, bool) or not isinstance(lamb, (int, float)) or not math.isfinite(lamb) or lamb < 0:
        raise ValueError(f"{fn}: `{name}` must be a finite number >= 0; got {lamb!r}")
    return float(lamb)


def _check_mu(fn: str, mu: object, log: str) -> float:
    """``mu > 0`` for the exact log (``log Q`` needs it); ``>= 0`` for the Taylor series, which does not."""
    return _check_positive(fn, "mu", mu) if log == "eigh" else _check_lamb(fn, mu, "mu")


def _thin(z: torch.Tensor, *, center: bool, normalize: bool) -> torch.Tensor:
    return _rows(z, normalize=normalize, center=center, scale=1 / math.sqrt(z.shape[-2]))


def _taylor_trace(tr_p: torch.Tensor, s: list, t: list, lamb: float, c: float, order: int) -> torch.Tensor:
    """``tr(P L)`` with ``L = Σ_k (-1)^{k+1} X^k / k`` the Taylor log of ``Q = I + X``, ``X = C + c I``, from
    ``s_j = tr(C_p C^j)`` and ``t_j = tr(C^j)`` (``j = 1..order``), ``P = C_p + λ I`` (binomial expansion of
    ``X^k``: only traces of powers of the rank-``n`` matrix ``C`` are needed)."""
    total = torch.zeros_like(tr_p)
    for k in range(1, order + 1):
        power = tr_p * c**k  # j = 0: tr(P) c^k
        for j in range(1, k + 1):
            power = power + math.comb(k, j) * c ** (k - j) * (s[j - 1] + lamb * t[j - 1])
        total = total + ((-1) ** (k + 1) / k) * power
    return total


def _power_traces(g: torch.Tensor, n_mat: torch.Tensor | None, order: int) -> tuple[list, list]:
    """``t_j = tr(G^j)`` and ``s_j = tr(N G^{j-1})`` for ``j = 1..order`` (``s`` empty without ``N``)."""
    s, t = [], []
    power = None  # G^{j-1}
    for _ in range(order):
        if n_mat is not None:
            s.append(
                n_mat.diagonal(dim1=-2, dim2=-1).sum(-1)
                if power is None
                else (n_mat * power.mT).sum((-2, -1))
            )
        power = g if power is None else power @ g
        t.append(power.diagonal(dim1=-2, dim2=-1).sum(-1))
    return s, t


def _check_taylor_radius(fn: str, small: torch.Tensor, c: float) -> None:
    """The Taylor series of ``log(I + X)``, ``X = C + c I`` with ``rank C < d``, converges iff every eigenvalue of
    ``X`` lies in the unit disc: those of ``C``'s ``n x n`` side (``small``) shifted by ``c``, and ``c`` itself."""
    radius = _taylor_radius(small + c * torch.eye(small.shape[-1], dtype=small.dtype, device=small.device))
    _check_taylor_converges(fn, max(radius, abs(c)))


def _cross_and_traces(ap, aq, lamb, mu, log="eigh", order=4, check=True):
    """``(tr(P log Q), tr P, tr Q)`` from the thin factors ``A_p``, ``A_q`` (:func:`_thin`), on the side that is
    cheaper for ``Q`` (work dtype, autocast off)."""
    d, nq = aq.shape[-1], aq.shape[-2]
    tr_p = ap.square().sum((-2, -1)) + lamb * d
    tr_q = aq.square().sum((-2, -1)) + mu * d
    if nq >= d:  # the d x d side is no larger: the dense path
        eye = torch.eye(d, dtype=aq.dtype, device=aq.device)
        p = ap.mT @ ap + lamb * eye
        q = aq.mT @ aq + mu * eye
        cross = tr_q - mce(
            p, q, trace_term=True, log=log, order=order, check=check
        )  # mce = -tr(P log Q) + tr Q
        return cross, tr_p, tr_q
    gq = aq @ aq.mT
    mqp = aq @ ap.mT
    n_mat = mqp @ mqp.mT
    shape = torch.broadcast_shapes(n_mat.shape, gq.shape)
    if log == "taylor":
        if check:
            _check_taylor_radius("feature_mce", gq, mu - 1.0)
        s, t = _power_traces(gq.expand(shape), n_mat.expand(shape), order)
        return _taylor_trace(tr_p, s, t, lamb, mu - 1.0, order), tr_p, tr_q
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
    log: str = "eigh",
    order: int = 4,
    check: bool = True,
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
        log, order, check: as :func:`matrix_llm.info.mce`. ``"taylor"`` (the Matrix-SSL code's series of order
            ``order`` around ``I``) is evaluated from traces of powers of the ``n_q x n_q`` Gram (``Q - I`` is a
            low-rank matrix plus ``(mu - 1) I``); ``check`` raises when the series diverges.

    Returns:
        ``(*)`` tensor in the promoted dtype of the inputs (float64 math for float64 input, float32 otherwise,
        autocast off). Cost ``O(n_p n_q d + n_q³)`` when ``n_q < d``; the dense path otherwise.

    Gradient: exact, through a Daleckii–Krein backward on the ``n_q x n_q`` side; finite at repeated
    eigenvalues.
    """
    zp, zq = _check_features("feature_mce", zp, zq)
    log = _check_choice("feature_mce", "log", log, ("eigh", "taylor"))
    mu = _check_mu("feature_mce", mu, log)
    lamb = _check_lamb("feature_mce", lamb)
    order = _check_order("feature_mce", order)
    out_dtype = _out_dtype(zp.dtype, zq.dtype)
    with no_autocast(zq):
        work = work_dtype(zp.dtype, zq.dtype)
        ap = _thin(zp.to(work), center=center, normalize=normalize)
        aq = _thin(zq.to(work), center=center, normalize=normalize)
        cross, _, tr_q = _cross_and_traces(ap, aq, lamb, mu, log, order, bool(check))
        loss = -cross + tr_q if trace_term else -cross
        return loss.to(out_dtype)


def feature_mce_symmetric(
    za: torch.Tensor,
    zb: torch.Tensor,
    *,
    lamb: float,
    mu: float,
    center: bool = True,
    normalize: bool = True,
    trace_term: bool = True,
) -> torch.Tensor:
    r"""``½ [feature_mce(za, zb) + feature_mce(zb, za)]`` (exact log), cheaper than the two calls: both directions
    share the cross product ``K = A_a A_bᵀ`` and one eigendecomposition per side (``B = Uᵀ K V`` in the two
    eigenbases carries both traces, :class:`_ThinSymmetricCross`; timed in bench/clip_step.py).

    Args:
        za, zb: ``(*, n_a, d)`` and ``(*, n_b, d)`` rows (``P_a = C(za) + lamb·I``, ``Q_a = C(za) + mu·I``, the
            same for ``zb``); batch dims broadcast.
        lamb, mu, center, normalize, trace_term: as :func:`feature_mce`.

    Returns:
        ``(*)`` tensor, dtypes as :func:`feature_mce`. When either side has ``n >= d`` rows, the two
        :func:`feature_mce` calls (the dense path); otherwise ``O(n_a n_b d + n_a³ + n_b³)``.

    Gradient: exact (Daleckii–Krein on both ``n x n`` sides), finite at repeated eigenvalues.
    """
    za, zb = _check_features("feature_mce_symmetric", za, zb)
    mu = _check_positive("feature_mce_symmetric", "mu", mu)
    lamb = _check_lamb("feature_mce_symmetric", lamb)
    options = dict(lamb=lamb, mu=mu, center=center, normalize=normalize, trace_term=trace_term)
    d = za.shape[-1]
    if max(za.shape[-2], zb.shape[-2]) >= d:
        return 0.5 * (feature_mce(za, zb, **options) + feature_mce(zb, za, **options))
    out_dtype = _out_dtype(za.dtype, zb.dtype)
    with no_autocast(za):
        work = work_dtype(za.dtype, zb.dtype)
        aa = _thin(za.to(work), center=center, normalize=normalize)
        ab = _thin(zb.to(work), center=center, normalize=normalize)
        batch = torch.broadcast_shapes(aa.shape[:-2], ab.shape[:-2])
        aa, ab = aa.expand(*batch, *aa.shape[-2:]), ab.expand(*batch, *ab.shape[-2:])
        # ½ [-(tr(P_b log Q_a) + tr(P_a log Q_b)) (+ tr Q_a + tr Q_b)]; tr(P log Q) = log μ · tr P + thin part
        kappa = math.log(mu) - 1 if trace_term else math.log(mu)
        value = _ThinSymmetricCross.apply(aa, ab, mu, lamb, kappa)
        loss = -0.5 * value - lamb * d * math.log(mu) + (mu * d if trace_term else 0.0)
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
        ap = _thin(zp.to(work), center=center, normalize=normalize)
        aq = _thin(zq.to(work), center=center, normalize=normalize)
        cross, tr_p, tr_q = _cross_and_traces(ap, aq, lamb, mu)
        d, n_p = ap.shape[-1], ap.shape[-2]
        if n_p < d:  # eigenvalues of P: those of G_p + lamb, and lamb (d - n_p times)
            e = _eigvalsh(ap @ ap.mT).clamp_min(0) + lamb
            rest = (d - n_p) * lamb * math.log(lamb) if lamb > 0 else 0.0
            plogp = _xlogx_sum(e) + rest
        else:
            plogp = _xlogx_sum(_eigvalsh(ap.mT @ ap + lamb * torch.eye(d, dtype=work, device=ap.device)))
        return (plogp - cross - tr_p + tr_q).to(out_dtype)


def feature_uniformity(
    zp: torch.Tensor,
    zq: torch.Tensor,
    *,
    lamb: float,
    mu: float,
    center: bool = True,
    normalize: bool = True,
    symmetric: bool = True,
    trace_term: bool = True,
    log: str = "eigh",
    order: int = 4,
    check: bool = True,
) -> torch.Tensor:
    r"""Matrix-SSL's matrix uniformity ``MCE(λ I, C(zp, zq) + μ I)`` of the cross-covariance
    ``C(zp, zq) = Ẑ_pᵀ H Ẑ_q / m`` of two ``(*, m, d)`` row matrices, from the ``m`` side when ``2m < d``.

    - ``log="eigh"`` needs a symmetric matrix: ``symmetric=True`` uses ``S = (C + Cᵀ)/2`` (the ``exact`` preset's
      surrogate). With ``B = [A_p; A_q]`` (``2m x d``) and ``J = ½[[0, I], [I, 0]]``, ``S = Bᵀ J B``, so
      ``tr log(S + μI) = d log μ + log det(I + J B Bᵀ/μ)`` (Sylvester's determinant identity, ``2m x 2m``).
    - ``log="taylor"`` is the official code's series on ``C`` itself (``symmetric=False``) or on ``S``; the traces
      of powers of ``C`` are those of the ``m x m`` matrix ``A_q A_pᵀ``.

    Returns ``-λ tr log(Q) (+ tr Q)``, equal to :func:`matrix_llm.info.mce` of the dense matrices; raises when
    ``Q`` is not positive definite (``eigh``) or the series diverges (``taylor`` with ``check``).
    """
    fn = "feature_uniformity"
    zp, zq = _check_features(fn, zp, zq)
    if zp.shape[-2] != zq.shape[-2]:
        raise ValueError(
            f"{fn}: `zp` and `zq` must be paired rows (the same m); got {zp.shape[-2]} and {zq.shape[-2]}"
        )
    log = _check_choice(fn, "log", log, ("eigh", "taylor"))
    mu = _check_mu(fn, mu, log)
    lamb = _check_lamb(fn, lamb)
    order = _check_order(fn, order)
    if log == "eigh" and not symmetric:
        raise ValueError(f"{fn}: log='eigh' needs symmetric=True (the exact log of a symmetric matrix)")
    out_dtype = _out_dtype(zp.dtype, zq.dtype)
    with no_autocast(zq):
        work = work_dtype(zp.dtype, zq.dtype)
        ap = _thin(zp.to(work), center=center, normalize=normalize)
        aq = _thin(zq.to(work), center=center, normalize=normalize)
        m, d = ap.shape[-2], ap.shape[-1]
        tr_c = (ap * aq).sum((-2, -1))  # tr C = tr S
        tr_q = tr_c + mu * d
        if 2 * m >= d:  # the d x d side is no larger: the dense path
            c = ap.mT @ aq
            q = (0.5 * (c + c.mT) if symmetric else c) + mu * torch.eye(d, dtype=work, device=ap.device)
            p = lamb * torch.eye(d, dtype=work, device=ap.device)
            loss = mce(p, q, log=log, order=order, trace_term=trace_term, check=check)
            return loss.to(out_dtype)
        if symmetric:  # S = Bᵀ J B with B = [A_p; A_q]: the 2m x 2m matrix J B Bᵀ has S's nonzero spectrum
            b = torch.cat([ap, aq], dim=-2)
            gram = b @ b.mT
            small = 0.5 * torch.cat([gram[..., m:, :], gram[..., :m, :]], dim=-2)  # J B Bᵀ
        else:
            small = aq @ ap.mT  # m x m, the nonzero spectrum of C = A_pᵀ A_q
        if log == "eigh":
            sign, logabsdet = torch.linalg.slogdet(
                torch.eye(2 * m, dtype=work, device=ap.device) + small / mu
            )
            if check and bool((sign <= 0).any()):
                raise ValueError(f"{fn}: C_sym + mu I is not positive definite; shift it by a larger mu")
            trace_log = d * math.log(mu) + logabsdet
        else:
            if check:
                _check_taylor_radius(fn, small, mu - 1.0)
            _, t = _power_traces(small, None, order)
            trace_log = _taylor_trace(
                torch.full_like(tr_c, float(d)), [torch.zeros_like(tr_c)] * order, t, 1.0, mu - 1.0, order
            )
        loss = -lamb * trace_log
        if trace_term:
            loss = loss + tr_q
        return loss.to(out_dtype)

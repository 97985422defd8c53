"""Matrix logarithm (exact and Taylor), matrix cross-entropy and matrix KL divergence."""

from __future__ import annotations

import torch

from ._spectral import (
    _check_choice,
    _check_order,
    _check_pair,
    _check_square,
    _eigvalsh,
    _logm_eigh,
    _out_dtype,
    _taylor_log,
    _trace,
    _trace_p_logm,
    _xlogx_sum,
    no_autocast,
    work_dtype,
)

__all__ = ["matrix_log", "mce", "mkl", "taylor_log"]

_LOG_METHODS = ("eigh", "taylor")


def matrix_log(q: torch.Tensor, *, method: str = "eigh", order: int = 4, check: bool = True) -> torch.Tensor:
    r"""Matrix logarithm of a positive-definite matrix.

    ``method="eigh"`` (exact): ``log Q = V diag(log w) Vᵀ`` with ``(w, V) = eigh((Q + Qᵀ)/2)``. ``Q`` is assumed
    symmetric positive definite (add ``mu I`` first): with ``check=True`` a ``ValueError`` is raised when an
    eigenvalue is ``<= 0``; with ``check=False`` eigenvalues below ``eps · λ_max`` are clamped there.

    ``method="taylor"``: the order-``order`` series around ``I`` (:func:`taylor_log`, with its convergence
    check); ``Q`` is used as given and may be non-symmetric.

    Args:
        q: ``(*, d, d)``.
        method: ``"eigh"`` or ``"taylor"``.
        order: Taylor order (ignored by ``"eigh"``).
        check: ``"eigh"``: raise unless ``q`` is positive definite; ``"taylor"``: raise unless the spectral radius
            of ``q - I`` is ``< 1``.

    Returns:
        ``(*, d, d)``, dtype of ``q`` (float64 math for float64, else float32; autocast off).

    Gradient (``eigh``): custom Daleckii–Krein backward, ``grad_Q = V (L ∘ (Vᵀ G V)) Vᵀ`` with
    ``L_ij = (log w_i - log w_j)/(w_i - w_j)`` and ``L_ii = 1/w_i``: finite and exact at repeated eigenvalues
    (e.g. ``Q = c I``), unlike autograd through ``torch.linalg.eigh``. First-order only (no double backward).

    References:
        [0] Ju. L. Daleckii, S. G. Krein, "Integration and differentiation of functions of Hermitian operators",
            1965; see also R. Bhatia, "Matrix Analysis", Thm. V.3.3.
    """
    q = _check_square("matrix_log", "q", q)
    method = _check_choice("matrix_log", "method", method, _LOG_METHODS)
    order = _check_order("matrix_log", order)
    with no_autocast(q):
        qw = q.to(work_dtype(q.dtype))
        if method == "eigh":
            out = _logm_eigh(qw, "matrix_log" if check else None)
        else:
            out = _taylor_log(qw, order, bool(check), "matrix_log")
        return out.to(q.dtype)


def taylor_log(q: torch.Tensor, *, order: int = 4, check: bool = True) -> torch.Tensor:
    r"""Truncated Taylor series of ``log Q`` around ``I`` (the official Matrix-SSL / MEC / RelationMatch log).

    .. math::
        \log Q \approx \sum_{k=1}^{\text{order}} \frac{(-1)^{k+1}}{k} (Q - I)^k

    evaluated by Horner's rule (``order - 1`` matmuls). ``Q`` is used as given (no symmetrisation): the
    Matrix-SSL uniformity term passes a non-symmetric cross-covariance.

    The series converges only when the spectral radius of ``Q - I`` is below 1 (eigenvalues of ``Q`` in the disc
    ``|λ - 1| < 1``; for symmetric ``Q``: in ``(0, 2)``). With ``check=True`` (default) this is verified without
    autograd: first the cheap bound ``||Q - I||_F < 1``; if that fails, the exact radius from ``eigvalsh``
    (symmetric ``Q``) or ``torch.linalg.eigvals`` (general ``Q``). A ``ValueError`` is raised when the radius is
    ``>= 1``. The check synchronises with the device; ``check=False`` skips it. The ``mu I`` shift (Matrix-SSL)
    and the ``lambda`` warm-up (MEC) exist to keep the spectrum inside this region.

    Args:
        q: ``(*, d, d)``.
        order: number of series terms, ``>= 1``.
        check: verify the convergence condition (raises ``ValueError``).

    Returns:
        ``(*, d, d)``, dtype of ``q`` (half / bfloat16 computed in float32; autocast off).

    Gradient: plain autograd through the matmuls (always finite). Inside the region the truncation error is
    about ``ρ^{order+1}/(order+1)``; near ``ρ = 1`` it is large even when the check passes.
    """
    q = _check_square("taylor_log", "q", q)
    order = _check_order("taylor_log", order)
    with no_autocast(q):
        return _taylor_log(q.to(work_dtype(q.dtype)), order, bool(check), "taylor_log").to(q.dtype)


def mce(
    p: torch.Tensor,
    q: torch.Tensor,
    *,
    log: str = "eigh",
    order: int = 4,
    trace_term: bool = True,
    check: bool = True,
) -> torch.Tensor:
    r"""Matrix cross-entropy ``MCE(P, Q) = -tr(P log Q) + tr(Q)`` (docs/formulations.md).

    .. math::
        \operatorname{MCE}(P, Q) = -\operatorname{tr}(P \log Q) + \operatorname{tr} Q
        = \operatorname{ME}(P) + \operatorname{MKL}(P \,\|\, Q)

    ``trace_term=False`` drops ``tr(Q)``, as the official Matrix-SSL code does (``mce_loss_func``); note that this
    changes the gradient when ``Q`` depends on parameters.

    Args:
        p: ``(*, d, d)`` target matrix (usually PSD, often detached). Batch dims broadcast with ``q``'s.
        q: ``(*, d, d)`` positive-definite matrix (shift by ``mu I``).
        log: ``"eigh"`` (exact; ``q`` symmetrised) or ``"taylor"`` (series around ``I`` of order ``order``;
            ``q`` used as given, may be non-symmetric, see :func:`taylor_log`).
        order: Taylor order for ``log="taylor"``.
        trace_term: add ``tr(Q)``.
        check: raise ``ValueError`` when ``log="eigh"`` and ``Q`` is not positive definite (free: ``eigh``
            synchronises anyway; with ``check=False`` eigenvalues are clamped at ``eps · λ_max``), or when
            ``log="taylor"`` and the spectral radius of ``Q - I`` is ``>= 1``.

    Returns:
        ``(*)`` tensor, the promoted dtype of ``p`` and ``q``. Computed in float64 when either is float64, else
        float32; autocast disabled.

    Gradient: ``d/dP = -log Q``. ``d/dQ`` via the Daleckii–Krein backward for ``log="eigh"`` (finite and exact at
    repeated eigenvalues: at ``Q = c I`` the gradient of ``tr(P log Q)`` is ``sym(P)/c``); plain autograd through
    the matmuls for ``log="taylor"``.

    Example:
        >>> mce(torch.diag(torch.tensor([.2, .3, .5], dtype=torch.float64)),
        ...     torch.diag(torch.tensor([.1, .6, .3], dtype=torch.float64)))
        tensor(2.2158, dtype=torch.float64)

    References:
        [0] Y. Zhang et al., "Matrix Information Theory for Self-Supervised Learning", ICML 2024,
            arXiv:2305.17326; code: yifanzhang-pro/Matrix-SSL.
        [1] F. Bach, "Information theory with kernel methods", IEEE TIT 2022.
    """
    p, q = _check_pair("mce", "p", p, "q", q)
    log = _check_choice("mce", "log", log, _LOG_METHODS)
    order = _check_order("mce", order)
    out_dtype = _out_dtype(p.dtype, q.dtype)
    with no_autocast(q):
        work = work_dtype(p.dtype, q.dtype)
        pw, qw = p.to(work), q.to(work)
        if log == "eigh":
            cross = _trace_p_logm(pw, qw, "mce" if check else None)
        else:
            cross = (pw * _taylor_log(qw, order, bool(check), "mce").mT).sum((-2, -1))
        loss = -cross
        if trace_term:
            loss = loss + _trace(qw)
        return loss.to(out_dtype)


def mkl(p: torch.Tensor, q: torch.Tensor, *, check: bool = True) -> torch.Tensor:
    r"""Matrix KL divergence (von Neumann relative entropy, Bregman form), exact path.

    .. math::
        \operatorname{MKL}(P \,\|\, Q) = \operatorname{tr}(P \log P - P \log Q - P + Q) \;\ge 0

    zero iff ``P = Q``. ``MCE(P, Q) = ME(P) + MKL(P || Q)``.

    Args:
        p: ``(*, d, d)`` PSD (symmetrised; ``0 log 0 = 0``).
        q: ``(*, d, d)`` positive definite (symmetrised).
        check: raise ``ValueError`` if ``q`` has an eigenvalue ``<= 0`` (else clamp at ``eps · λ_max``).

    Returns:
        ``(*)`` tensor, promoted dtype of ``p`` and ``q`` (float64 math for float64, else float32; autocast off).

    Gradient: ``tr(P log P)`` through ``eigvalsh`` (stable); ``tr(P log Q)`` through the Daleckii–Krein backward
    of :func:`matrix_log` (finite at repeated eigenvalues). For singular ``P`` the gradient wrt ``P`` is finite but
    only a subgradient on its null space.
    """
    p, q = _check_pair("mkl", "p", p, "q", q)
    out_dtype = _out_dtype(p.dtype, q.dtype)
    with no_autocast(q):
        work = work_dtype(p.dtype, q.dtype)
        pw, qw = p.to(work), q.to(work)
        plogp = _xlogx_sum(_eigvalsh(pw))
        plogq = _trace_p_logm(pw, qw, "mkl" if check else None)
        return (plogp - plogq - _trace(pw) + _trace(qw)).to(out_dtype)

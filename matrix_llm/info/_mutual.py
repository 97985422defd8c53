"""Matrix mutual information and the neural-collapse ratios MIR / HDR (Song et al., ICML 2024)."""

from __future__ import annotations

import torch

from ._spectral import (
    _check_alpha,
    _check_pair,
    _eigvalsh,
    _entropy_from_eigvals,
    _out_dtype,
    no_autocast,
    work_dtype,
)

__all__ = ["UndefinedRatioError", "hdr", "mir", "mir_hdr", "mutual_information"]


class UndefinedRatioError(ValueError):
    """MIR or HDR is 0/0: an entropy in the denominator is 0 (a rank-1 Gram, the C = 2 simplex ETF).

    A ``ValueError``; a caller that reports a collapsed representation instead of failing catches this one alone.
    """


def _three_entropies(fn: str, k1: torch.Tensor, k2: torch.Tensor, alpha: float, *, joint: bool = True):
    """``H(k1), H(k2), H(k1 ∘ k2)`` (the last ``None`` unless ``joint``) and the output dtype."""
    k1, k2 = _check_pair(fn, "k1", k1, "k2", k2)
    alpha = _check_alpha(fn, alpha)
    out_dtype = _out_dtype(k1.dtype, k2.dtype)
    work = work_dtype(k1.dtype, k2.dtype)
    with no_autocast(k1):
        a, b = k1.to(work), k2.to(work)
        h1 = _entropy_from_eigvals(_eigvalsh(a), alpha)
        h2 = _entropy_from_eigvals(_eigvalsh(b), alpha)
        h12 = _entropy_from_eigvals(_eigvalsh(a * b), alpha) if joint else None
    return h1, h2, h12, out_dtype


def _mir_from(fn: str, h1: torch.Tensor, h2: torch.Tensor, h12: torch.Tensor) -> torch.Tensor:
    denom = torch.minimum(h1, h2)
    _nonzero_denominator(fn, denom, "min(H(k1), H(k2))")
    return (h1 + h2 - h12) / denom


def _hdr_from(fn: str, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
    denom = torch.maximum(h1, h2)
    _nonzero_denominator(fn, denom, "max(H(k1), H(k2))")
    return (h1 - h2).abs() / denom


def _nonzero_denominator(fn: str, denom: torch.Tensor, what: str) -> None:
    tol = 10 * torch.finfo(denom.dtype).eps
    with torch.no_grad():
        bad = denom <= tol
        if bool(bad.any()):
            raise UndefinedRatioError(
                f"{fn}: {what} is 0 (up to {tol:.1e}) for {int(bad.sum())} of {bad.numel()} input pair(s), so the "
                "ratio is 0/0 and undefined (e.g. rank-1 Grams, or the C=2 simplex ETF whose entropy log(C-1) is 0). "
                "Use mutual_information(...) or guard the call."
            )


def mutual_information(k1: torch.Tensor, k2: torch.Tensor, *, alpha: float = 1.0) -> torch.Tensor:
    r"""Matrix mutual information ``I(K1; K2) = H(K1) + H(K2) - H(K1 ∘ K2)`` (``∘`` = Hadamard product).

    ``H`` is :func:`~matrix_llm.info.entropy` of order ``alpha``: every matrix is trace-normalised. The inputs are
    meant to be Grams with unit diagonal (e.g. :func:`~matrix_llm.info.gram` of row-normalised features and of
    the classifier rows); then ``K/n`` and ``K/tr K`` coincide (N1 = N2) and ``K1 ∘ K2`` again has
    unit diagonal and is PSD (Schur product theorem). This is **not checked**; for other PSD inputs the value is
    the trace-normalised (N2) definition.

    Args:
        k1, k2: ``(*, n, n)`` PSD matrices, batch dims broadcast.
        alpha: Rényi order ``> 0`` (Information Flow uses ``alpha=2``).

    Returns:
        ``(*)`` tensor, promoted dtype of ``k1``/``k2`` (float64 math for float64, else float32; autocast off).

    Gradient: three ``eigvalsh`` calls; stable at repeated eigenvalues.

    Example: for the ``C``-class simplex ETF Gram ``G``, ``I(G; G) = log(C-1)/(C-1) + (C-2) log(C-2)/(C-1)``.

    References:
        [0] L. G. Sanchez Giraldo, M. Rao, J. C. Principe, IEEE TIT 61(1), 2015.
        [1] K. Song, Z. Tan, B. Zou, H. Ma, W. Huang, "Unveiling the Dynamics of Information Interplay in
            Supervised Learning", ICML 2024 (PMLR 235:46156-46167; arXiv:2406.03999).
    """
    h1, h2, h12, out_dtype = _three_entropies("mutual_information", k1, k2, alpha)
    return (h1 + h2 - h12).to(out_dtype)


def mir(k1: torch.Tensor, k2: torch.Tensor, *, alpha: float = 1.0) -> torch.Tensor:
    r"""Mutual-information ratio ``MIR = I(K1; K2) / min(H(K1), H(K2))`` (Song et al. 2024).

    Inputs as :func:`mutual_information` (unit-diagonal Grams, e.g. ``F Fᵀ`` of features and ``W Wᵀ`` of the
    matching classifier rows). At neural collapse with ``C`` classes,
    ``MIR = 1/(C-1) + (C-2) log(C-2) / ((C-1) log(C-1))`` (0.952350782540 for ``C = 10``).

    Raises:
        UndefinedRatioError: (a ``ValueError``) if ``min(H1, H2)`` is 0 for any batch item (0/0, e.g.
            ``C = 2``). The check synchronises with the device.

    Returns / gradient: as :func:`mutual_information` (a ratio of entropies; differentiable).
    """
    h1, h2, h12, out_dtype = _three_entropies("mir", k1, k2, alpha)
    return _mir_from("mir", h1, h2, h12).to(out_dtype)


def hdr(k1: torch.Tensor, k2: torch.Tensor, *, alpha: float = 1.0) -> torch.Tensor:
    r"""Entropy-difference ratio ``HDR = |H(K1) - H(K2)| / max(H(K1), H(K2))`` (Song et al. 2024).

    0 at neural collapse (features and heads form the same simplex ETF). Inputs as :func:`mutual_information`.

    Raises:
        UndefinedRatioError: (a ``ValueError``) if ``max(H1, H2)`` is 0 for any batch item (both matrices
            rank 1: 0/0).

    Returns / gradient: as :func:`mutual_information`; ``|.|`` is not differentiable where ``H1 = H2``.
    """
    h1, h2, _, out_dtype = _three_entropies("hdr", k1, k2, alpha, joint=False)
    return _hdr_from("hdr", h1, h2).to(out_dtype)


def mir_hdr(k1: torch.Tensor, k2: torch.Tensor, *, alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(mir(k1, k2), hdr(k1, k2))`` from one set of three eigendecompositions (five when called apart).

    Inputs, errors, dtype and gradient as :func:`mir` and :func:`hdr`.
    """
    h1, h2, h12, out_dtype = _three_entropies("mir_hdr", k1, k2, alpha)
    return _mir_from("mir_hdr", h1, h2, h12).to(out_dtype), _hdr_from("mir_hdr", h1, h2).to(out_dtype)

"""Gram / covariance builders, matrix entropies and effective rank."""

from __future__ import annotations

import torch

from ._spectral import (
    _check_alpha,
    _check_square,
    _check_tensor,
    _eigvalsh,
    _entropy_from_eigvals,
    _rows,
    _trace,
    _xlogx_sum,
    no_autocast,
    work_dtype,
)

__all__ = [
    "covariance",
    "entropy",
    "erank",
    "feature_entropy",
    "gram",
    "matrix_entropy_unnormalized",
    "matrix_nuclear_norm",
]


def gram(z: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    r"""Gram (kernel) matrix of the rows of ``z``.

    .. math::
        K = \hat Z \hat Z^\top, \qquad \hat z_i = z_i / \lVert z_i \rVert_2 \ \text{(if ``normalize``)}

    With ``normalize=True`` the diagonal is 1 (a zero row stays a zero row, with a zero diagonal entry).

    Args:
        z: ``(*, n, d)`` row matrix (rows are samples, docs/formulations.md).
        normalize: L2-normalise the rows first.

    Returns:
        ``(*, n, n)`` tensor, same dtype as ``z`` (half / bfloat16 are computed in float32 and cast back;
        autocast is disabled inside).

    Gradient: plain autograd (matmul and ``F.normalize``), always finite.

    Example:
        >>> gram(torch.eye(3, dtype=torch.float64) * 5)
        tensor([[1., 0., 0.], [0., 1., 0.], [0., 0., 1.]], dtype=torch.float64)
    """
    z = _check_tensor("gram", "z", z)
    with no_autocast(z):
        zw = _rows(z.to(work_dtype(z.dtype)), normalize=normalize, center=False)
        return (zw @ zw.mT).to(z.dtype)


def covariance(z: torch.Tensor, *, center: bool = True, normalize: bool = True) -> torch.Tensor:
    r"""Feature covariance ``Zᵀ H_n Z / n`` of a row matrix (docs/formulations.md; the paper's ``Z Zᵀ / B``).

    .. math::
        C = \frac{1}{n} \hat Z^\top H_n \hat Z, \qquad H_n = I_n - \tfrac{1}{n} \mathbf 1 \mathbf 1^\top

    Rows are L2-normalised first (if ``normalize``), then centred over the rows with ``H_n`` (if ``center``),
    as in the Matrix-SSL code. With unit rows and ``center=False``, ``tr C = 1``.

    Args:
        z: ``(*, n, d)`` row matrix.
        center: centre over the ``n`` rows.
        normalize: L2-normalise the rows first.

    Returns:
        ``(*, d, d)`` tensor, dtype of ``z`` (half / bfloat16 computed in float32 and cast back).

    Gradient: plain autograd, always finite.
    """
    z = _check_tensor("covariance", "z", z)
    n = z.shape[-2]
    if n == 0:
        raise ValueError(f"covariance: expected `z` with at least one row; got shape {tuple(z.shape)}")
    with no_autocast(z):
        zw = _rows(z.to(work_dtype(z.dtype)), normalize=normalize, center=center)
        return (zw.mT @ zw / n).to(z.dtype)


def entropy(k: torch.Tensor, *, alpha: float = 1.0) -> torch.Tensor:
    r"""Von Neumann (``alpha=1``) or Rényi-``alpha`` entropy of the trace-normalised PSD matrix ``k``.

    .. math::
        A = k / \operatorname{tr} k, \qquad
        S_1(A) = -\operatorname{tr}(A \log A) = -\sum_i \lambda_i \log \lambda_i, \qquad
        S_\alpha(A) = \frac{1}{1-\alpha} \log \sum_i \lambda_i^\alpha

    Natural log. ``k`` is symmetrised (``(k + kᵀ)/2``) and assumed PSD; eigenvalues ``<= eps·λ_max`` (zeros
    and round-off) are dropped and the rest renormalised (``0 log 0 = 0``), so rank-deficient input gives finite
    values. The trace used for normalisation is the sum of the kept eigenvalues. An all-zero ``k`` gives 0.

    Args:
        k: ``(*, m, m)`` PSD matrix (a Gram ``K``, ``K/n`` or a covariance: the scale does not matter).
        alpha: Rényi order ``> 0``; ``1`` is von Neumann (the ``alpha -> 1`` limit).

    Returns:
        ``(*)`` tensor of entropies, dtype of ``k``. Computed in float64 for float64 input, else float32, with
        autocast disabled.

    Gradient: through ``eigvalsh`` only (``V diag(g) Vᵀ``), so stable at repeated eigenvalues. For
    rank-deficient ``k`` the gradient is finite (dropped eigenvalues get zero gradient); the true gradient of
    ``-p log p`` is unbounded at ``p = 0``, so treat it as a subgradient there.

    Example:
        >>> entropy(torch.eye(10, dtype=torch.float64))  # log 10
        tensor(2.3026, dtype=torch.float64)

    References:
        [0] L. G. Sanchez Giraldo, M. Rao, J. C. Principe, "Measures of entropy from data using infinitely
            divisible kernels", IEEE TIT 61(1), 2015.
        [1] Y. Zhang et al., "Matrix Information Theory for Self-Supervised Learning", ICML 2024,
            arXiv:2305.17326.
    """
    k = _check_square("entropy", "k", k)
    alpha = _check_alpha("entropy", alpha)
    with no_autocast(k):
        w = _eigvalsh(k.to(work_dtype(k.dtype)))
        return _entropy_from_eigvals(w, alpha).to(k.dtype)


def erank(k: torch.Tensor, *, alpha: float = 1.0) -> torch.Tensor:
    r"""Effective rank ``exp(S_alpha(k / tr k))`` (Roy & Vetterli 2007 for ``alpha=1``).

    Between 1 and ``rank(k)``; equals ``r`` for a rank-``r`` matrix with equal nonzero eigenvalues. With
    ``tr C = 1``: ``erank(C) = d · exp(-MKL(C || I_d/d))`` (docs/formulations.md).

    Args / returns / gradient: as :func:`entropy`.

    References:
        [0] O. Roy, M. Vetterli, "The effective rank: a measure of effective dimensionality", EUSIPCO 2007.
    """
    k = _check_square("erank", "k", k)
    alpha = _check_alpha("erank", alpha)
    with no_autocast(k):
        w = _eigvalsh(k.to(work_dtype(k.dtype)))
        return torch.exp(_entropy_from_eigvals(w, alpha)).to(k.dtype)


def feature_entropy(z: torch.Tensor, *, alpha: float = 1.0, center: bool = False) -> torch.Tensor:
    r"""Matrix entropy of a batch of features, computed on the cheaper side.

    .. math::
        S_\alpha\!\left(\frac{\hat Z \hat Z^\top}{\operatorname{tr}}\right)
        = S_\alpha\!\left(\frac{\hat Z^\top \hat Z}{\operatorname{tr}}\right)

    where ``Ẑ`` has L2-normalised rows. The ``n x n`` Gram and the ``d x d`` covariance share their nonzero
    spectrum, so the eigenvalues are taken of whichever is smaller: cost ``O(n d min(n, d) + min(n, d)^3)``
    instead of ``O(n^3)``.

    ``center=True`` follows Diff-eRank (docs/formulations.md, waltonfuture/Diff-eRank): centre the raw rows over the
    ``n`` samples, **then** L2-normalise them (so ``tr(ẐᵀẐ/n) = 1``). Rows that are zero after centring
    (e.g. ``n = 1`` or identical rows) stay zero instead of becoming NaN. Note that :func:`covariance` uses the
    Matrix-SSL order instead (normalise, then centre).

    Args:
        z: ``(*, n, d)`` row matrix (samples x features).
        alpha: Rényi order ``> 0`` (1 = von Neumann).
        center: centre over rows before normalising (Diff-eRank convention).

    Returns:
        ``(*)`` entropies (natural log), dtype of ``z``; float64 math for float64 input, else float32.
        ``exp`` of it is the effective rank used by Diff-eRank.

    Gradient: through ``eigvalsh`` only; stable at repeated eigenvalues, finite for rank-deficient ``z``.

    Example:
        >>> feature_entropy(torch.eye(4, dtype=torch.float64), center=True).exp()  # Diff-eRank of I_4
        tensor(3.0000, dtype=torch.float64)
    """
    z = _check_tensor("feature_entropy", "z", z)
    alpha = _check_alpha("feature_entropy", alpha)
    n, d = z.shape[-2], z.shape[-1]
    if n == 0 or d == 0:
        raise ValueError(
            f"feature_entropy: expected `z` of shape (..., n, d) with n, d >= 1; got {tuple(z.shape)}"
        )
    with no_autocast(z):
        zw = _rows(z.to(work_dtype(z.dtype)), normalize=True, center=center, center_first=True)
        small = zw @ zw.mT if n <= d else zw.mT @ zw
        return _entropy_from_eigvals(_eigvalsh(small), alpha).to(z.dtype)


def matrix_entropy_unnormalized(p: torch.Tensor) -> torch.Tensor:
    r"""Matrix entropy without trace normalisation, ``ME(P) = -tr(P log P) + tr(P)`` (docs/formulations.md).

    The ``+tr P`` convention makes ``mce(p, q) = matrix_entropy_unnormalized(p) + mkl(p, q)`` hold exactly,
    and ``mce(p, p) = matrix_entropy_unnormalized(p)``. ``ME(I_d/d) = log d + 1``.

    Args:
        p: ``(*, d, d)`` PSD matrix (symmetrised; eigenvalues ``<= eps·λ_max`` count as 0, ``0 log 0 = 0``).

    Returns:
        ``(*)`` tensor, dtype of ``p`` (float64 math for float64, else float32; autocast off).

    Gradient: through ``eigvalsh`` only (``-V diag(log λ) Vᵀ``), stable at repeated eigenvalues; finite (zero
    for dropped eigenvalues) for singular ``p``.
    """
    p = _check_square("matrix_entropy_unnormalized", "p", p)
    with no_autocast(p):
        pw = p.to(work_dtype(p.dtype))
        return (-_xlogx_sum(_eigvalsh(pw)) + _trace(pw)).to(p.dtype)


def matrix_nuclear_norm(z: torch.Tensor) -> torch.Tensor:
    r"""Matrix Nuclear-Norm of a row matrix (Li et al. 2024, arXiv 2410.10672; docs/formulations.md).

    .. math::
        \operatorname{MNN}(Z) = \frac{1}{n} \sum_{j \in \text{top-}D} \lVert \hat Z_{:, j} \rVert_2,
        \qquad D = \min(n, d)

    where ``Ẑ`` is ``z`` centred over its ``n`` rows, then row-normalised (the Diff-eRank convention): the sum of
    the ``D`` largest column norms is the ``L_{1,2}`` proxy of the nuclear norm ``||Ẑ||_*`` that the paper
    uses instead of an SVD. ``0 <= MNN <= sqrt(D / n)`` (the squared column norms sum to ``n``); ``z = I_n``
    gives 1. Rows that are zero after centring (``n = 1``, identical rows) contribute 0, never NaN.

    Args:
        z: ``(*, n, d)`` row matrix (tokens or samples x features).

    Returns:
        ``(*)`` tensor, dtype of ``z`` (float64 math for float64 input, else float32; autocast off).
    """
    z = _check_tensor("matrix_nuclear_norm", "z", z)
    n, d = z.shape[-2], z.shape[-1]
    if n == 0 or d == 0:
        raise ValueError(
            f"matrix_nuclear_norm: expected `z` of shape (..., n, d) with n, d >= 1; got {tuple(z.shape)}"
        )
    with no_autocast(z):
        zw = _rows(z.to(work_dtype(z.dtype)), normalize=True, center=True, center_first=True)
        norms = torch.linalg.vector_norm(zw, dim=-2)  # (*, d) column norms
        return (norms.topk(min(n, d), dim=-1).values.sum(-1) / n).to(z.dtype)

"""Total coding rate (M-MAE / Information Flow)."""

from __future__ import annotations

import math

import torch

from ._spectral import _check_positive, _check_tensor, no_autocast, work_dtype

__all__ = ["tcr"]


def tcr(z: torch.Tensor, *, mu: float = 1.0) -> torch.Tensor:
    r"""Total coding rate ``TCR_mu(Z) = log det(mu I_d + Zᵀ Z)`` (docs/formulations.md), on the cheaper side.

    .. math::
        \log\det(\mu I_d + Z^\top Z) = (d - n) \log \mu + \log\det(\mu I_n + Z Z^\top)

    (Sylvester's determinant identity), so the Cholesky factorisation is of size ``min(n, d)``.
    ``z`` is used as given: normalise its rows first if you want the M-MAE convention. The M-MAE code's
    ``logdet(I_d + (m/d) ZᵀZ)`` equals ``tcr(z, mu=d/m) - d log(d/m)``.

    Args:
        z: ``(*, n, d)`` row matrix.
        mu: shift ``> 0``.

    Returns:
        ``(*)`` tensor, dtype of ``z``. The Gram and the Cholesky factorisation run in float64 for float64 input,
        else float32 (never under autocast: M-MAE's ``logdet`` under AMP is a known pitfall).

    Gradient: through ``torch.linalg.cholesky`` (``mu I + ZZᵀ`` has all eigenvalues ``>= mu``: well conditioned
    for reasonable ``mu``), always finite.

    References:
        [0] Y. Tan et al., "Information Flow in Self-Supervised Learning", ICML 2024, arXiv:2309.17281; code:
            yifanzhang-pro/M-MAE.
        [1] Y. Yu et al., "Learning Diverse and Discriminative Representations via the Principle of Maximal Coding
            Rate Reduction", NeurIPS 2020.
    """
    z = _check_tensor("tcr", "z", z)
    mu = _check_positive("tcr", "mu", mu)
    n, d = z.shape[-2], z.shape[-1]
    with no_autocast(z):
        zw = z.to(work_dtype(z.dtype))
        if n < d:
            g, extra = zw @ zw.mT, (d - n) * math.log(mu)
        else:
            g, extra = zw.mT @ zw, 0.0
        m = g.shape[-1]
        if m == 0:
            return torch.full(z.shape[:-2], d * math.log(mu), dtype=z.dtype, device=z.device)
        a = g + mu * torch.eye(m, dtype=g.dtype, device=g.device)
        chol = torch.linalg.cholesky(a)
        logdet = 2.0 * torch.log(chol.diagonal(dim1=-2, dim2=-1)).sum(-1)
        return (logdet + extra).to(z.dtype)

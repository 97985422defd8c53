"""Total-coding-rate regulariser of M-MAE (Tan et al., ICML 2024; docs/formulations.md)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .. import info
from ..distributed import all_gather_with_grad
from ..info import no_autocast, work_dtype  # the one autocast switch and upcast rule of info/ and losses/
from .base import LossOutput, check_finite_and_range, check_matrix, detached_parts

__all__ = ["TCRLoss"]


class TCRLoss(nn.Module):
    r"""``L = -weight * TCR_mu(Ẑ) = -weight * log det(mu I_d + Ẑᵀ Ẑ)`` on row-normalised features.

    With ``center=True`` the rows are centred after normalisation, ``Ẑᵀ H_n Ẑ`` (the M-MAE code's
    ``centering`` flag). The M-MAE code's ``-logdet(I_d + (m/d) ẐᵀẐ)`` (``m`` = its ``uniformity_mu``) equals
    this loss with ``mu = d/m`` plus the constant ``d log(d/m)``: same gradient (docs/formulations.md). The M-MAE
    README weight is ``lamb = 1e-2`` with ``uniformity_mu = 3``.

    ``second_order=True`` is U-MAE's uniformity instead: ``total = weight * mean((Ẑ Ẑᵀ)²)``, the ``-TCR_mu``
    expansion's only data-dependent term for large ``mu`` (``d log mu + n/mu - ||ẐẐᵀ||²_F / (2 mu²)``), part
    ``uniformity``.

    Args:
        mu: shift ``> 0``.
        weight: multiplier of ``-TCR`` (``total = -weight * tcr``).
        second_order: U-MAE's ``mean((ẐẐᵀ)²)`` instead of the log-determinant.
        center: centre the normalised rows over the batch.
        gather: concatenate the features of all ranks first (:func:`matrix_llm.distributed.all_gather_with_grad`,
            as the M-MAE code does); identity on one process.

    Shapes (``forward``): ``z (n, d)``.

    Returns:
        :class:`LossOutput` with part ``tcr`` (``TCR_mu``, before the sign and weight). Float32 (float64 for
        float64 inputs), autocast off.
    """

    def __init__(
        self,
        *,
        mu: float = 1.0,
        weight: float = 1.0,
        center: bool = False,
        gather: bool = False,
        second_order: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not mu > 0:
            raise ValueError(f"TCRLoss: `mu` must be a number > 0; got {mu!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ValueError(f"TCRLoss: `weight` must be a number; got {weight!r}")
        self.mu = float(mu)
        self.weight = float(weight)
        self.center = bool(center)
        self.gather = bool(gather)
        self.second_order = bool(second_order)

    def extra_repr(self) -> str:
        return (
            f"mu={self.mu}, weight={self.weight}, center={self.center}, gather={self.gather}, "
            f"second_order={self.second_order}"
        )

    def forward(self, z: Tensor) -> LossOutput:
        fn = "TCRLoss"
        check_matrix(fn, "z", z)
        check_finite_and_range(fn, {"z": z})
        dtype = work_dtype(z.dtype)
        z = z.to(dtype)
        if self.gather:
            z = all_gather_with_grad(z)
        if z.shape[0] == 0:
            raise ValueError(f"{fn}: needs at least one row; got z of shape {tuple(z.shape)}")
        with no_autocast(z):
            zn = F.normalize(z, dim=-1)
            if self.center:
                zn = zn - zn.mean(dim=0, keepdim=True)
            if self.second_order:
                uniformity = (zn @ zn.mT).square().mean()
                return LossOutput(total=self.weight * uniformity, parts=detached_parts(uniformity=uniformity))
            tcr = info.tcr(zn, mu=self.mu)
            total = -self.weight * tcr
        return LossOutput(total=total, parts=detached_parts(tcr=tcr))

"""MIR / HDR regulariser between features and classifier heads (Song et al., ICML 2024; docs/formulations.md)."""

from __future__ import annotations

from torch import Tensor, nn

from .. import info
from ..info import no_autocast, work_dtype  # the one autocast switch and upcast rule of info/ and losses/
from .base import (
    LossOutput,
    check_finite_and_range,
    check_labels,
    check_matrix,
    detached_parts,
)

__all__ = ["MIRHDRLoss"]


class MIRHDRLoss(nn.Module):
    r"""``L = -alpha * MIR(F Fᵀ, W_y W_yᵀ) + beta * HDR(F Fᵀ, W_y W_yᵀ)``.

    ``F`` are the row-normalised features of the batch and ``W_y`` the row-normalised classifier rows of their
    labels (both Grams have unit diagonal; :func:`matrix_llm.info.gram`). :func:`matrix_llm.info.mir` is pushed
    up towards its neural-collapse value ``1/(C-1) + (C-2) log(C-2) / ((C-1) log(C-1))`` and
    :func:`matrix_llm.info.hdr` down towards 0 (docs/formulations.md). The direction and the weights are
    [unverified] in the paper; sweep ``alpha, beta`` in ``{0.01, 0.1, 1}``. Gradients reach both the features
    and the head weight.

    Args:
        alpha: weight of ``-MIR`` (``>= 0``).
        beta: weight of ``HDR`` (``>= 0``).

    Shapes (``forward``): ``features (N, d)``, ``head_weight (C, d)``, ``labels (N,)`` long in ``[0, C)``.

    Returns:
        :class:`LossOutput` with parts ``mir`` and ``hdr``. Float32 (float64 for float64 inputs), autocast off.

    Raises:
        ValueError: shape mismatches, NaN/Inf, labels out of range, and (from ``info``) a batch whose Grams have
            zero entropy (``MIR`` is 0/0, e.g. a single class in the batch).
    """

    def __init__(self, *, alpha: float = 0.1, beta: float = 0.1) -> None:
        super().__init__()
        for name, value in (("alpha", alpha), ("beta", beta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"MIRHDRLoss: `{name}` must be a number >= 0; got {value!r}")
        self.alpha = float(alpha)
        self.beta = float(beta)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}"

    def forward(self, features: Tensor, head_weight: Tensor, labels: Tensor) -> LossOutput:
        fn = "MIRHDRLoss"
        check_matrix(fn, "features", features)
        n, d = features.shape
        check_matrix(fn, "head_weight", head_weight, cols=d)
        check_labels(fn, labels, n=n)
        if n < 2:
            raise ValueError(f"{fn}: needs at least 2 samples; got features of shape {(n, d)}")
        check_finite_and_range(fn, {"features": features}, labels, head_weight.shape[0])
        dtype = work_dtype(features.dtype, head_weight.dtype)
        with no_autocast(features):
            k_features = info.gram(features.to(dtype))
            k_heads = info.gram(head_weight.to(dtype)[labels])
            mir, hdr = info.mir_hdr(k_features, k_heads)
            total = -self.alpha * mir + self.beta * hdr
        return LossOutput(total=total, parts=detached_parts(mir=mir, hdr=hdr))

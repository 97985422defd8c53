"""SimCLR's contrastive loss (NT-Xent; Chen et al., ICML 2020), the baseline Matrix-SSL is compared with."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import all_gather_with_grad
from ..info import no_autocast, work_dtype
from .base import LossOutput, check_finite_and_range, check_matrix, detached_parts

__all__ = ["NTXentLoss"]


class NTXentLoss(nn.Module):
    r"""NT-Xent: for each of the ``2m`` projections, the other view of the same image is the positive and the
    ``2m - 2`` other projections of the (global) batch are the negatives:

    ``L = -(1 / 2m) Σ_i log( exp(s(i, i⁺)/τ) / Σ_{k ≠ i} exp(s(i, k)/τ) )``, ``s`` the cosine similarity.

    With ``gather`` (default), the projections of every rank are gathered with gradients
    (:func:`matrix_llm.distributed.all_gather_with_grad`) and every rank computes the loss of the global batch
    (open_clip's ``local_loss=False``): under DDP's gradient averaging the update is the single-process update of
    the concatenated batch (tested with two processes and uneven sizes).

    Args:
        temperature: ``τ > 0`` (SimCLR: 0.1 - 0.5; default 0.2).
        gather: score against the global batch.

    Returns:
        :class:`LossOutput` with ``total`` and the part ``positive_accuracy`` (share of rows whose most similar
        other row is their positive).
    """

    def __init__(self, *, temperature: float = 0.2, gather: bool = True) -> None:
        super().__init__()
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"NTXentLoss: `temperature` must be a number > 0; got {temperature!r}")
        self.temperature, self.gather = float(temperature), bool(gather)

    def forward(self, z1: Tensor, z2: Tensor) -> LossOutput:
        fn = "NTXentLoss"
        check_matrix(fn, "z1", z1)
        m, d = z1.shape
        check_matrix(fn, "z2", z2, rows=m, cols=d)
        check_finite_and_range(fn, {"z1": z1, "z2": z2})
        pairs = torch.stack([z1, z2], 1).to(work_dtype(z1.dtype, z2.dtype))  # (m, 2, d)
        if self.gather:
            pairs = all_gather_with_grad(pairs)  # (M, 2, d): every rank's images, any sizes
        big_m = pairs.shape[0]
        if big_m < 2:
            raise ValueError(f"{fn}: needs at least 2 images (4 views) in the batch; got {big_m}")
        with no_autocast(pairs):
            z = F.normalize(torch.cat([pairs[:, 0], pairs[:, 1]]), dim=-1)  # (2M, d): views 1, then views 2
            logits = z @ z.mT / self.temperature
            logits = logits.masked_fill(torch.eye(2 * big_m, dtype=torch.bool, device=z.device), float("-inf"))
            positives = (torch.arange(2 * big_m, device=z.device) + big_m) % (2 * big_m)
            total = F.cross_entropy(logits, positives)
            accuracy = (logits.argmax(-1) == positives).float().mean()
        return LossOutput(total=total, parts=detached_parts(positive_accuracy=accuracy))

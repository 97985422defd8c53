"""Contrastive losses: SimCLR's NT-Xent (Chen et al., ICML 2020), the baseline Matrix-SSL is compared with, and
CLIP's symmetric image-text InfoNCE (Radford et al., ICML 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import all_gather_no_grad, all_gather_with_grad
from ..info import no_autocast, work_dtype
from .base import LossOutput, check_finite_and_range, check_labels, check_matrix, detached_parts

__all__ = ["CLIPLoss", "NTXentLoss"]


def _view_pairs(fn: str, z1: Tensor, z2: Tensor, gather: bool) -> Tensor:
    """``(M, 2, d)``: the two views' projections row by row in the work dtype, checked, and with ``gather`` those of
    every rank (with gradients, any row counts per rank)."""
    check_matrix(fn, "z1", z1)
    m, d = z1.shape
    check_matrix(fn, "z2", z2, rows=m, cols=d)
    check_finite_and_range(fn, {"z1": z1, "z2": z2})
    pairs = torch.stack([z1, z2], 1).to(work_dtype(z1.dtype, z2.dtype))
    return all_gather_with_grad(pairs) if gather else pairs


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
        pairs = _view_pairs(fn, z1, z2, self.gather)
        big_m = pairs.shape[0]
        if big_m < 2:
            raise ValueError(f"{fn}: needs at least 2 images (4 views) in the batch; got {big_m}")
        with no_autocast(pairs):
            z = F.normalize(torch.cat([pairs[:, 0], pairs[:, 1]]), dim=-1)  # (2M, d): views 1, then views 2
            logits = z @ z.mT / self.temperature
            logits = logits.masked_fill(
                torch.eye(2 * big_m, dtype=torch.bool, device=z.device), float("-inf")
            )
            positives = (torch.arange(2 * big_m, device=z.device) + big_m) % (2 * big_m)
            total = F.cross_entropy(logits, positives)
            accuracy = (logits.argmax(-1) == positives).float().mean()
        return LossOutput(total=total, parts=detached_parts(positive_accuracy=accuracy))


class CLIPLoss(nn.Module):
    r"""CLIP's symmetric InfoNCE (Radford et al., ICML 2021; open_clip's ``ClipLoss``):

    ``L = ½ [CE(s · Î Tᵀ, y) + CE(s · T Îᵀ, y)]``, ``y_i = i``, rows L2-normalised, ``s = exp(logit_scale)``.

    With ``gather`` (default) the features of every rank are gathered with gradients and every rank computes the
    loss of the global batch (open_clip's ``local_loss=False, gather_with_grad=True``), so data-parallel averaging
    gives the single-process gradient of the concatenated batch (tested with two processes).

    With ``caption_keys`` (one integer per pair, equal for pairs with the same caption, comparable across ranks),
    the other pairs of the same caption are left out of both softmaxes: with class-level captions an image is
    not pushed away from its own caption's duplicates, which CLIP and open_clip count as negatives (a batch of
    one caption per pair gives CLIP's loss).

    Shapes (``forward``): ``image_features (N, d)``, ``text_features (N, d)`` (row ``i`` is the caption of image
    ``i``), ``logit_scale`` a scalar tensor (the log of the scale, as ``CLIPModel.logit_scale``),
    ``caption_keys (N,)`` integers or ``None``.

    Returns:
        :class:`LossOutput` with ``total`` and the parts ``infonce`` (the same) and ``contrastive_accuracy`` (share of
        images whose most similar caption is their own; with ``caption_keys``, among the other captions' texts).
    """

    def __init__(self, *, gather: bool = True) -> None:
        super().__init__()
        self.gather = bool(gather)

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        caption_keys: Tensor | None = None,
    ) -> LossOutput:
        fn = "CLIPLoss"
        check_matrix(fn, "image_features", image_features)
        n, d = image_features.shape
        check_matrix(fn, "text_features", text_features, rows=n, cols=d)
        if caption_keys is not None:
            check_labels(fn, caption_keys, n=n, name="caption_keys")
        check_finite_and_range(fn, {"image_features": image_features, "text_features": text_features})
        pairs = torch.stack([image_features, text_features], 1).to(
            work_dtype(image_features.dtype, text_features.dtype)
        )
        if self.gather:
            pairs = all_gather_with_grad(pairs)
            caption_keys = None if caption_keys is None else all_gather_no_grad(caption_keys)
        if pairs.shape[0] < 2:
            raise ValueError(f"{fn}: needs at least 2 image-text pairs in the batch; got {pairs.shape[0]}")
        with no_autocast(pairs):
            images, texts = F.normalize(pairs[:, 0], dim=-1), F.normalize(pairs[:, 1], dim=-1)
            logits = logit_scale.to(pairs.dtype).exp() * images @ texts.mT
            if caption_keys is not None:
                duplicate = caption_keys.unsqueeze(1) == caption_keys.unsqueeze(0)
                logits = logits.masked_fill(duplicate.fill_diagonal_(False), float("-inf"))
            targets = torch.arange(pairs.shape[0], device=pairs.device)
            total = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.mT, targets))
            accuracy = (logits.argmax(-1) == targets).float().mean()
        return LossOutput(total=total, parts=detached_parts(infonce=total, contrastive_accuracy=accuracy))


class BarlowTwinsLoss(nn.Module):
    r"""Barlow Twins (Zbontar et al., ICML 2021): the cross-correlation matrix of the two views' projections,
    each dimension standardised over the (global) batch, pushed to the identity:

    ``C = ẑ1ᵀ ẑ2 / M`` with ``ẑ = (z - mean) / sqrt(var + eps)`` per dimension over the ``M`` rows (a BatchNorm
    without affine parameters, biased variance, as the paper's code), and
    ``L = Σ_i (1 - C_ii)² + λ Σ_i Σ_{j≠i} C_ij²``.

    Not a matrix-information loss itself: the SSL mode runs it beside Matrix-SSL and MEC as a method whose
    redundancy-reduction term the matrix-entropy view explains. With ``gather`` (default) the projections of every rank are gathered with
    gradients first, so the standardisation and ``C`` are those of the global batch (the paper's code gets the
    same with SyncBatchNorm and an all-reduce of ``C``) and data-parallel training takes the single-process step.

    Args:
        lamb: ``λ >= 0``, the weight of the off-diagonal (redundancy-reduction) term; the paper's 5e-3.
        eps: added to the variance (BatchNorm's 1e-5).
        gather: standardise and correlate over the global batch.

    Returns:
        :class:`LossOutput` with ``total`` and the parts ``on_diagonal`` / ``off_diagonal`` (the two sums, the
        latter before ``λ``).
    """

    def __init__(self, *, lamb: float = 5e-3, eps: float = 1e-5, gather: bool = True) -> None:
        super().__init__()
        for name, value, ok in (("lamb", lamb, lambda v: v >= 0), ("eps", eps, lambda v: v > 0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                bound = ">= 0" if name == "lamb" else "> 0"
                raise ValueError(f"BarlowTwinsLoss: `{name}` must be a number {bound}; got {value!r}")
        self.lamb, self.eps, self.gather = float(lamb), float(eps), bool(gather)

    def forward(self, z1: Tensor, z2: Tensor) -> LossOutput:
        fn = "BarlowTwinsLoss"
        pairs = _view_pairs(fn, z1, z2, self.gather)
        big_m = pairs.shape[0]
        if big_m < 2:
            raise ValueError(
                f"{fn}: needs at least 2 images in the batch to standardise over it; got {big_m}"
            )
        with no_autocast(pairs):
            centred = pairs - pairs.mean(0, keepdim=True)
            standard = centred / (centred.square().mean(0, keepdim=True) + self.eps).sqrt()
            c = standard[:, 0].mT @ standard[:, 1] / big_m  # (d, d)
            diagonal = c.diagonal()
            on = (1 - diagonal).square().sum()
            off = c.square().sum() - diagonal.square().sum()
            total = on + self.lamb * off
        return LossOutput(total=total, parts=detached_parts(on_diagonal=on, off_diagonal=off))

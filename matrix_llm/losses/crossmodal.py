"""Cross-modal matrix losses: the matrix-entropy alignment of Song et al. (arXiv 2409.16767) and a matrix
cross-entropy between the image and text covariances of a paired batch (docs/formulations.md).

arXiv 2409.16767: K. Song, Z. Tan, B. Zou, J. Chen, H. Ma, W. Huang, "Exploring Information-Theoretic Metrics
Associated with Neural Collapse in Supervised Training" (2024; the author order of its arXiv listing)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import info
from ..distributed import all_gather_with_grad
from ..info import no_autocast, work_dtype  # the one autocast switch and upcast rule of info/ and losses/
from .base import (
    LossOutput,
    check_finite_and_range,
    check_labels,
    check_matrix,
    detached_parts,
)

__all__ = ["CrossModalEntropyLoss", "CrossModalMCELoss"]


class CrossModalEntropyLoss(nn.Module):
    r"""Mean over the classes in the batch of the matrix entropy of ``[image features of c ; text feature t_c]``.

    For every class ``c`` present in ``labels``, ``G_c`` stacks the image features with label ``c`` and the
    text feature of class ``c`` (``n_c + 1`` rows); the loss is

    ``L = mean_c H(Ĝ_c Ĝ_cᵀ / tr)``

    with ``Ĝ_c`` row-normalised and ``H`` the von Neumann entropy (:func:`matrix_llm.info.feature_entropy`,
    computed on the cheaper of the Gram and covariance sides). Low entropy means the image features of a class
    collapse onto its text embedding: ``H = 0`` when they all point along ``t_c``, ``log(n_c + 1)`` when all
    rows are orthogonal. This is matrix_llm's [proposal] loss from the reference implementation's metric
    (docs/formulations.md), not a published training objective.

    Args:
        normalize: divide each class's entropy by ``log(n_c + 1)`` (the "normalised MIE" of the reference
            implementation, docs/formulations.md), so every class contributes a value in ``[0, 1]``.

    Shapes (``forward``): ``image_features (N, d)``, ``text_features (C, d)`` (one row per class),
    ``labels (N,)`` long in ``[0, C)``.

    Returns:
        :class:`LossOutput` with ``total`` = the mean entropy and parts ``entropy`` (the same, detached) and
        ``num_classes`` (classes present, float). Float32 (float64 for float64 inputs), autocast off.

    Cost: one small eigendecomposition per class present (a Python loop over classes; one device sync to
    find them).
    """

    def __init__(self, *, normalize: bool = False) -> None:
        super().__init__()
        self.normalize = bool(normalize)

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}"

    def _pairs(self, images: Tensor, texts: Tensor, labels: Tensor, *, num_classes: int) -> LossOutput:
        """Every class has one image: ``G = [i ; t]`` has the Gram ``[[1, c], [c, 1]]`` (``c`` the cosine), whose
        trace-normalised eigenvalues are ``(1 ± c) / 2``; ``H = -Σ p log p`` over them (``0 log 0 = 0``)."""
        cos = (F.normalize(images, dim=-1) * F.normalize(texts[labels], dim=-1)).sum(-1).clamp(-1.0, 1.0)
        p = torch.stack([(1 + cos) / 2, (1 - cos) / 2])
        h = -torch.where(p > 0, p * p.clamp(min=torch.finfo(p.dtype).tiny).log(), torch.zeros_like(p)).sum(0)
        total = (h / math.log(2) if self.normalize else h).mean()
        count = torch.tensor(float(num_classes), dtype=total.dtype, device=total.device)
        return LossOutput(total=total, parts=detached_parts(entropy=total, num_classes=count))

    def forward(self, image_features: Tensor, text_features: Tensor, labels: Tensor) -> LossOutput:
        fn = "CrossModalEntropyLoss"
        check_matrix(fn, "image_features", image_features)
        n, d = image_features.shape
        check_matrix(fn, "text_features", text_features, cols=d)
        check_labels(fn, labels, n=n)
        if n == 0:
            raise ValueError(f"{fn}: needs at least one image feature; got image_features of shape {(n, d)}")
        num_classes = text_features.shape[0]
        check_finite_and_range(
            fn, {"image_features": image_features, "text_features": text_features}, labels, num_classes
        )
        dtype = work_dtype(image_features.dtype, text_features.dtype)
        with no_autocast(image_features):
            images, texts = image_features.to(dtype), text_features.to(dtype)
            classes, counts = torch.unique(labels, return_counts=True)
            if bool((counts == 1).all()):  # one image per class (a paired batch): closed form, no loop
                return self._pairs(images, texts, labels, num_classes=len(classes))
            entropies = []
            for c in classes.tolist():
                group = torch.cat([images[labels == c], texts[c : c + 1]], dim=0)
                h = info.feature_entropy(group)
                entropies.append(h / math.log(group.shape[0]) if self.normalize else h)
            total = torch.stack(entropies).mean()
        return LossOutput(
            total=total,
            parts=detached_parts(
                entropy=total,
                num_classes=torch.tensor(float(len(entropies)), dtype=dtype, device=total.device),
            ),
        )


class CrossModalMCELoss(nn.Module):
    r"""Matrix cross-entropy between the feature covariances of the two modalities of a paired batch, both ways:

    ``L = ½ [MCE(C(T) + μI, C(I) + μI) + MCE(C(I) + μI, C(T) + μI)]``

    with ``C`` the centred covariance of the row-normalised features (:func:`matrix_llm.info.covariance`) and
    ``MCE(P, Q) = -tr(P log Q) + tr(Q)``, smallest at ``Q = P``: it pulls the two modalities' feature
    distributions (not individual pairs) together, from the cheaper side when the batch is smaller than the
    dimension, both directions sharing one cross product and one eigendecomposition per modality
    (:func:`matrix_llm.info.feature_mce_symmetric`). [proposal] matrix_llm's term, documented in
    docs/formulations.md.

    Args:
        mu: shift ``> 0`` of both covariances.
        gather: features of every rank first (with gradients).

    Shapes (``forward``): ``image_features (N, d)``, ``text_features (M, d)``.

    Returns:
        :class:`LossOutput` with the part ``mce``.
    """

    def __init__(self, *, mu: float = 0.5, gather: bool = True) -> None:
        super().__init__()
        if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not mu > 0:
            raise ValueError(f"CrossModalMCELoss: `mu` must be a number > 0; got {mu!r}")
        self.mu, self.gather = float(mu), bool(gather)

    def forward(self, image_features: Tensor, text_features: Tensor) -> LossOutput:
        fn = "CrossModalMCELoss"
        check_matrix(fn, "image_features", image_features)
        check_matrix(fn, "text_features", text_features, cols=image_features.shape[1])
        check_finite_and_range(fn, {"image_features": image_features, "text_features": text_features})
        dtype = work_dtype(image_features.dtype, text_features.dtype)
        images, texts = image_features.to(dtype), text_features.to(dtype)
        if self.gather:
            images, texts = all_gather_with_grad(images), all_gather_with_grad(texts)
        if min(images.shape[0], texts.shape[0]) < 2:
            raise ValueError(
                f"{fn}: needs at least 2 rows of each modality; got {images.shape[0]} and {texts.shape[0]}"
            )
        with no_autocast(images):
            total = info.feature_mce_symmetric(images, texts, lamb=self.mu, mu=self.mu)
        return LossOutput(total=total, parts=detached_parts(mce=total))

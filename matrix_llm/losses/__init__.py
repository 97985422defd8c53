"""Loss modules: ``nn.Module``s that bind hyperparameters to :mod:`matrix_llm.info` functions.

Every ``forward`` takes tensors (never batches or model outputs) and returns a :class:`LossOutput`
``(total, parts)``. Select a loss by name through :data:`LOSSES`:

=====================  ===============================  ==========================================
name                   class                            forward
=====================  ===============================  ==========================================
``matrix_ssl``         :class:`MatrixSSLLoss`           ``(z1, z2, p1, p2)``
``mec``                :class:`MECLoss`                 ``(z1, z2, p1, p2)``
``nt_xent``            :class:`NTXentLoss`              ``(z1, z2)``
``barlow_twins``       :class:`BarlowTwinsLoss`         ``(z1, z2)``
``clip``               :class:`CLIPLoss`                ``(image_features, text_features, logit_scale)``
``crossmodal_mce``     :class:`CrossModalMCELoss`       ``(image_features, text_features)``
``token_mce``          :class:`TokenMCELoss`            ``(hidden, labels, head_weight, logits=None)``
``crossmodal_entropy`` :class:`CrossModalEntropyLoss`   ``(image_features, text_features, labels)``
``mir_hdr``            :class:`MIRHDRLoss`              ``(features, head_weight, labels)``
``tcr``                :class:`TCRLoss`                 ``(z)``
=====================  ===============================  ==========================================

This package imports only torch, :mod:`matrix_llm.info` and :mod:`matrix_llm.distributed`.
"""

from __future__ import annotations

from torch import nn

from .base import LossOutput
from .coding import TCRLoss
from .contrastive import BarlowTwinsLoss, CLIPLoss, NTXentLoss
from .crossmodal import CrossModalEntropyLoss, CrossModalMCELoss
from .neural_collapse import MIRHDRLoss
from .ssl import MatrixSSLLoss, MECLoss
from .token import TokenMCELoss

__all__ = [
    "LOSSES",
    "BarlowTwinsLoss",
    "CLIPLoss",
    "CrossModalEntropyLoss",
    "CrossModalMCELoss",
    "LossOutput",
    "MECLoss",
    "MIRHDRLoss",
    "MatrixSSLLoss",
    "NTXentLoss",
    "TCRLoss",
    "TokenMCELoss",
]

LOSSES: dict[str, type[nn.Module]] = {
    "matrix_ssl": MatrixSSLLoss,
    "mec": MECLoss,
    "nt_xent": NTXentLoss,
    "barlow_twins": BarlowTwinsLoss,
    "clip": CLIPLoss,
    "crossmodal_mce": CrossModalMCELoss,
    "token_mce": TokenMCELoss,
    "crossmodal_entropy": CrossModalEntropyLoss,
    "mir_hdr": MIRHDRLoss,
    "tcr": TCRLoss,
}

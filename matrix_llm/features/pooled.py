"""Pooled features of encoders: one ``(N, d)`` row per example from a vision or text model's hidden states.

- ``"cls"``: the first position (ViT / DeiT / BEiT / DINOv2 class token, BERT ``[CLS]``).
- ``"mean"``: the mean over positions, over the non-padding tokens when an ``attention_mask`` is given (text);
  for vision transformers with a class token, ``skip_first=True`` averages the patch tokens only.
- ``"pooler"``: the model's own ``pooler_output`` (ResNet / ConvNeXt global average pool, BERT's tanh pooler,
  CLIP towers' pooled output).

:func:`default_pooling` picks what a model family is trained with: ``pooler`` when the output has a
``pooler_output`` (convolutional backbones always do), else ``cls``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["POOLINGS", "default_pooling", "pool"]

POOLINGS = ("cls", "mean", "pooler")


def default_pooling(outputs: Any) -> str:
    """``"pooler"`` when ``outputs`` carries a ``pooler_output``, else ``"cls"``."""
    return "pooler" if getattr(outputs, "pooler_output", None) is not None else "cls"


def pool(
    outputs: Any,
    pooling: str | None = None,
    *,
    attention_mask: Tensor | None = None,
    skip_first: bool = False,
) -> Tensor:
    """The ``(N, d)`` pooled features of a model output (``BaseModelOutput*`` or an ``(N, L, d)`` tensor).

    Args:
        outputs: a model output with ``last_hidden_state`` (and maybe ``pooler_output``), or hidden states
            ``(N, L, d)`` (or ``(N, d, H, W)`` feature maps for ``mean``).
        pooling: ``"cls"``, ``"mean"``, ``"pooler"`` or ``None`` (:func:`default_pooling`).
        attention_mask: ``(N, L)``, 1 on real tokens: ``mean`` averages over them only.
        skip_first: ``mean`` over positions ``1..L-1`` (leave out a class token).

    Raises:
        ValueError: an unknown pooling, ``pooler`` for an output without ``pooler_output``, or hidden states of
            an unexpected shape.
    """
    if pooling is None:
        pooling = default_pooling(outputs)
    if pooling not in POOLINGS:
        raise ValueError(f"pool: `pooling` must be one of {POOLINGS}; got {pooling!r}")
    if pooling == "pooler":
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is None:
            raise ValueError(
                f"pool: pooling='pooler' but {type(outputs).__name__} has no pooler_output; use cls or mean"
            )
        return pooled.flatten(1)  # ResNet's pooler_output is (N, C, 1, 1)
    hidden = outputs if isinstance(outputs, Tensor) else getattr(outputs, "last_hidden_state", None)
    if hidden is None:
        raise ValueError(f"pool: {type(outputs).__name__} has no last_hidden_state")
    if hidden.dim() == 4:  # (N, C, H, W) feature maps of a convolutional backbone
        if pooling != "mean":
            raise ValueError(
                "pool: a convolutional feature map (N, C, H, W) has no class token; use mean or pooler"
            )
        return hidden.mean(dim=(2, 3))
    if hidden.dim() != 3:
        raise ValueError(f"pool: expected hidden states (N, L, d); got {tuple(hidden.shape)}")
    if pooling == "cls":
        return hidden[:, 0]
    if skip_first:
        hidden = hidden[:, 1:]
        attention_mask = None if attention_mask is None else attention_mask[:, 1:]
    if attention_mask is None:
        return hidden.mean(dim=1)
    if attention_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"pool: attention_mask must have shape {tuple(hidden.shape[:2])}; got {tuple(attention_mask.shape)}"
        )
    weights = attention_mask.to(hidden.dtype)[..., None]
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=torch.finfo(hidden.dtype).tiny)

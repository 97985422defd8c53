"""Classifier heads of Hugging Face classification models: the head's weight rows and, captured in the same
forward pass, the features the head is applied to (what MIR / HDR and the neural-collapse metrics compare).

:func:`classifier_head` finds the ``nn.Linear`` that maps to ``config.num_labels`` outputs (``classifier`` of
ViT / BERT / ConvNeXt, the ``Linear`` inside ResNet's ``classifier`` ``Sequential``, ``score`` of decoder
classifiers, ``out_proj`` of RoBERTa's head), through PEFT / DDP / DeepSpeed wrappers. Decoder classifiers
(``LlamaForSequenceClassification``, ...) apply their ``score`` head to every position and keep the last real
token's logits: the captured features are that token's hidden state (the rightmost position of the attention
mask), so ``head(features)`` is the model's logits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .modules import unwrap

__all__ = ["CapturedHeadInput", "capture_head_input", "classifier_head"]


def classifier_head(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` with ``out_features == config.num_labels`` (the classification head).

    Raises:
        ValueError: naming what was looked for, when there is no such layer or ``config.num_labels`` is unknown.
    """
    inner = unwrap(model)
    num_labels = getattr(getattr(inner, "config", None), "num_labels", None)
    if not isinstance(num_labels, int):
        raise ValueError(
            f"classifier_head: {type(inner).__name__} has no config.num_labels; a classification model "
            "(AutoModelForImageClassification / AutoModelForSequenceClassification) is needed"
        )
    found = [m for m in inner.modules() if isinstance(m, nn.Linear) and m.out_features == num_labels]
    if not found:
        raise ValueError(
            f"classifier_head: {type(inner).__name__} has no nn.Linear with out_features == config.num_labels "
            f"({num_labels}) (looked for a classifier / score / out_proj head); the matrix metrics of "
            "classification need the head's weight rows"
        )
    return found[-1]


@dataclass
class CapturedHeadInput:
    """Filled by :func:`capture_head_input`: ``features`` is the ``(N, d)`` input of the head."""

    head: nn.Linear
    features: Tensor | None = None


def _last_token(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """``(N, L, d)`` -> ``(N, d)`` at the rightmost attended position (the last position without a mask)."""
    if attention_mask is None:
        return hidden[:, -1]
    length = attention_mask.shape[1]
    last = length - 1 - attention_mask.flip(1).to(torch.long).argmax(1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]


@contextlib.contextmanager
def capture_head_input(model: nn.Module, attention_mask: Tensor | None = None) -> Iterator[CapturedHeadInput]:
    """Record the input of the classifier head during the forward passes inside the block (no second forward):
    ``(N, d)``; for a head applied per token, the last real token's row (``attention_mask``, module docstring)."""
    holder = CapturedHeadInput(head=classifier_head(model))

    def pre_hook(_module, args):
        holder.features = _last_token(args[0], attention_mask) if args[0].dim() == 3 else args[0].flatten(1)

    handle = holder.head.register_forward_pre_hook(pre_hook)
    try:
        yield holder
    finally:
        handle.remove()

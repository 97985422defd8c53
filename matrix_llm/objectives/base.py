"""The objective protocol's return type (see :mod:`matrix_llm.objectives`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["ObjectiveOutput"]


@dataclass
class ObjectiveOutput:
    """What an objective returns for one micro-batch.

    Attributes:
        token_loss: scalar normalised by ``num_items_in_batch`` (additive over micro-batches and ranks), or
            ``None``. Its detached value is logged under ``token_loss_name``.
        batch_loss: scalar per-micro-batch term, already weighted (e.g. ``matrix_loss_weight * mce``), or
            ``None``.
        metrics: detached scalar tensors to log, with the same keys on every call and every rank (``nan``
            where a value is unavailable for this micro-batch).
        outputs: the model outputs (returned by ``compute_loss(..., return_outputs=True)``).
        token_loss_name: log key of ``token_loss``.
    """

    token_loss: Tensor | None
    batch_loss: Tensor | None
    metrics: dict[str, Tensor] = field(default_factory=dict)
    outputs: Any = None
    token_loss_name: str = "lm_loss"

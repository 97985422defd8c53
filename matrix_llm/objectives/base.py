"""The objective protocol's return type (see :mod:`matrix_llm.objectives`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ..losses.base import LossOutput

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

    @property
    def total(self) -> Tensor:
        parts = [t for t in (self.token_loss, self.batch_loss) if t is not None]
        if not parts:
            raise ValueError("ObjectiveOutput: neither token_loss nor batch_loss is set")
        return sum(parts[1:], parts[0])

    def as_loss_output(self) -> LossOutput:
        """The unscaled total and the logged metrics as a :class:`~matrix_llm.losses.base.LossOutput`."""
        return LossOutput(total=self.total, parts={k: v.detach() for k, v in self.metrics.items()})

"""Training objectives: one per mode, each mapping ``(model, batch)`` to an :class:`ObjectiveOutput`.

:class:`~matrix_llm.trainer.MatrixTrainer` is the only training loop; a mode differs only in its objective
(and its data collator). An objective is a callable

    objective(model, inputs, *, base_loss, step) -> ObjectiveOutput

where ``base_loss(model, inputs) -> (loss, outputs)`` is ``transformers.Trainer.compute_loss`` of the
parent class (the model's own loss, normalised by ``num_items_in_batch`` exactly as the Trainer does) and
``step`` the optimizer step in training (``None`` in evaluation). An objective that does not need
``base_loss`` (vision SSL, CLIP) runs the model itself.

The output separates the two kinds of loss because they scale differently under gradient accumulation
(ECOSYSTEM.md §B1): ``token_loss`` is already normalised over the whole accumulated batch and is summed over
micro-batches as it is; ``batch_loss`` is a per-micro-batch quantity (a matrix over the micro-batch's
tokens) that the trainer rescales (see :class:`~matrix_llm.trainer.MatrixTrainer`).

Registry: :data:`OBJECTIVES` maps a mode name to its class; every class has ``from_args(args)``.
"""

from __future__ import annotations

from typing import Any

from .base import ObjectiveOutput
from .lm import LMObjective

__all__ = ["OBJECTIVES", "LMObjective", "ObjectiveOutput", "build_objective"]


OBJECTIVES: dict[str, type] = {"lm": LMObjective}


def build_objective(name: str, args) -> Any:
    """``OBJECTIVES[name].from_args(args)`` with a clear error for unknown names."""
    if name not in OBJECTIVES:
        raise ValueError(f"objective_name: expected one of {sorted(OBJECTIVES)}; got {name!r}")
    return OBJECTIVES[name].from_args(args)

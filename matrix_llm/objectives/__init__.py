"""Training objectives: one per mode, each beside its own configuration, mapping ``(model, batch)`` to an
:class:`ObjectiveOutput`.

:class:`~matrix_llm.trainer.MatrixTrainer` is the only training loop; a mode differs only in its objective
(and its data collator). An objective is a callable

    objective(model, inputs, *, base_loss, step) -> ObjectiveOutput

where ``base_loss(model, inputs) -> (loss, outputs)`` is ``transformers.Trainer.compute_loss`` of the
parent class (the model's own loss, normalised by ``num_items_in_batch`` exactly as the Trainer does) and
``step`` the optimizer step in training (``None`` in evaluation). An objective that does not need
``base_loss`` (vision SSL, CLIP) runs the model itself. The optional parts of the protocol (callbacks such as
an EMA-teacher update, extra batch keys, plot panels, the model card) are documented on :class:`Objective`.

The output separates the two kinds of loss because they scale differently under gradient accumulation:
``token_loss`` is already normalised over the whole accumulated batch and is summed over micro-batches as it
is; ``batch_loss`` is a per-micro-batch quantity (a matrix over the micro-batch's tokens) that the trainer
rescales (see :class:`~matrix_llm.trainer.MatrixTrainer`).

Registry: :data:`OBJECTIVES` maps a recipe's ``objective:`` value to an :class:`ObjectiveSpec`: the objective
class (built with ``from_args(args)``) and its configuration class (a
:class:`~matrix_llm.config.MatrixTrainingArguments` subclass, in ``<name>_config.py`` beside it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import Objective, ObjectiveCard, ObjectiveOutput
from .classification import ClassificationObjective
from .classification_config import ClassificationConfig
from .clip import CLIPObjective
from .clip_config import CLIPConfig
from .lm import LMObjective
from .lm_config import LMConfig
from .ssl import SSLObjective
from .ssl_config import SSLConfig

__all__ = [
    "OBJECTIVES",
    "CLIPConfig",
    "CLIPObjective",
    "ClassificationConfig",
    "ClassificationObjective",
    "LMConfig",
    "LMObjective",
    "Objective",
    "ObjectiveCard",
    "ObjectiveOutput",
    "ObjectiveSpec",
    "SSLConfig",
    "SSLObjective",
    "build_objective",
]


@dataclass(frozen=True)
class ObjectiveSpec:
    """One mode: its objective class and the configuration class a recipe of that mode is parsed into."""

    objective: type
    config: type


OBJECTIVES: dict[str, ObjectiveSpec] = {
    "lm": ObjectiveSpec(objective=LMObjective, config=LMConfig),
    "classification": ObjectiveSpec(objective=ClassificationObjective, config=ClassificationConfig),
    "ssl": ObjectiveSpec(objective=SSLObjective, config=SSLConfig),
    "clip": ObjectiveSpec(objective=CLIPObjective, config=CLIPConfig),
}


def build_objective(args: Any) -> Any:
    """``OBJECTIVES[args.objective].objective.from_args(args)``, with a clear error for unknown names."""
    name = getattr(args, "objective", None)
    if name not in OBJECTIVES:
        raise ValueError(f"`objective`: expected one of {sorted(OBJECTIVES)}; got {name!r}")
    return OBJECTIVES[name].objective.from_args(args)

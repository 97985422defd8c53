"""The objective protocol (see :mod:`matrix_llm.modes`): its return type and a base class with the
optional hooks every mode may use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["Objective", "ObjectiveCard", "ObjectiveOutput"]


@dataclass
class ObjectiveOutput:
    """What an objective returns for one micro-batch.

    Attributes:
        token_loss: scalar normalised by ``num_items_in_batch`` (additive over micro-batches and ranks), or
            ``None``. Its detached value is logged under ``token_loss_name``.
        batch_loss: scalar per-micro-batch term, already weighted (e.g. ``matrix_loss_weight * mce``), or
            ``None``.
        metrics: detached scalar tensors to log. The keys may differ from call to call (scheduled metrics,
            every N steps) but must be the same on every rank in the same call (``nan`` where a rank has no
            value): they are gathered with one collective.
        outputs: the model outputs (returned by ``compute_loss(..., return_outputs=True)``).
        token_loss_name: log key of ``token_loss``.
    """

    token_loss: Tensor | None
    batch_loss: Tensor | None
    metrics: dict[str, Tensor] = field(default_factory=dict)
    outputs: Any = None
    token_loss_name: str = "lm_loss"


@dataclass
class ObjectiveCard:
    """What a model card says about the objective a run trained with (:func:`matrix_llm.hub.model_card`).

    Attributes:
        summary: one sentence: the loss that was optimised (markdown).
        details: bullet lines (markdown, without the leading ``- ``).
        settings: the objective's config fields and their values (a table in the card).
        tags: Hub tags beyond ``matrix-llm`` / ``matrix-entropy``.
        note: a paragraph the card must carry (e.g. that a formulation is matrix_llm's derivation).
        pipeline_tag: the Hub pipeline tag.
        auto_class / processor_class: the ``transformers`` classes that load the result (the card's usage).
    """

    summary: str
    details: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    note: str = ""
    pipeline_tag: str | None = None
    auto_class: str = "AutoModel"
    processor_class: str = "AutoTokenizer"


class Objective:
    """Optional base class of an objective: the defaults of the protocol's optional parts.

    Required: ``__call__(model, inputs, *, base_loss, step) -> ObjectiveOutput``.
    Optional (defaults here):

    - ``input_names``: batch keys the objective reads besides the model's ``forward`` arguments (kept by the
      Trainer's ``remove_unused_columns``).
    - ``plot_panels``: ``(title, metric key)`` pairs, in order, that ``matrix-llm plot`` draws for a run of this
      objective (train key; the ``eval_`` key is drawn on the same axes).
    - :meth:`callbacks`: ``TrainerCallback`` s the objective needs (e.g. an EMA-teacher update after each
      optimizer step); :class:`~matrix_llm.trainer.MatrixTrainer` adds them.
    - :meth:`card`: what the model card says about it.
    """

    name: str = "objective"
    input_names: tuple[str, ...] = ()
    plot_panels: tuple[tuple[str, str], ...] = (("total loss", "loss"),)

    def callbacks(self, trainer: Any) -> list[Any]:
        return []

    def card(self, args: Any) -> ObjectiveCard:
        return ObjectiveCard(summary=f"objective `{self.name}`")

    def __call__(
        self, model: Any, inputs: dict[str, Any], *, base_loss: Any, step: int | None = None
    ) -> ObjectiveOutput:
        raise NotImplementedError

"""The objective protocol (see :mod:`matrix_llm.modes`): its return type and a base class with the
optional hooks every mode may use; and :class:`Mode`, a training command as one object whose steps
:func:`matrix_llm.runner.run_mode` calls in order.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from matrix_llm.parsing import ConfigError, mode_classes, parse_args
from matrix_llm.parsing.usage import format_help

__all__ = ["SHARDING_FIELD", "Mode", "Objective", "ObjectiveCard", "ObjectiveOutput"]

# The training argument a user sets for each answer of runner.sharded_by, named in a mode's refusal (Mode.check).
SHARDING_FIELD = {"DeepSpeed ZeRO-3": "deepspeed", "FSDP": "fsdp"}


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

    - :meth:`from_args`: build from the mode's config.
    - ``input_names``: batch keys the objective reads besides the model's ``forward`` arguments (kept by the
      Trainer's ``remove_unused_columns``).
    - ``plot_panels``: ``(title, metric key)`` pairs, in order, that ``matrix-llm plot`` draws for a run of this
      objective (train key; the ``eval_`` key is drawn on the same axes).
    - :meth:`callbacks`: ``TrainerCallback`` s the objective needs (e.g. an EMA-teacher update after each
      optimizer step); :class:`~matrix_llm.trainer.MatrixTrainer` adds them.
    - :meth:`card`: what the model card says about it.
    """

    name: str = "objective"
    config_name: str = (
        "MatrixTrainingArguments subclass"  # its mode's config class (matrix_llm.modes.OBJECTIVES)
    )
    input_names: tuple[str, ...] = ()
    plot_panels: tuple[tuple[str, str], ...] = (("total loss", "loss"),)

    @classmethod
    def from_args(cls, args: Any) -> Any:
        """Build from the mode's config: ``cls(**args.objective_kwargs())``, the keyword arguments its fields
        give (:meth:`matrix_llm.config.MatrixTrainingArguments.objective_fields`)."""
        if not callable(getattr(args, "mode_fields", None)) or not args.mode_fields():
            raise TypeError(
                f"{cls.__name__}.from_args: expected a {cls.config_name} (matrix_llm.modes.{cls.config_name}); "
                f"got {type(args).__name__}"
            )
        return cls(**args.objective_kwargs())

    def callbacks(self, trainer: Any) -> list[Any]:
        return []

    def card(self, args: Any) -> ObjectiveCard:
        return ObjectiveCard(summary=f"objective `{self.name}`")

    def __call__(
        self, model: Any, inputs: dict[str, Any], *, base_loss: Any, step: int | None = None
    ) -> ObjectiveOutput:
        raise NotImplementedError


class Mode:
    """One training command (``matrix-llm sft|ssl|clip|classify``) as an object; one instance is one run.
    :func:`matrix_llm.runner.run_mode` calls its steps in this order::

        parse(argv)           the three dataclasses (``classes``), then ``check()``: problems -> exit 2
        [preflight]           model path, resume target, a finished run in output_dir, report_to
        [the objective]       built once from ``training_args`` (bad loss settings -> exit 2)
        load_data()           the datasets, their columns checked and first rows decoded (problems -> exit 2)
        build(objective)      model, collator -> the MatrixTrainer (and what ``finish`` needs)
        [train_and_finish]    resume, train (SIGTERM-safe), save, evaluate, finish(trainer), card(), push
        report(metrics)       report.md / metrics.png; the text is printed

    Attributes set by :meth:`parse`: ``model_args``, ``data_args``, ``training_args`` and ``argv``, the command
    line the run was started with (recorded in ``results.json`` and the report's "Reproduce" line). What
    :meth:`load_data` and :meth:`build` keep on the mode for ``finish`` and ``report`` is dropped when the run ends.
    """

    prog: ClassVar[str]
    command: ClassVar[str]  # the `matrix-llm` sub-command
    objectives: ClassVar[tuple[str, ...]]  # the recipes' `objective` values this command runs
    classes: ClassVar[tuple[type, type, type]]  # model, data and training arguments
    objective_class: ClassVar[type]  # the objective the training arguments configure
    example: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    argv: list[str]
    model_args: Any
    data_args: Any
    training_args: Any

    def parse(self, argv: list[str] | None = None) -> tuple[Any, Any, Any]:
        """``[--config FILE.yaml] [--field value ...]`` (default: ``sys.argv[1:]``) -> ``(model_args, data_args,
        training_args)``.

        Raises:
            ConfigError: every problem of the configuration, :meth:`check`'s included.
        """
        classes = mode_classes(self.prog, self.objectives, self.classes)
        self.argv = list(sys.argv[1:] if argv is None else argv)
        parsed = parse_args(self.argv, classes, prog=self.prog, help_text=self.help)
        self.model_args, self.data_args, self.training_args = parsed
        problems = self.streaming_problems() + self.check()
        if problems:
            raise ConfigError(problems)
        return parsed

    def streaming_problems(self) -> list[str]:
        """``streaming: true`` needs ``max_steps`` (a stream has no length to count epochs by)."""
        if not getattr(self.data_args, "streaming", False):
            return []
        if self.training_args.max_steps <= 0:
            return ["`streaming`: a stream has no length to count epochs by; set `max_steps`"]
        return []

    def help(self, classes: Sequence[type]) -> str:
        example = self.example or f"{self.prog} --config RECIPE.yaml"
        return format_help(self.prog, classes, example=example, summary=self.summary)

    def check(self) -> list[str]:
        """Problems of the parsed configuration as a whole that no single dataclass sees (e.g. a ZeRO stage the
        mode cannot train under); reported with the others, before anything loads."""
        return []

    def objective(self) -> Any:
        """The run's objective, built once from ``training_args`` (its losses check their own settings and raise
        ``ValueError``, reported with the configuration problems)."""
        return self.objective_class.from_args(self.training_args)

    def load_data(self) -> None:
        """Load the datasets and keep them on the mode for :meth:`build`, before any model loads: a missing column,
        a file that cannot be read among the first rows, a dataset that cannot be found raise ``ValueError`` /
        ``OSError`` (reported with exit status 2, nothing written)."""

    def build(self, objective: Any) -> Any:
        """Model and collator around the data of :meth:`load_data` -> the :class:`~matrix_llm.trainer.MatrixTrainer` training ``objective``."""
        raise NotImplementedError

    def card(self) -> Any:
        """The :class:`~matrix_llm.runner.RunCard`: what the model card says besides the objective."""
        raise NotImplementedError

    def finish(self, trainer: Any) -> dict[str, Any]:
        """The mode's own last work after the final evaluation (every process): saved pieces, offline
        measurements. Numeric values join the final metrics and the card, ``details`` the card's lines."""
        return {}

    def report(self, metrics: dict[str, Any]) -> str | None:
        """``report.md`` (and its figures) on the main process; returns its text, printed by the runner."""
        return None

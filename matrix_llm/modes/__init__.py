"""The modes: one folder each (``lm``, ``ssl``, ``clip``, ``classify``), with the same few modules in each:

- ``config.py``: the mode's configuration, a :class:`~matrix_llm.config.MatrixTrainingArguments` subclass plus
  its model and data arguments;
- ``objective.py``: its training objective, mapping ``(model, batch)`` to an :class:`ObjectiveOutput`
  (:mod:`matrix_llm.modes.base` documents the protocol);
- ``command.py``: ``matrix-llm <command>`` (parse, data, model, then the shared run tail of
  :mod:`matrix_llm.runner`);
- ``evaluate.py``: its measurements, as a library, a training callback and an ``eval`` task.

:class:`~matrix_llm.trainer.MatrixTrainer` is the only training loop; a mode differs only in its objective (and
its data collator). Nothing here imports a mode until it is used: :data:`OBJECTIVES` names each mode's objective
and configuration classes by module path, so ``matrix-llm ssl`` loads no LM, CLIP or classification code
(tested), and ``from matrix_llm.modes import SSLObjective`` imports the SSL mode only.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from matrix_llm.modes.base import Objective, ObjectiveCard, ObjectiveOutput

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
    """One mode, by module path: its objective class and the configuration class its recipes are parsed into."""

    package: str
    objective_name: str
    config_name: str

    @property
    def objective(self) -> type:
        return getattr(importlib.import_module(f"{self.package}.objective"), self.objective_name)

    @property
    def config(self) -> type:
        return getattr(importlib.import_module(f"{self.package}.config"), self.config_name)


# a recipe's `objective:` value -> its mode
OBJECTIVES: dict[str, ObjectiveSpec] = {
    "lm": ObjectiveSpec("matrix_llm.modes.lm", "LMObjective", "LMConfig"),
    "classification": ObjectiveSpec(
        "matrix_llm.modes.classify", "ClassificationObjective", "ClassificationConfig"
    ),
    "ssl": ObjectiveSpec("matrix_llm.modes.ssl", "SSLObjective", "SSLConfig"),
    "clip": ObjectiveSpec("matrix_llm.modes.clip", "CLIPObjective", "CLIPConfig"),
}
_LAZY = {spec.objective_name: (spec, "objective") for spec in OBJECTIVES.values()}
_LAZY.update({spec.config_name: (spec, "config") for spec in OBJECTIVES.values()})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        spec, kind = _LAZY[name]
        return getattr(spec, kind)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_objective(args: Any) -> Any:
    """``OBJECTIVES[args.objective].objective.from_args(args)``, with a clear error for unknown names."""
    name = getattr(args, "objective", None)
    if name not in OBJECTIVES:
        raise ValueError(f"`objective`: expected one of {sorted(OBJECTIVES)}; got {name!r}")
    return OBJECTIVES[name].objective.from_args(args)

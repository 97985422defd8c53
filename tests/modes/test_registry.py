"""The objective registry and the LM mode's configuration: one list of choices, one validation.

.venv/bin/python -m pytest tests/modes -q
"""

from __future__ import annotations

import dataclasses

import pytest

from matrix_llm.config import MatrixTrainingArguments
from matrix_llm.losses.token import FORMULATIONS, TokenMCELoss
from matrix_llm.modes import OBJECTIVES, LMConfig, LMObjective, build_objective
from matrix_llm.modes.lm.objective import LOSS_TYPES
from matrix_llm.parsing import ConfigError


def _config(**kw):
    return LMConfig(output_dir="x", report_to="none", **kw)


def test_every_objective_has_a_training_arguments_config():
    for name, spec in OBJECTIVES.items():
        assert issubclass(spec.config, MatrixTrainingArguments), name
        assert callable(getattr(spec.objective, "from_args", None)), name
        assert dataclasses.fields(spec.config)  # a dataclass


def test_the_choices_of_matrix_loss_type_derive_from_the_loss():
    field = next(f for f in dataclasses.fields(LMConfig) if f.name == "matrix_loss_type")
    assert tuple(field.metadata["choices"]) == LOSS_TYPES == ("none", *FORMULATIONS)


@pytest.mark.parametrize(
    ("field", "value", "loss_argument"),
    [("matrix_mu", -1.0, "mu"), ("matrix_taylor_order", 0, "order"), ("matrix_max_tokens", 1, "max_tokens")],
)
def test_config_problems_are_the_loss_problems_under_the_field_name(field, value, loss_argument):
    """LMConfig has no check of its own for the loss's arguments: it reports TokenMCELoss.argument_problems
    under its field names (mutation caught: a config check that drifts from the loss's)."""
    ((name, expected, _),) = TokenMCELoss.argument_problems(formulation="head", **{loss_argument: value})
    with pytest.raises(ConfigError) as info:
        _config(**{field: value})
    assert info.value.problems == [f"`{field}`: expected {expected}; got {value!r}"]


def test_the_recipe_objective_builds_the_objective():
    args = _config(matrix_loss_type="relation", matrix_loss_weight=0.2, matrix_scope="global", seed=7)
    objective = build_objective(args)
    assert isinstance(objective, LMObjective)
    loss = objective.matrix_loss
    assert (objective.weight, loss.formulation, loss.scope, loss.seed) == (0.2, "relation", "global", 7)
    with pytest.raises(ConfigError, match="objective"):
        _config(objective="ssl")


def test_from_args_needs_the_objective_config():
    with pytest.raises(TypeError, match="LMConfig"):
        LMObjective.from_args(MatrixTrainingArguments(output_dir="x", report_to="none"))

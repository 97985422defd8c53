"""Every setting a mode adds to the training configuration (its `MatrixTrainingArguments` subclass: the loss, its
weights, schedule and method) reaches that mode's model card, so a card always says how the model was trained.
`ssl_order`, `clip_matrix_start_step` and `clip_crop_min_scale` were once missing.

Run: .venv/bin/python -m pytest tests/test_cards.py -q
"""

from __future__ import annotations

import dataclasses

import pytest

from matrix_llm.config import MatrixTrainingArguments
from matrix_llm.modes import OBJECTIVES

BASE = {f.name for f in dataclasses.fields(MatrixTrainingArguments)}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_setting_that_changes_training_is_on_the_model_card(name):
    spec = OBJECTIVES[name]
    args = spec.config(output_dir="unused", report_to="none")
    own = [f.name for f in dataclasses.fields(spec.config) if f.name not in BASE]
    assert own, name
    settings = spec.objective.from_args(args).card(args).settings
    assert [f for f in own if f not in settings] == []
    assert all(settings[f] == getattr(args, f) for f in own)

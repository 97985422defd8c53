"""One name per setting: every setting a mode adds to the training configuration (its `MatrixTrainingArguments`
subclass: the loss, its weights, schedule and method) is an argument of its objective by its name and reaches that
mode's model card, with every data setting, so a card always says how the model was trained (`ssl_order`,
`clip_matrix_start_step` and `clip_crop_min_scale` were once missing). Renamed fields keep their old names for now;
the data fields of every mode share one bound.

Run: .venv/bin/python -m pytest tests/test_cards.py -q
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest

from matrix_llm import hub
from matrix_llm.config import DataArguments, MatrixTrainingArguments
from matrix_llm.modes import OBJECTIVES
from matrix_llm.parsing import ConfigError

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


MODES = {
    "lm": ("matrix_llm.modes.lm.command", "LMMode", "demo/mce.yaml"),
    "ssl": ("matrix_llm.modes.ssl.command", "SSLMode", "demo/ssl.yaml"),
    "clip": ("matrix_llm.modes.clip.command", "CLIPMode", "demo/clip.yaml"),
    "classification": ("matrix_llm.modes.classify.command", "ClassificationMode", "classify/digits.yaml"),
}


def _mode(name):
    module, cls, recipe = MODES[name]
    return getattr(importlib.import_module(module), cls)(), recipe


def test_every_mode_has_its_command():
    assert sorted(MODES) == sorted(OBJECTIVES)
    for name in OBJECTIVES:
        mode, _ = _mode(name)
        assert mode.objectives == (name,) and mode.classes[-1] is OBJECTIVES[name].config
        assert mode.objective_class is OBJECTIVES[name].objective


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_each_setting_is_an_argument_of_its_objective_by_its_name(name):
    """A mode field is `<field_prefix><argument>`: the objective's keyword arguments are its fields' names, all of
    them and nothing else (the run's seed and classify's augmentation, which the mode builds from the data
    settings, aside), so a new field cannot silently stop at the config."""
    spec = OBJECTIVES[name]
    config = spec.config
    assert config.mode_fields() and all(f.startswith(config.field_prefix) for f in config.mode_fields())
    kwargs = config(output_dir="unused", report_to="none").objective_kwargs()
    params = set(inspect.signature(spec.objective.__init__).parameters) - {"self"}
    assert set(kwargs) - {"seed"} == params - {"seed", "augment"}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_data_setting_of_a_run_is_on_its_model_card(name):
    mode, recipe = _mode(name)
    model_args, data_args, args = mode.parse(["--config", recipe, "--output_dir", "unused"])
    card = hub.model_card(
        objective_card=OBJECTIVES[name].objective.from_args(args).card(args),
        base_model="tiny",
        dataset=data_args.dataset_name,
        training_args=args,
        data_args=data_args,
    )
    missing = [f.name for f in dataclasses.fields(data_args) if f"| `{f.name}` |" not in card]
    assert missing == []


def test_a_renamed_field_keeps_its_old_name_with_a_deprecation_warning(tmp_path):
    from transformers import HfArgumentParser

    from matrix_llm.modes.ssl.command import parse_args

    recipe = tmp_path / "old.yaml"
    recipe.write_text("teacher_momentum: 0.9\n")
    for argv in (["--teacher_momentum", "0.5"], ["--config", str(recipe)]):
        with pytest.warns(
            FutureWarning, match="`teacher_momentum` is deprecated.*use `ssl_teacher_momentum`"
        ):
            *_, args = parse_args(["--model_name_or_path", "tiny-vit", *argv, "--output_dir", "unused"])
        assert args.ssl_teacher_momentum == (0.5 if argv[0] != "--config" else 0.9)
    # transformers' own parser reads the same metadata (a user's HfArgumentParser script, `--help_all`)
    (args,) = HfArgumentParser(OBJECTIVES["ssl"].config).parse_args_into_dataclasses(
        ["--output_dir", "unused", "--report_to", "none", "--teacher_momentum", "0.7"]
    )
    assert args.ssl_teacher_momentum == 0.7


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_the_data_fields_of_every_mode_share_one_bound(name):
    mode, recipe = _mode(name)
    with pytest.raises(ConfigError) as err:
        mode.parse(["--config", recipe, "--output_dir", "unused", "--max_train_samples", "1"])
    assert err.value.problems == ["`max_train_samples`: expected an integer >= 2 or null; got 1"]
    assert issubclass(mode.classes[1], DataArguments)

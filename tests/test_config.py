"""Configuration: YAML + CLI parsing, overrides, bools, every problem at once, validation.

.venv/bin/python -m pytest tests/test_config.py -q
"""

from __future__ import annotations

import pytest

from matrix_llm.modes.lm.command import parse_args
from matrix_llm.modes.lm.config import LMConfig
from matrix_llm.parsing import ConfigError

BASE = """\
model_name_or_path: tiny
dataset_name: synthetic
output_dir: {out}
report_to: none
"""


def _yaml(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(BASE.format(out=tmp_path / "out") + text)
    return str(path)


def test_yaml_then_cli_overrides(tmp_path):
    cfg = _yaml(
        tmp_path, "learning_rate: 2e-5\nmatrix_loss_weight: 0.3\nlora_target_modules: [q_proj, v_proj]\n"
    )
    m, d, t = parse_args(["--config", cfg, "--matrix_loss_weight", "0.7"])
    assert t.learning_rate == pytest.approx(2e-5)  # YAML's `2e-5` is a string for PyYAML: converted
    assert t.matrix_loss_weight == pytest.approx(0.7)  # CLI wins
    assert m.lora_target_modules == ["q_proj", "v_proj"] and m.peft_target_modules == ["q_proj", "v_proj"]
    assert d.dataset_name == "synthetic" and m.is_tiny
    assert isinstance(t, LMConfig)


@pytest.mark.parametrize(
    ("yaml_value", "cli", "expected"),
    [
        ("true", [], True),
        ("false", [], False),
        ("true", ["--use_peft", "false"], False),
        ("false", ["--use_peft", "true"], True),
        ("false", ["--use_peft"], True),
        ("true", ["--no_use_peft"], False),
        ('"no"', [], False),
        ("yes", [], True),
    ],
)
def test_bools_from_yaml_and_cli(tmp_path, yaml_value, cli, expected):
    cfg = _yaml(tmp_path, f"use_peft: {yaml_value}\n")
    m, _, _ = parse_args(["--config", cfg, *cli])
    assert m.use_peft is expected


def test_training_bool_with_true_default_can_be_turned_off(tmp_path):
    cfg = _yaml(tmp_path, "average_tokens_across_devices: false\n")
    *_, t = parse_args(["--config", cfg])
    assert t.average_tokens_across_devices is False
    *_, t = parse_args(["--config", cfg, "--average_tokens_across_devices", "true"])
    assert t.average_tokens_across_devices is True


def test_every_problem_is_listed_at_once(tmp_path):
    cfg = _yaml(
        tmp_path,
        "lerning_rate: 1e-4\nmatrix_loss_type: hed\nper_device_train_batch_size: 2.5\nuse_peft: maybe\n"
        "matrix_mu: -1\n",
    )
    with pytest.raises(ConfigError) as info:
        parse_args(["--config", cfg, "--matrix_weight", "1", "--lora_r", "x", "--matrix_taylor_order", "0"])
    problems = info.value.problems
    text = str(info.value)
    assert len(problems) == 8, text
    assert "unknown field `lerning_rate`" in text and "did you mean `learning_rate`" in text
    assert "unknown option `--matrix_weight`" in text and "did you mean `matrix_loss_weight`" in text
    assert "`matrix_loss_type`" in text and "'hed'" in text
    assert "`per_device_train_batch_size`" in text and "2.5" in text
    assert "`use_peft`" in text and "boolean" in text
    assert "`lora_r` (command line): expected an integer; got 'x'" in text
    assert "`matrix_mu`" in text and "`matrix_taylor_order`" in text


def test_missing_required_fields(tmp_path):
    with pytest.raises(ConfigError) as info:
        parse_args(["--output_dir", str(tmp_path)])
    text = str(info.value)
    assert "`model_name_or_path`" in text and "`dataset_name`" in text


def test_missing_config_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="an existing YAML file"):
        parse_args(["--config", str(tmp_path / "nope.yaml")])
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="a mapping"):
        parse_args(["--config", str(path)])


def test_training_arguments_own_validation_is_collected(tmp_path):
    cfg = _yaml(tmp_path, "warmup_steps: -1\nmatrix_loss_weight: -2\n")
    with pytest.raises(ConfigError) as info:
        parse_args(["--config", cfg])
    text = str(info.value)
    assert "warmup_steps" in text and "matrix_loss_weight" in text


def test_null_and_choices(tmp_path):
    cfg = _yaml(tmp_path, "dataset_config: null\nmatrix_max_tokens: 128\nmatrix_scope: global\n")
    _, d, t = parse_args(["--config", cfg, "--max_train_samples", "null", "--matrix_log", "taylor"])
    assert d.dataset_config is None and d.max_train_samples is None
    assert t.matrix_max_tokens == 128 and t.matrix_scope == "global" and t.matrix_log == "taylor"
    with pytest.raises(ConfigError, match="matrix_scope"):
        parse_args(["--config", cfg, "--matrix_scope", "world"])


def test_warmup_fraction_and_none_metrics_steps(tmp_path):
    cfg = _yaml(tmp_path, "warmup_steps: 0.03\nmatrix_loss_type: none\nlogging_steps: 7\n")
    *_, t = parse_args(["--config", cfg])
    assert t.warmup_steps == pytest.approx(0.03)
    assert t.matrix_loss_type == "none" and t.effective_matrix_metrics_steps == 7


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(["--help"])
    assert info.value.code == 0
    assert "matrix_loss_weight" in capsys.readouterr().out


def test_direct_construction_validates():
    with pytest.raises(ConfigError, match="matrix_loss_type"):
        LMConfig(output_dir="x", matrix_loss_type="bogus", report_to="none")


def test_resume_from_checkpoint_true_in_yaml(tmp_path):
    cfg = _yaml(tmp_path, "resume_from_checkpoint: true\n")
    *_, t = parse_args(["--config", cfg])
    assert t.resume_from_checkpoint == "true"


def test_drop_truncated_is_a_field(tmp_path):
    """The too-long-examples error names `--drop_truncated false`: the CLI must offer it."""
    cfg = _yaml(tmp_path, "")
    _, d, _ = parse_args(["--config", cfg, "--drop_truncated", "false"])
    assert d.drop_truncated is False


def test_help_is_short_leads_with_usage_and_points_to_the_full_list(capsys):
    """`matrix-llm sft --help` used to print all ~790 lines of TrainingArguments and never mention --config."""
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: matrix-llm sft --config RECIPE.yaml")
    assert "--help_all" in out and "example:" in out and len(out.splitlines()) < 200
    assert "--learning_rate" in out and "--adam_beta1" not in out  # the everyday ones; --help_all: all
    with pytest.raises(SystemExit):
        parse_args(["--help_all"])
    assert "--adam_beta1" in capsys.readouterr().out


def test_use_peft_is_refused_by_the_commands_that_train_no_adapter():
    from matrix_llm.modes.classify.config import ClassificationModelArguments
    from matrix_llm.modes.clip.config import CLIPModelArguments
    from matrix_llm.modes.lm.config import LMModelArguments
    from matrix_llm.modes.ssl.config import SSLModelArguments

    for cls in (ClassificationModelArguments, SSLModelArguments):
        with pytest.raises(ConfigError, match="`use_peft`.*trains no LoRA adapter"):
            cls(model_name_or_path="tiny-vit", use_peft=True)
    assert LMModelArguments(model_name_or_path="tiny", use_peft=True).use_peft
    assert CLIPModelArguments(
        model_name_or_path="tiny-dual", use_peft=True
    ).use_peft  # LoRA on the text tower
    with pytest.raises(ConfigError, match="`freeze_text_tower`"):
        CLIPModelArguments(model_name_or_path="tiny-dual", use_peft=True, freeze_text_tower=True)

"""``learning_rate_scaling``: the rate scaled by the total batch of one optimizer step over every process (the rule
of Goyal et al. 2017 that SimCLR, BYOL, DINO and solo-learn's ``scale_lr`` use), applied once, recorded in
matrix_llm_run.json, and on two real processes twice the one-process rate.

    .venv/bin/python -m pytest tests/test_learning_rate_scaling.py -q
"""

from __future__ import annotations

import json
import math

import pytest

from matrix_llm.modes.classify.command import ClassificationMode

DIGITS = ["--config", "classify/digits.yaml", "--max_train_samples", "96", "--max_eval_samples", "32"]


def _parsed(*extra):
    return ClassificationMode().parse([*DIGITS, "--learning_rate", "0.4", *extra])[2]


@pytest.mark.parametrize(
    "rule, factor", [("none", 1.0), ("linear", 128 / 256), ("sqrt", math.sqrt(128 / 256))]
)
def test_the_rate_is_scaled_by_the_total_batch_over_the_base_batch(rule, factor):
    args = _parsed(
        "--learning_rate_scaling",
        rule,
        "--per_device_train_batch_size",
        "64",
        "--gradient_accumulation_steps",
        "2",
    )
    assert args.learning_rate == pytest.approx(0.4 * factor)
    if rule == "none":
        assert args.scale_learning_rate() is None
        return
    record = args.learning_rate_record
    assert record == {
        "rule": rule,
        "learning_rate_as_set": 0.4,
        "total_batch": 128,
        "base_batch": 256,
        "learning_rate": pytest.approx(0.4 * factor),
    }
    assert args.scale_learning_rate() == record and args.learning_rate == pytest.approx(0.4 * factor)  # once


def test_the_base_batch_is_a_setting_and_bad_values_are_refused(capsys):
    args = _parsed("--learning_rate_scaling", "linear", "--learning_rate_base_batch", "32")
    assert args.learning_rate == pytest.approx(0.4 * args.per_device_train_batch_size / 32)
    from matrix_llm.modes.classify import command as classify

    argv = [*DIGITS, "--learning_rate_scaling", "quadratic", "--learning_rate_base_batch", "0"]
    assert classify.main(argv) == 2
    err = capsys.readouterr().err
    assert "`learning_rate_scaling`: expected none or linear or sqrt; got 'quadratic'" in err
    assert "`learning_rate_base_batch`: expected a positive integer; got 0" in err


@pytest.mark.slow
def test_two_processes_train_at_twice_the_rate_and_record_it(tmp_path):
    """2 gloo processes (torchrun, DDP) of batch 16 at base batch 16: the optimizer runs at twice the rate set."""
    from conftest import run_two_processes

    argv = [
        *DIGITS,
        "--per_device_train_batch_size",
        "16",
        "--eval_strategy",
        "no",
        "--learning_rate",
        "0.001",
    ]
    argv += ["--learning_rate_scaling", "linear", "--learning_rate_base_batch", "16"]
    argv += ["--lr_scheduler_type", "constant", "--logging_steps", "1"]
    run_two_processes("classify", argv, tmp_path, "ddp")
    record = json.loads((tmp_path / "matrix_llm_run.json").read_text())["learning_rate_scaling"]
    assert record["total_batch"] == 32 and record["learning_rate"] == pytest.approx(0.002)
    history = json.loads((tmp_path / "trainer_state.json").read_text())["log_history"]
    rates = [log["learning_rate"] for log in history if "learning_rate" in log]
    assert rates and all(r == pytest.approx(0.002) for r in rates)

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
    """The parsed training arguments, scaled as :class:`MatrixTrainer` scales them."""
    args = ClassificationMode().parse([*DIGITS, "--learning_rate", "0.4", *extra])[2]
    args.scale_learning_rate()
    return args


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
    # auto_find_batch_size may shrink the batch after the rate was scaled by it
    assert classify.main([*DIGITS, "--learning_rate_scaling", "sqrt", "--auto_find_batch_size", "true"]) == 2
    assert (
        "`learning_rate_scaling`: expected none with auto_find_batch_size (which can shrink the batch the rate "
        "was scaled by); got 'sqrt'" in capsys.readouterr().err
    )
    assert _parsed("--auto_find_batch_size", "true").auto_find_batch_size  # unscaled: no conflict


def test_the_trainer_scales_the_rate_it_is_given(tmp_path):
    """``MatrixTrainer(args=...)`` applies the scaling (a Python user's arguments too), before the optimizer exists."""
    from matrix_llm.models.tiny import build_image_classifier
    from matrix_llm.modes import ClassificationConfig
    from matrix_llm.trainer import MatrixTrainer

    args = ClassificationConfig(
        output_dir=str(tmp_path),
        learning_rate=0.4,
        per_device_train_batch_size=64,
        learning_rate_scaling="linear",
    )
    MatrixTrainer(model=build_image_classifier("tiny-vit", num_labels=3, image_size=8), args=args)
    assert (
        args.learning_rate == pytest.approx(0.1)
        and args.learning_rate_record["learning_rate"] == args.learning_rate
    )


DEEPSPEED_AUTO = """
import json
from matrix_llm.modes import ClassificationConfig
ds = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "train_batch_size": "auto",
      "optimizer": {"type": "AdamW", "params": {"lr": "auto"}},
      "scheduler": {"type": "WarmupLR", "params": {"warmup_max_lr": "auto", "warmup_num_steps": 0}},
      "zero_optimization": {"stage": 2}}
args = ClassificationConfig(output_dir=OUT, use_cpu=True, deepspeed=ds, learning_rate=0.4,
                            per_device_train_batch_size=64, learning_rate_scaling="linear")
args.scale_learning_rate()
config = args.deepspeed_plugin.deepspeed_config
print(json.dumps([args.learning_rate, config["optimizer"]["params"]["lr"], config["scheduler"]["params"]["warmup_max_lr"]]))
"""


def test_a_deepspeed_configs_auto_rates_follow_the_scaling(tmp_path):
    """DeepSpeed's ``"lr": "auto"`` (and WarmupLR's ``warmup_max_lr``) were filled with the rate as set when the
    arguments were made; the scaling rewrites them, or DeepSpeed's own optimizer would train at the unscaled rate.
    (A process of its own: DeepSpeed arguments set up accelerate's process-wide state.)"""
    import subprocess
    import sys

    pytest.importorskip("deepspeed")
    from conftest import free_port, launch_env

    env = {
        **launch_env(),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "RANK": "0",
        "LOCAL_RANK": "0",
    }
    code = DEEPSPEED_AUTO.replace("OUT", repr(str(tmp_path)))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "WORLD_SIZE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [pytest.approx(0.1)] * 3


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
    card = (tmp_path / "README.md").read_text()
    assert (
        "`learning_rate` is 0.001 as set, scaled (linear, `learning_rate_scaling`) by the total batch 32 over 16"
        in (card)
    )

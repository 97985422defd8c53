"""A run interrupted after a checkpoint and resumed with --resume_from_checkpoint ends exactly like an
uninterrupted run (same losses at every later step, same final weights).

    .venv/bin/python -m pytest tests/modes/lm/test_resume.py -q
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SFT_TINY as TINY
from conftest import StepRecorder
from safetensors.torch import load_file
from transformers import TrainerCallback

import matrix_llm.trainer
from matrix_llm.modes.lm import command as sft


class Interrupted(RuntimeError):
    pass


class _StopAfterSave(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupted(f"killed after saving checkpoint-{self.step}")


def _argv(out):
    return [
        *TINY,
        "--output_dir",
        str(out),
        "--max_steps",
        "6",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--matrix_max_tokens",
        "16",
        "--data_seed",
        "3",
        "--eval_split",
        "null",
    ]


def _losses(out):
    state = json.loads((out / "trainer_state.json").read_text())
    return {
        log["step"]: (log["loss"], log["lm_loss"], log["matrix_loss"])
        for log in state["log_history"]
        if "loss" in log
    }


def test_resume_matches_uninterrupted_run(tmp_path, monkeypatch):
    full = tmp_path / "full"
    assert sft.main(_argv(full)) == 0

    cut = tmp_path / "cut"
    original = matrix_llm.trainer.MatrixTrainer

    class Killed(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(_StopAfterSave(4))

    monkeypatch.setattr(matrix_llm.trainer, "MatrixTrainer", Killed)
    with pytest.raises(Interrupted):
        sft.main(_argv(cut))
    assert (cut / "checkpoint-4").is_dir() and not (cut / "checkpoint-6").exists()

    # the resumed run starts at the checkpoint's step and executes only the remaining steps (mutation caught:
    # `trainer.train(resume_from_checkpoint=None)`, which a deterministic rerun from scratch would hide)
    steps = StepRecorder()

    class Watched(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(steps)

    monkeypatch.setattr(matrix_llm.trainer, "MatrixTrainer", Watched)
    assert sft.main([*_argv(cut), "--resume_from_checkpoint", "true"]) == 0
    monkeypatch.setattr(matrix_llm.trainer, "MatrixTrainer", original)
    assert steps.start == 4 and steps.executed == [5, 6]
    expected, resumed = _losses(full), _losses(cut)
    assert set(resumed) == set(expected) == set(range(1, 7))  # steps 1-4 come from checkpoint-4's state
    for step in range(1, 7):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step
    a, b = load_file(str(full / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)

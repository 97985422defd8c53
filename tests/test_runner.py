"""The shared run tail and the checks before anything loads (matrix_llm.runner), for every command.

    .venv/bin/python -m pytest tests/test_runner.py -q

Each test names the mutation it catches.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from conftest import SFT_TINY as TINY
from conftest import SigtermAt, StepRecorder, watch_trainer

from matrix_llm import runner
from matrix_llm.modes.lm import command as sft


def _no_loading(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("nothing may be loaded when the configuration is refused")

    monkeypatch.setattr(sft, "load_raw_datasets", boom)
    monkeypatch.setattr(sft, "build_model_and_tokenizer", boom)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--resume_from_checkpoint", "{tmp}/nope"], "no such directory"),
        (["--resume_from_checkpoint", "true"], "there is none"),
        (["--model_name_or_path", "./no/such/model"], "no such directory"),
        (["--report_to", "tensorboard"], "pip install tensorboard"),
    ],
)
def test_preflight_refuses_before_loading(monkeypatch, capsys, tmp_path, extra, message):
    """Mutation caught: dropping any branch of runner.preflight (the run would load data and model first)."""
    pytest.importorskip("transformers")
    # as if no reporting integration were installed (make install puts TensorBoard in)
    monkeypatch.setattr("transformers.integrations.get_available_reporting_integrations", list)
    _no_loading(monkeypatch)
    argv = [*TINY, "--output_dir", str(tmp_path / "out"), *[a.format(tmp=tmp_path) for a in extra]]
    assert sft.main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_finished_run_is_not_overwritten(monkeypatch, capsys, tmp_path):
    """Mutation caught: no output_dir check (a second run silently replaces the first one's model)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "trainer_state.json").write_text("{}")
    _no_loading(monkeypatch)
    assert sft.main([*TINY, "--output_dir", str(out)]) == 2
    assert "--overwrite_output_dir" in capsys.readouterr().err
    assert runner.preflight(*_parsed([*TINY, "--output_dir", str(out), "--overwrite_output_dir"])) == []


def _parsed(argv):
    model_args, _, training_args = sft.parse_args(argv)
    return model_args, training_args


def _argv(out):
    return [
        *TINY,
        "--output_dir",
        str(out),
        "--max_steps",
        "6",
        "--save_strategy",
        "no",
        "--data_seed",
        "3",
        "--eval_split",
        "null",
        "--matrix_max_tokens",
        "16",
    ]


def _losses(out):
    state = json.loads((Path(out) / "trainer_state.json").read_text())
    return {
        log["step"]: (log["loss"], log["lm_loss"], log["matrix_loss"])
        for log in state["log_history"]
        if "loss" in log
    }


def test_sigterm_saves_a_checkpoint_and_the_resumed_run_ends_like_an_uninterrupted_one(
    tmp_path, monkeypatch, capsys
):
    """A real SIGTERM at step 3: the step finishes, checkpoint-3 is saved, exit status 143 with the resume flag
    in the message; resuming starts at step 3, runs only steps 4-6 and ends with the uninterrupted run's losses.
    Mutations caught: no SIGTERM handler (the process would die / train on), the checkpoint not saved, and
    `trainer.train(resume_from_checkpoint=None)` in the run tail (the run would start at 0)."""
    full = tmp_path / "full"
    assert sft.main(_argv(full)) == 0

    cut = tmp_path / "cut"
    steps = StepRecorder()
    watch_trainer(monkeypatch, SigtermAt(3))
    assert sft.main(_argv(cut)) == runner.EXIT_PREEMPTED == 143
    assert "--resume_from_checkpoint true" in capsys.readouterr().err
    assert sorted(p.name for p in cut.glob("checkpoint-*")) == ["checkpoint-3"]
    assert not (cut / "model.safetensors").exists()  # the tail stopped: no final model, no card
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was restored

    assert sft.main(_argv(cut)) == 2  # neither resumed nor overwritten: refused
    assert "it holds checkpoint-3 of a run that did not finish" in capsys.readouterr().err
    watch_trainer(monkeypatch, steps)
    assert sft.main([*_argv(cut), "--resume_from_checkpoint", "true"]) == 0
    assert steps.start == 3 and steps.executed == [4, 5, 6]
    expected, resumed = _losses(full), _losses(cut)
    assert set(resumed) == set(expected) == set(range(1, 7))
    for step in range(1, 7):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step


def test_hub_token_never_reaches_disk(tmp_path):
    """The token given as a flag is in no file of output_dir (training_args.bin pickles the arguments).
    Mutation caught: removing MatrixTrainingArguments.__getstate__."""
    out = tmp_path / "out"
    token = "hf_secretTOKEN1234567890"
    assert (
        sft.main(
            [
                *TINY,
                "--output_dir",
                str(out),
                "--hub_token",
                token,
                "--save_strategy",
                "steps",
                "--save_steps",
                "2",
            ]
        )
        == 0
    )
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "training_args.bin" for p in files) and any("checkpoint-2" in str(p) for p in files)
    leaked = [str(p) for p in files if token.encode() in p.read_bytes()]
    assert leaked == []


def test_run_info_records_the_objective_for_plots(tmp_path):
    out = tmp_path / "out"
    assert sft.main([*TINY, "--output_dir", str(out)]) == 0
    info = json.loads((out / "matrix_llm_run.json").read_text())
    assert info["objective"] == "lm" and ["LM loss", "lm_loss"] in info["plot_panels"]


def test_copies_keep_the_token_pickles_do_not():
    """Only what goes to disk loses the token: a user's copy.deepcopy(args) still pushes with it."""
    import copy
    import pickle

    from matrix_llm.modes import LMConfig

    args = LMConfig(output_dir="x", report_to="none", hub_token="hf_secret", matrix_loss_weight=0.3)
    assert copy.deepcopy(args).hub_token == copy.copy(args).hub_token == "hf_secret"
    assert copy.deepcopy(args).matrix_loss_weight == 0.3
    assert pickle.loads(pickle.dumps(args)).hub_token is None


def test_one_element_scalars_keep_the_state_dict_and_the_outputs():
    """The DeepSpeed workaround for 0-dim parameters: same outputs, a 0-dim state_dict, loads either form."""
    import torch
    from torch import nn

    from matrix_llm.runner import deepspeed_stage
    from matrix_llm.trainer import one_element_scalars

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(3, 2)
            self.logit_scale = nn.Parameter(torch.tensor(2.5))

        def forward(self, x):
            return self.inner(x) * self.logit_scale.exp()

    model, x = Scaled(), torch.randn(4, 3)
    before, saved = model(x), {k: v.clone() for k, v in model.state_dict().items()}
    assert one_element_scalars(model) == ["logit_scale"] and model.logit_scale.shape == (1,)
    torch.testing.assert_close(model(x), before)
    assert model.state_dict()["logit_scale"].shape == ()
    model.load_state_dict({**saved, "logit_scale": torch.tensor(1.0)})  # the usual 0-dim checkpoint
    assert model.logit_scale.shape == (1,) and model.logit_scale.item() == 1.0
    model.load_state_dict({**saved, "logit_scale": torch.tensor([0.5])})
    assert (
        model.logit_scale.item() == 0.5 and model.logit_scale.view(torch.uint8).numel() == 4
    )  # DeepSpeed's view
    assert deepspeed_stage(type("Args", (), {"deepspeed": {"zero_optimization": {"stage": 2}}})()) == 2

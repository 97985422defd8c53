"""`matrix-llm demo` end to end on a shortened run: .venv/bin/python -m pytest tests/tools/test_demo.py -q

The full demo (demo/mce.yaml, 2000 steps) is what `make demo` runs; this checks the pipeline and its
files on a 30-step run, so it asserts that everything is written and consistent, not that the model learned.
"""

import json
from pathlib import Path

import pytest

from matrix_llm.cli import main as cli_main
from matrix_llm.modes.lm.evaluate import read_jsonl

RECIPES = Path(__file__).resolve().parents[2] / "matrix_llm" / "recipes" / "demo"  # package data


@pytest.mark.parametrize("method", ["mce", "ce"])
def test_demo_writes_model_eval_plot_and_report(tmp_path, method):
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--config",
        str(RECIPES / f"{method}.yaml"),
        "--output_dir",
        str(out),
        "--eval_size",
        "12",
        "--max_new_tokens",
        "24",
        "--max_steps",
        "30",
        "--eval_steps",
        "30",
        "--gsm8k_eval_samples",
        "4",
        "--synthetic_train_size",
        "300",
        "--disable_tqdm",
        "true",
    ]
    assert cli_main(argv) == 0
    for name in (
        "report.md",
        "metrics.json",
        "metrics.png",
        "heldout.jsonl",
        "eval/results.json",
        "eval/samples.jsonl",
        "model/model.safetensors",
        "model/README.md",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "metrics.json").read_text())
    results = json.loads((out / "eval" / "results.json").read_text())
    assert summary["eval"] == results["metrics"] and results["metrics"]["n"] == 12
    assert summary["train"]["global_step"] == 30
    if method == "mce":
        assert summary["matrix_loss_type"] == "head" and summary["train"]["last"]["matrix_loss"] is not None
    else:
        assert summary["matrix_loss_type"] == "none" and summary["train"]["last"]["matrix_loss"] is None
    assert summary["train"]["last"]["matrix_entropy"] is not None  # diagnostics are logged either way
    # held-out problems are the test split: none of them is a training question
    from matrix_llm.data.synthetic import problem_split

    assert all(problem_split(row["question"]) == "test" for row in read_jsonl(out / "heldout.jsonl"))
    report = (out / "report.md").read_text()
    assert f"{results['metrics']['strict_accuracy']:.3f}" in report and "metrics.png" in report
    if method == "ce":  # the demo takes the run tail's path: a finished run is not silently replaced
        assert cli_main(argv) == 2 and (out / "model" / "model.safetensors").is_file()


def test_demo_refuses_data_it_cannot_evaluate(tmp_path, capsys):
    argv = ["demo", "--output_dir", str(tmp_path), "--dataset_name", "openai/gsm8k"]
    assert cli_main(argv) == 2
    assert "the demo evaluates on synthetic problems" in capsys.readouterr().err


def test_demo_rejects_a_missing_config(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["demo", "--config", str(tmp_path / "nope.yaml")])
    assert "no such file" in capsys.readouterr().err


def test_demo_stops_on_sigterm_like_every_command_and_resumes(tmp_path, monkeypatch, capsys):
    """SIGTERM: the checkpoint is saved and the demo exits 143 with the resume flag, no traceback; run again
    without it, the unfinished run is not silently restarted; resumed, the report counts the steps this process
    ran. The plan (steps, data, a time estimate) is printed at the start."""
    from conftest import SigtermAt, StepRecorder, watch_trainer

    out = tmp_path / "demo"
    argv = ["demo", "--output_dir", str(out), "--eval_size", "4", "--max_new_tokens", "8", "--max_steps", "6"]
    argv += ["--eval_steps", "6", "--gsm8k_eval_samples", "2", "--synthetic_train_size", "100"]
    argv += ["--disable_tqdm", "true"]
    watch_trainer(monkeypatch, SigtermAt(3))
    assert cli_main(argv) == 143
    captured = capsys.readouterr()
    assert "--resume_from_checkpoint true" in captured.err and "Traceback" not in captured.err
    assert (
        "matrix-llm demo: 6 optimizer steps of CE + 0.1 x MCE (head) on 100 synthetic problems"
        in captured.out
    )
    assert (out / "model" / "checkpoint-3").is_dir() and not (out / "report.md").exists()
    assert cli_main(argv) == 2
    assert "it holds checkpoint-3 of a run that did not finish" in capsys.readouterr().err
    steps = StepRecorder()
    watch_trainer(monkeypatch, steps)
    assert cli_main([*argv, "--resume_from_checkpoint", "true"]) == 0
    assert steps.start == 3 and steps.executed == [4, 5, 6]
    assert "6 optimizer steps (3 of them in this run, resumed at step 3)" in (out / "report.md").read_text()

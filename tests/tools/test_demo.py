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

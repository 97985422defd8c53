"""`matrix-llm`: the dispatcher and the training commands' `--help`, printed without importing torch or
transformers and listing the everyday TrainingArguments.

Run: .venv/bin/python -m pytest tests/test_cli.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from matrix_llm.cli import HELP_DIR, TRAINING_COMMANDS, help_text


@pytest.mark.parametrize("name", TRAINING_COMMANDS)
def test_the_packaged_help_is_what_the_configuration_classes_give(name):
    assert (HELP_DIR / f"{name}.txt").read_text(encoding="utf-8") == help_text(name), (
        f"matrix_llm/help/{name}.txt is stale: run `make help-text`"
    )


def test_help_imports_nothing_heavy_and_lists_the_everyday_training_fields():
    code = (
        "import contextlib, io, json, sys\n"
        "from matrix_llm.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    status = main(['ssl', '--help'])\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules)\n"
        "print(json.dumps({'status': status, 'heavy': heavy, 'text': out.getvalue()}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(proc.stdout)
    assert result["status"] == 0 and result["heavy"] == []
    for field in (
        "--ssl_method",
        "--max_steps",
        "--save_steps",
        "--save_strategy",
        "--eval_steps",
        "--output_dir",
    ):
        assert f"  {field}  [default:" in result["text"], field
    assert "--help_all" in result["text"]


TOOLS = [
    ["eval", "probe", "--data", "digits"],
    ["eval", "knn", "--data", "digits"],
    ["eval", "zeroshot", "--data", "scenes"],
    ["eval", "retrieval", "--data", "scenes"],
    ["eval", "gsm8k"],
    ["analyze", "--data", "digits"],
]


@pytest.mark.parametrize("argv", TOOLS, ids=lambda argv: " ".join(argv[:2]))
def test_a_tool_names_a_missing_model_folder_and_a_misspelt_option(argv, tmp_path, monkeypatch, capsys):
    """`outputs/nope` where `outputs/` exists is a local path, not a Hub id: "no such directory", exit 2, before
    anything loads; `--dta` is answered with the option it resembles."""
    from matrix_llm.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--model", "outputs/nope"])
    assert stop.value.code == 2
    assert "outputs/nope: no such directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--model", "outputs", "--dta", "x", "--outptu_dir", "y"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--dta: unknown option; did you mean `--data`?" in err
    assert list((tmp_path / "outputs").iterdir()) == []


def test_analyze_lmc_names_a_missing_folder_and_a_misspelt_option(tmp_path, monkeypatch, capsys):
    from matrix_llm.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    with pytest.raises(SystemExit):
        main(["analyze", "lmc", "outputs/a", "outputs", "--data", "digits"])
    assert "outputs/a: no such directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["analyze", "lmc", "outputs", "outputs", "--dtaa", "digits"])
    assert "did you mean `--data`?" in capsys.readouterr().err


def test_analyze_compare_writes_to_a_folder_named_after_the_pair():
    from matrix_llm.tools.analyze import output_name

    assert output_name("outputs/run-a") == "run-a"
    assert output_name("outputs/run-a", "outputs/run-b") == "run-a_vs_run-b"
    assert output_name("outputs/demo/model", "outputs/demo-ce/model") == "demo-model_vs_demo-ce-model"


def test_plot_names_a_folder_without_a_run(tmp_path, capsys):
    from matrix_llm.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["plot", str(tmp_path)])
    assert stop.value.code == 2 and f"no trainer_state.json in {tmp_path}" in capsys.readouterr().err

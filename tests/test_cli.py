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

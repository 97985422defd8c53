"""`matrix-llm env`: .venv/bin/python -m pytest tests/tools/test_env.py -q"""

import torch
import transformers

from matrix_llm.cli import main as cli_main
from matrix_llm.tools.env import collect


def test_collect_reports_installed_versions():
    info = collect()
    assert info["torch"] == torch.__version__
    assert info["transformers"] == transformers.__version__
    assert "accelerate config" in info


def test_cli_env_and_unknown_command(capsys):
    assert cli_main(["env"]) == 0
    assert "transformers: " in capsys.readouterr().out
    assert cli_main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err

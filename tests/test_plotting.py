"""`matrix-llm plot`: .venv/bin/python -m pytest tests/test_plotting.py -q"""

import json

import pytest

from matrix_llm.cli import main as cli_main
from matrix_llm.plotting import find_trainer_state, plot_run, series


def _write_state(path, history):
    path.mkdir(parents=True, exist_ok=True)
    (path / "trainer_state.json").write_text(json.dumps({"log_history": history}))


def test_series_skips_missing_and_nan():
    history = [{"step": 1, "lm_loss": 2.0}, {"step": 2}, {"step": 3, "lm_loss": float("nan")}, {"step": 4, "lm_loss": 1.0}]
    assert series(history, "lm_loss") == ([1, 4], [2.0, 1.0])


def test_plot_run_writes_png_from_latest_checkpoint(tmp_path):
    _write_state(tmp_path / "checkpoint-5", [{"step": 5, "lm_loss": 3.0}])
    _write_state(tmp_path / "checkpoint-10", [{"step": s, "lm_loss": 3.0 - s / 10, "matrix_loss": 1.5,
                                                "matrix_entropy": 2.0 + s / 100} for s in range(1, 11)]
                 + [{"step": 10, "eval_lm_loss": 2.5, "eval_gsm8k_strict": 0.4}])
    assert find_trainer_state(tmp_path).parent.name == "checkpoint-10"
    out = plot_run(tmp_path, tmp_path / "m.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_cli_and_error_without_metrics(tmp_path, capsys):
    _write_state(tmp_path, [{"step": 1, "lm_loss": 1.0}])
    assert cli_main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "metrics.png").is_file()
    _write_state(tmp_path / "empty", [{"step": 1, "learning_rate": 0.1}])
    with pytest.raises(ValueError, match="no metric to plot"):
        plot_run(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        find_trainer_state(tmp_path / "missing")

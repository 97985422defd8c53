"""`matrix-llm plot`: .venv/bin/python -m pytest tests/test_plotting.py -q"""

import json

import pytest

from matrix_llm.cli import main as cli_main
from matrix_llm.plotting import find_trainer_state, plot_run, series


def _write_state(path, history):
    path.mkdir(parents=True, exist_ok=True)
    (path / "trainer_state.json").write_text(json.dumps({"log_history": history}))


def test_series_skips_missing_and_nan():
    history = [
        {"step": 1, "lm_loss": 2.0},
        {"step": 2},
        {"step": 3, "lm_loss": float("nan")},
        {"step": 4, "lm_loss": 1.0},
    ]
    assert series(history, "lm_loss") == ([1, 4], [2.0, 1.0])


def test_plot_run_writes_png_from_latest_checkpoint(tmp_path):
    _write_state(tmp_path / "checkpoint-5", [{"step": 5, "lm_loss": 3.0}])
    _write_state(
        tmp_path / "checkpoint-10",
        [
            {"step": s, "lm_loss": 3.0 - s / 10, "matrix_loss": 1.5, "matrix_entropy": 2.0 + s / 100}
            for s in range(1, 11)
        ]
        + [{"step": 10, "eval_lm_loss": 2.5, "eval_gsm8k_strict": 0.4}],
    )
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


def _figure_of(monkeypatch):
    """Capture the figure plot_run saves (its titles and axes are what the PNG shows)."""
    from matplotlib.figure import Figure

    saved = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (saved.append(self), real(self, *a, **k))[1])
    return saved


def test_title_panels_and_log_scale_from_the_objective(tmp_path, monkeypatch):
    """The suptitle is the `title` argument (mutation caught: the panel loop's variable shadowing it, which titled
    every plot "GSM8K strict-match"); panels, order and titles come from the objective's matrix_llm_run.json;
    a loss spanning > 10x gets a log axis; every panel has a y label."""
    from matrix_llm.modes import LMObjective
    from matrix_llm.runner import write_run_info

    history = [
        {"step": s, "lm_loss": 50.0 / s, "matrix_entropy": 2.0 + s / 100, "learning_rate": 0.1}
        for s in range(1, 21)
    ] + [{"step": 20, "eval_lm_loss": 2.5, "eval_gsm8k_strict": 0.4}]
    _write_state(tmp_path, history)
    write_run_info(tmp_path, LMObjective(loss_type="none"))
    saved = _figure_of(monkeypatch)
    plot_run(tmp_path, tmp_path / "m.png", title="my run")
    (fig,) = saved
    assert fig._suptitle.get_text() == "my run"
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert [ax.get_title() for ax in axes] == ["LM loss", "matrix entropy", "GSM8K strict-match"]
    assert axes[0].get_yscale() == "log" and axes[1].get_yscale() == "linear"
    assert [ax.get_ylabel() for ax in axes] == ["lm_loss", "matrix_entropy", "gsm8k_strict"]


def test_without_run_info_every_logged_metric_is_drawn(tmp_path, monkeypatch):
    _write_state(tmp_path, [{"step": 1, "contrastive_loss": 1.0, "grad_norm": 3.0, "eval_knn_accuracy": 0.5}])
    saved = _figure_of(monkeypatch)
    plot_run(tmp_path)
    titles = [ax.get_title() for ax in saved[0].axes if ax.axison]
    assert titles == ["contrastive loss", "knn accuracy"]
    assert saved[0]._suptitle.get_text() == tmp_path.name


def test_probe_metrics_per_layer_and_neural_collapse_references(tmp_path, monkeypatch):
    """MatrixMetricsCallback's per-layer keys share one panel (a line per layer); its pair metrics get the
    neural-collapse value of the run's class count as a reference line."""
    import math

    history = [
        {
            "step": s,
            "loss": 1.0 / s,
            "probe_layer0_matrix_entropy": 1.0 + s,
            "probe_layer1_matrix_entropy": 2.0,
            "probe_mir": 0.3,
            "probe_hdr": 0.2,
        }
        for s in range(1, 5)
    ]
    _write_state(tmp_path, history)
    (tmp_path / "matrix_llm_run.json").write_text(
        json.dumps({"plot_panels": [["total loss", "loss"]], "num_classes": 10})
    )
    saved = _figure_of(monkeypatch)
    plot_run(tmp_path)
    axes = {ax.get_title(): ax for ax in saved[0].axes if ax.axison}
    layers = axes["probe: matrix entropy per layer"]
    assert [line.get_label() for line in layers.get_lines()] == ["layer 0", "layer 1"]
    mir_lines = axes["probe: MIR (features vs head rows)"].get_lines()
    closed = 1 / 9 + 8 * math.log(8) / (9 * math.log(9))
    assert any(
        line.get_ydata()[0] == closed for line in mir_lines if line.get_label().startswith("neural collapse")
    )
    assert layers.get_ylabel() == "matrix_entropy"

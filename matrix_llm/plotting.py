"""``matrix-llm plot RUN_DIR``: draw the metrics a run logged (``trainer_state.json``) as PNG.

One panel per metric family, train and eval on the same axes: the LM loss, the matrix loss, the matrix
entropy and effective rank of the token representations, and GSM8K accuracy when the eval callback ran.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

# (panel title, train key, eval key); a panel is drawn when either key was logged.
PANELS = (
    ("LM loss", "lm_loss", "eval_lm_loss"),
    ("matrix loss", "matrix_loss", "eval_matrix_loss"),
    ("total loss", "loss", "eval_loss"),
    ("matrix entropy", "matrix_entropy", "eval_matrix_entropy"),
    ("effective rank", "effective_rank", "eval_effective_rank"),
    ("GSM8K strict-match", None, "eval_gsm8k_strict"),
)


def find_trainer_state(run_dir: str | Path) -> Path:
    """``RUN_DIR/trainer_state.json``, or the one in the latest ``checkpoint-*`` folder."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    direct = run_dir / "trainer_state.json"
    if direct.is_file():
        return direct
    checkpoints = sorted(run_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1]))
    if not checkpoints:
        raise FileNotFoundError(f"no trainer_state.json in {run_dir} or its checkpoint-* folders")
    return checkpoints[-1]


def series(log_history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """The (step, value) pairs of one metric in a Trainer ``log_history``, skipping non-finite values."""
    steps, values = [], []
    for entry in log_history:
        value = entry.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            steps.append(int(entry.get("step", len(steps))))
            values.append(float(value))
    return steps, values


def plot_run(run_dir: str | Path, output: str | Path | None = None, *, title: str | None = None) -> Path:
    """Draw the logged metrics of a run and return the path of the PNG written (``title``: default the run name)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    state_path = find_trainer_state(run_dir)
    history = json.loads(state_path.read_text())["log_history"]
    panels = [(title, train, eval_) for title, train, eval_ in PANELS
              if (train and series(history, train)[0]) or series(history, eval_)[0]]
    if not panels:
        raise ValueError(f"{state_path} has no metric to plot; expected one of "
                         f"{[k for _, t, e in PANELS for k in (t, e) if k]}")
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (title, train, eval_) in zip(axes.flat, panels, strict=False):
        for key, style, label in ((train, "-", "train"), (eval_, "o--", "eval")):
            if key:
                steps, values = series(history, key)
                if steps:
                    ax.plot(steps, values, style, label=label, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title or str(Path(run_dir).resolve().name))
    fig.tight_layout()
    output = Path(output) if output else state_path.parent / "metrics.png"
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="matrix-llm plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="an output_dir (or checkpoint) holding trainer_state.json")
    parser.add_argument("--output", default=None, help="PNG path (default: RUN_DIR/metrics.png)")
    args = parser.parse_args(argv)
    path = plot_run(args.run_dir, args.output)
    print(f"wrote {path}")  # noqa: T201 - CLI output
    return 0

"""``matrix-llm plot RUN_DIR``: draw the metrics a run logged (``trainer_state.json``) as PNG.

One panel per metric, train and eval (``eval_`` + key) on the same axes. Which panels, in which order and
with which titles is the objective's business: the run tail writes them to ``RUN_DIR/matrix_llm_run.json``
(``plot_panels`` of the objective, e.g. LM loss, matrix loss, matrix entropy, effective rank, GSM8K accuracy
for ``lm``); without that file every logged metric but the Trainer's bookkeeping is drawn. Losses that stay
positive and span more than a factor 10 get a log y-axis, so that the first steps do not squash the curve.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from .hub import RunFolder
from .parsing.usage import ToolParser

# Trainer bookkeeping that is not a metric of the model
_BOOKKEEPING = ("step", "epoch", "learning_rate", "grad_norm", "total_flos", "train_loss")
_BOOKKEEPING_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")


def find_trainer_state(run_dir: str | Path) -> Path:
    """``RUN_DIR/trainer_state.json``, or the one in the latest ``checkpoint-*`` folder."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    direct = run_dir / "trainer_state.json"
    if direct.is_file():
        return direct
    checkpoints = sorted(
        run_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1])
    )
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


_PER_LAYER = re.compile(r"^probe_layer(\d+)_(matrix_entropy|effective_rank)$")
# probe pair metrics (MatrixMetricsCallback) and their neural-collapse values for C classes
_PROBE_PAIRS = (
    (
        "probe: MIR (features vs head rows)",
        "probe_mir",
        lambda c: 1 / (c - 1) + (c - 2) * math.log(c - 2) / ((c - 1) * math.log(c - 1)),
    ),
    ("probe: HDR", "probe_hdr", lambda c: 0.0),
    ("probe: NC1 (within / between)", "probe_nc1", lambda c: 0.0),
    ("probe: head matrix entropy", "probe_head_entropy", lambda c: math.log(c - 1)),
    ("probe: class-mean matrix entropy", "probe_class_mean_entropy", lambda c: math.log(c - 1)),
)


def read_run_info(*folders: str | Path | None) -> tuple[dict, Path] | None:
    """The first ``matrix_llm_run.json`` found in ``folders`` (``None`` entries skipped), with its path."""
    for folder in folders:
        info = RunFolder(Path(folder).expanduser()).run_info if folder else None
        if info is not None and info.is_file():
            return json.loads(info.read_text()), info
    return None


def _run_info(state_path: Path) -> dict | None:
    """``matrix_llm_run.json`` beside the state or one folder up (a checkpoint's parent), if any."""
    found = read_run_info(state_path.parent, state_path.parent.parent)
    return found[0] if found else None


def _declared_panels(state_path: Path) -> list[tuple[str, str]] | None:
    """The objective's ``(title, key)`` panels from ``matrix_llm_run.json``."""
    info = _run_info(state_path)
    return None if info is None else [(str(t), str(k)) for t, k in info.get("plot_panels", [])]


def probe_panels(
    history: list[dict], num_classes: int | None
) -> list[tuple[str, list[tuple[str, str]], float | None]]:
    """Panels of the MatrixMetricsCallback metrics: one line per layer for the per-layer entropy / effective rank,
    and the pair metrics with their neural-collapse value as a reference line when the class count is known."""
    keys = _logged_keys(history)
    out = []
    for metric, title in (
        ("matrix_entropy", "probe: matrix entropy per layer"),
        ("effective_rank", "probe: effective rank per layer"),
    ):
        layers = sorted(
            {int(m.group(1)) for k in keys if (m := _PER_LAYER.match(k)) and m.group(2) == metric}
        )
        if layers:
            out.append((title, [(f"probe_layer{i}_{metric}", f"layer {i}") for i in layers], None))
    for title, key, closed_form in _PROBE_PAIRS:
        if key in keys:
            reference = closed_form(num_classes) if num_classes and num_classes >= 3 else None
            out.append((title, [(key, "probe")], reference))
    return out


def _logged_keys(history: list[dict]) -> list[str]:
    """Every numeric key of the log history, without the ``eval_`` prefix and the Trainer's bookkeeping."""
    keys: dict[str, None] = {}
    for entry in history:
        for key, value in entry.items():
            base = key[len("eval_") :] if key.startswith("eval_") else key
            if (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and base not in _BOOKKEEPING
                and not key.endswith(_BOOKKEEPING_SUFFIXES)
            ):
                keys[base] = None
    return list(keys)


def panels_for(state_path: Path, history: list[dict]) -> list[tuple[str, str]]:
    """``(title, key)`` of the panels to draw: the objective's (those that were logged), else every metric."""
    logged = set(_logged_keys(history))
    declared = _declared_panels(state_path)
    if declared is not None:
        return [(title, key) for title, key in declared if key in logged]
    return [(key.replace("_", " "), key) for key in _logged_keys(history) if not key.startswith("probe_")]


def _log_scale(values: list[float]) -> bool:
    return bool(values) and min(values) > 0 and max(values) / min(values) > 10


def plot_run(run_dir: str | Path, output: str | Path | None = None, *, title: str | None = None) -> Path:
    """Draw the logged metrics of a run and return the path of the PNG written (``title``: default the run name)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    state_path = find_trainer_state(run_dir)
    history = json.loads(state_path.read_text())["log_history"]
    num_classes = (_run_info(state_path) or {}).get("num_classes")
    panels = [
        (title, [(key, "train"), (f"eval_{key}", "eval")], None)
        for title, key in panels_for(state_path, history)
    ]
    panels += probe_panels(history, num_classes)
    if not panels:
        raise ValueError(f"{state_path} has no metric to plot (only the Trainer's bookkeeping was logged)")
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (panel_title, lines, reference) in zip(axes.flat, panels, strict=False):
        drawn: list[float] = []
        for name, label in lines:
            steps, values = series(history, name)
            if steps:
                style = "o--" if label == "eval" else "-"
                ax.plot(steps, values, style, label=label, markersize=3)
                drawn += values
        if reference is not None:
            ax.axhline(reference, color="grey", linestyle=":", label=f"neural collapse ({reference:.3g})")
        if "loss" in lines[0][0] and _log_scale(drawn):
            ax.set_yscale("log")
        ax.set_title(panel_title)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(re.sub(r"^probe_layer\d+_", "", lines[0][0]))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if len(lines) > 6 else 1)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title or str(Path(run_dir).resolve().name))
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # room for the suptitle
    output = Path(output) if output else RunFolder(state_path.parent).metrics_png
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def plot_lines(
    panels: list[tuple[str, dict[str, tuple[list[float], list[float]]]]],
    output: str | Path,
    *,
    xlabel: str,
    title: str,
) -> Path:
    """One panel per ``(title, {line label: (xs, ys)})``, lines with markers (a label containing ``random init``
    is drawn dashed); written to ``output`` (PNG). Used by ``matrix-llm analyze`` for per-layer tables and
    interpolation paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    labels = list(dict.fromkeys(label for _, lines in panels for label in lines))
    colours = {label: f"C{i % 10}" for i, label in enumerate(labels)}  # one colour per line in every panel
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (panel_title, lines) in zip(axes.flat, panels, strict=False):
        for label, (xs, ys) in lines.items():
            ax.plot(
                xs,
                ys,
                "o--" if "random init" in label else "o-",
                label=label,
                markersize=3,
                color=colours[label],
            )
            if all(float(x).is_integer() for x in xs):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(panel_title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return Path(output)


def plot_seen_unseen(result: dict, output: str | Path, *, unseen: list[str] | tuple[str, ...]) -> Path:
    """Generalised zero-shot's trade-off: ``result``'s seen-unseen curve of calibrated stacking (from
    :func:`matrix_llm.modes.clip.evaluate.zero_shot_accuracy`), its area, the uncalibrated point and the straight line between
    the curve's ends (trading one point of seen accuracy for one of unseen); written to ``output`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = result["seen_unseen_curve"]
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot(
        curve["unseen"],
        curve["seen"],
        "-",
        color="C0",
        label=f"calibrated stacking (AUSUC {result['zeroshot_ausuc']:.3f})",
    )
    ax.plot(
        [0, curve["unseen"][-1]],
        [curve["seen"][0], 0],
        ":",
        color="grey",
        label="straight line between the ends",
    )
    ax.plot(
        result["zeroshot_top1_unseen"], result["zeroshot_top1_seen"], "o", color="C3", label="no calibration"
    )
    ax.set_xlabel("unseen classes' top-1 among all")
    ax.set_ylabel("seen classes' top-1 among all")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"unseen: {', '.join(unseen)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return Path(output)


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(
        prog="matrix-llm plot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", help="an output_dir (or checkpoint) holding trainer_state.json")
    parser.add_argument("--output", default=None, help="PNG path (default: RUN_DIR/metrics.png)")
    args = parser.parse_args(argv)
    try:
        path = plot_run(args.run_dir, args.output)
    except (FileNotFoundError, ValueError) as e:  # no trainer_state.json; nothing logged
        parser.error(str(e))
    print(f"wrote {path}")  # noqa: T201 - CLI output
    return 0

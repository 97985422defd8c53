"""Run an experiment through the toolkit's own commands: every arm x seed is one `matrix-llm <command>` process
(its recipe plus the arm's and the seed's fields), whose ``results.json`` the summary reads. A smoke run
(``--smoke``) runs the same command lines inside its own process instead: the pipeline is what it checks, and
one process saves each run's ~7 s of imports (the smoke tests took 7 of the 13 minutes of ``make test``).

- :func:`run_grid` runs (or, with ``reuse``, reads what an earlier run left) ``OUT/<arm>/seed<k>/``, through
  :func:`run_toolkit`, which runs any other command (an evaluation of a saved run) the same way;
- :func:`summarize`: per arm and metric, mean, sample std and the per-seed values; per non-baseline arm, the
  paired difference to the baseline (same seeds) with its mean and std;
- :func:`markdown_table` renders it, :func:`bar_panel` draws one metric per arm with the per-seed points;
- :func:`log_history` / :func:`curve` read a run's logged series (``trainer_state.json``);
- :func:`save_summary` writes ``summary.json`` and says where the doc and figure go, :func:`pyplot` gives
  matplotlib without a display;
- :func:`experiment_args` parses the flags every experiment takes (``--smoke OUT``, ``--reuse``) and
  :func:`write_doc` writes ``docs/experiments/<name>.md`` in the one layout (question, setup, result, figure,
  answer, what would change it, the command).

Experiments are not part of ``make test``; each has a smoke test at tiny size (tests/test_experiments.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CLIP_TINY_DUAL",
    "FASHION",
    "GSM8K",
    "bar_panel",
    "curve",
    "experiment_args",
    "log_history",
    "markdown_table",
    "mean_std",
    "paired_test",
    "pyplot",
    "run_grid",
    "run_toolkit",
    "save_summary",
    "summarize",
    "write_doc",
]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared beside the repo
FASHION, GSM8K = str(SHARED_DATA / "fashion-mnist"), str(SHARED_DATA / "gsm8k")
# the clip studies' model: demo/clip.yaml's dual encoder before the demo took the pretrained MiniLM text tower
CLIP_TINY_DUAL = ["--model_name_or_path", "tiny-dual", "--freeze_text_tower", "false"]


def run_grid(
    command: str,
    base: Sequence[str],
    arms: Mapping[str, Sequence[str]],
    seeds: Sequence[int],
    out: Path,
    *,
    reuse: bool = False,
    seed_fields: Sequence[str] = ("--seed",),
    results_file: str = "results.json",
) -> dict[str, dict[int, dict[str, Any]]]:
    """``{arm: {seed: results_file}}`` of ``matrix-llm {command} *base *arm --seed k --output_dir OUT/arm/seedk``
    (every flag of ``seed_fields`` gets the seed, e.g. also ``--label_seed``)."""
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for arm, extra in arms.items():
        for seed in seeds:
            run_dir = out / arm / f"seed{seed}"
            seeding = [x for flag in seed_fields for x in (flag, str(seed))]
            argv = [
                command,
                *base,
                *extra,
                *seeding,
                "--output_dir",
                str(run_dir),
                "--overwrite_output_dir",
                "true",
                "--disable_tqdm",
                "true",
            ]
            results.setdefault(arm, {})[seed] = run_toolkit(
                argv, run_dir / results_file, reuse=reuse, label=f"{arm} seed {seed}"
            )
    return results


IN_PROCESS = False  # set by experiment_args for a smoke run


def run_toolkit(argv: Sequence[str], result: Path, *, reuse: bool, label: str) -> dict:
    """``matrix-llm ARGV`` in its own process (in this one when :data:`IN_PROCESS`; with ``reuse``, not again when
    ``result`` exists), then its JSON ``result``; a failure raises with the end of the process's stderr."""
    if not (reuse and result.is_file()):
        print(f"[{label}] matrix_llm.cli " + " ".join(argv), flush=True)
        if IN_PROCESS:
            from matrix_llm.cli import main

            try:
                status = main(list(argv))
            except SystemExit as stop:  # argparse's usage errors
                status = stop.code
            if status:
                raise RuntimeError(f"{label} failed with exit status {status} (its message is above)")
        else:
            proc = subprocess.run(
                [sys.executable, "-m", "matrix_llm.cli", *argv], capture_output=True, text=True
            )
            if proc.returncode != 0:
                raise RuntimeError(f"{label} failed:\n{proc.stderr[-3000:]}")
    return json.loads(result.read_text())


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_test(diffs: Sequence[float], comparisons: int = 1) -> str:
    """``mean ± std (higher in k of n seeds, paired t = t, p = p)`` of per-seed differences: the paired t test's
    two-sided p, Bonferroni-corrected when ``comparisons`` arms are tested against one baseline."""
    from scipy import stats

    mean, std = mean_std(diffs)
    t = mean / (std / len(diffs) ** 0.5) if std > 0 else float("inf")
    p = 2 * stats.t.sf(abs(t), df=len(diffs) - 1)
    corrected = (
        f", {min(1.0, comparisons * p):.2f} corrected for {comparisons} arms" if comparisons > 1 else ""
    )
    return (
        f"{mean:+.3f} ± {std:.3f} (higher in {sum(v > 0 for v in diffs)} of {len(diffs)} seeds, "
        f"paired t = {t:.1f}, p = {p:.2f}{corrected})"
    )


def summarize(
    results: Mapping[str, Mapping[int, Mapping[str, Any]]], metrics: Sequence[str], baseline: str
) -> dict[str, Any]:
    """Means, stds, per-seed values and paired differences to ``baseline`` (module docstring)."""
    summary: dict[str, Any] = {"arms": {}, "paired": {}}
    for arm, runs in results.items():
        summary["arms"][arm] = {}
        for metric in metrics:
            values = [float(runs[s][metric]) for s in sorted(runs)]
            mean, std = mean_std(values)
            summary["arms"][arm][metric] = {"mean": mean, "std": std, "values": values}
        if arm != baseline:
            summary["paired"][arm] = {}
            for metric in metrics:
                seeds = sorted(set(runs) & set(results[baseline]))
                diffs = [float(runs[s][metric]) - float(results[baseline][s][metric]) for s in seeds]
                mean, std = mean_std(diffs)
                summary["paired"][arm][metric] = {"mean": mean, "std": std, "values": diffs, "seeds": seeds}
    return summary


def markdown_table(summary: Mapping[str, Any], metrics: Sequence[str]) -> list[str]:
    """Rows ``arm | metric mean ± std (per-seed values) ...`` and, below, the paired differences."""
    lines = ["| arm | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for arm, values in summary["arms"].items():
        cells = [
            f"{v['mean']:.4f} ± {v['std']:.4f} ({', '.join(f'{x:.3f}' for x in v['values'])})"
            for v in (values[m] for m in metrics)
        ]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    for arm, values in summary["paired"].items():
        cells = [f"{v['mean']:+.4f} ± {v['std']:.4f}" for v in (values[m] for m in metrics)]
        lines.append(f"| {arm} - baseline (paired) | " + " | ".join(cells) + " |")
    return lines


def experiment_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``--smoke OUT`` (a tiny run into OUT, no docs written) and ``--reuse`` (read the runs an earlier call left)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--smoke", type=Path, default=None, help="tiny run into this folder (no docs written)"
    )
    parser.add_argument("--reuse", action="store_true", help="read the runs an earlier call left")
    args = parser.parse_args(argv)
    global IN_PROCESS
    IN_PROCESS = args.smoke is not None
    return args


def bar_panel(
    ax: Any, summary: Mapping[str, Any], metric: str, title: str, *, from_zero: bool = True
) -> None:
    """One bar per arm (mean ± std) with its per-seed values as points. ``from_zero=False`` (for values whose
    differences are small beside their size, such as a loss): the mean as a bar-less marker with its error bar, on
    an axis fitted to the values."""
    arms = list(summary["arms"])
    for j, arm in enumerate(arms):
        v = summary["arms"][arm][metric]
        if from_zero:
            ax.bar(j, v["mean"], yerr=v["std"], color=f"C{j}", alpha=0.6, capsize=4)
        else:
            ax.errorbar(
                j, v["mean"], yerr=v["std"], color=f"C{j}", marker="_", markersize=24, capsize=4, lw=2
            )
        ax.plot([j] * len(v["values"]), v["values"], "k.", markersize=6)
    crowded = len(arms) > 3  # long arm names overlap side by side
    ax.set_xticks(
        range(len(arms)), arms, fontsize=8, rotation=25 if crowded else 0, ha="right" if crowded else "center"
    )
    ax.set_title(title)


RESULT_NOTE = (
    "mean ± sample std over seeds, per-seed values in brackets; the paired rows: difference to the "
    "baseline arm, same seeds"
)


def write_doc(
    path: Path,
    *,
    title: str,
    question: str,
    setup: str,
    result: Sequence[str],
    figure: str,
    answer: str,
    change: str,
    command: str,
    result_note: str = RESULT_NOTE,
) -> None:
    """``docs/experiments/<name>.md``: ``result`` is the markdown lines (tables) under the result heading."""
    text = "\n".join(
        [
            f"# {title}",
            "",
            f"**Question.** {question}",
            "",
            f"**Setup.** {setup}",
            "",
            f"**Result** ({result_note}):",
            "",
            *result,
            "",
            f"![results]({figure})",
            "",
            f"**Answer.** {answer}",
            "",
            f"**What would change it.** {change}",
            "",
            "**Reproduce.**",
            "",
            "```",
            command,
            "```",
            "",
        ]
    )
    path.write_text(text)
    print(f"wrote {path}")


def log_history(run_dir: Path) -> list[dict]:
    """The Trainer's ``log_history`` of one run."""
    return json.loads((run_dir / "trainer_state.json").read_text())["log_history"]


def curve(log: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of ``key``; a training key skips the evaluation entries (which repeat it as ``eval_``)."""
    training = not key.startswith("eval_")
    points = [(h["step"], h[key]) for h in log if key in h and not (training and "eval_loss" in h)]
    return [s for s, _ in points], [v for _, v in points]


def save_summary(out: Path, summary: Mapping[str, Any], smoke: bool, repo: Path) -> Path:
    """Write ``out/summary.json``; returns the folder of the doc and the figure (``out`` for a smoke run, else
    ``docs/experiments``)."""
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    docs = out if smoke else repo / "docs" / "experiments"
    docs.mkdir(parents=True, exist_ok=True)
    return docs


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

"""Run an experiment through the toolkit's own commands: every arm x seed is one `matrix-llm <command>` process
(its recipe plus the arm's and the seed's fields), whose ``results.json`` the summary reads. A smoke run
(``--smoke``) runs the same command lines inside its own process instead: the pipeline is what it checks, and
one process saves each run's ~7 s of imports (the smoke tests took 7 of the 13 minutes of ``make test``).

- :func:`run_grid` runs (or, with ``reuse``, reads what an earlier run left) ``OUT/<arm>/seed<k>/`` (the command
  lines of :func:`grid_runs`), through
  :func:`run_toolkit`, which runs any other command (an evaluation of a saved run) the same way;
- the comparisons themselves (effect, CI, tests, power, verdict; rank correlation) are in comparisons.py;
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
    "environment",
    "experiment_args",
    "grid_runs",
    "load_archive",
    "log_history",
    "markdown_table",
    "mean_std",
    "pyplot",
    "run_grid",
    "run_toolkit",
    "read_run_json",
    "save_summary",
    "seed_runs",
    "study_folder",
    "summarize",
    "write_doc",
]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared beside the repo
FASHION, GSM8K = str(SHARED_DATA / "fashion-mnist"), str(SHARED_DATA / "gsm8k")
# the clip studies' model: demo/clip.yaml's dual encoder before the demo took the pretrained MiniLM text tower
CLIP_TINY_DUAL = ["--model_name_or_path", "tiny-dual", "--freeze_text_tower", "false"]


def grid_runs(
    command: str,
    base: Sequence[str],
    arms: Mapping[str, Sequence[str]],
    seeds: Sequence[int],
    out: Path,
    *,
    seed_fields: Sequence[str] = ("--seed",),
    results_file: str = "results.json",
) -> list[tuple[str, int, list[str], Path]]:
    """``(arm, seed, argv, result)`` of every run of the grid: ``argv`` is ``{command} *base *arm --seed k
    --output_dir OUT/arm/seedk`` (every flag of ``seed_fields`` gets the seed, e.g. also ``--label_seed``), ``result``
    its ``results_file``."""
    runs = []
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
            runs.append((arm, seed, argv, run_dir / results_file))
    return runs


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
    """``{arm: {seed: results_file}}`` of the :func:`grid_runs`, each run through :func:`run_toolkit`."""
    results: dict[str, dict[int, dict[str, Any]]] = {}
    grid = grid_runs(command, base, arms, seeds, out, seed_fields=seed_fields, results_file=results_file)
    for arm, seed, argv, result in grid:
        results.setdefault(arm, {})[seed] = run_toolkit(argv, result, reuse=reuse, label=f"{arm} seed {seed}")
    return results


IN_PROCESS = False  # set by experiment_args for a smoke run
REUSE = False  # set by experiment_args: the runs were read from an earlier call
REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "docs" / "experiments" / "runs"  # the committed archives: what each study read from its runs


class _Archive:
    """What a study reads from its runs' folders (their JSON files, by path under the study's folder), kept so
    ``--reuse`` works where the runs never ran: :func:`study_folder` loads ``docs/experiments/runs/<name>.json.gz``,
    :func:`read_run_json` answers from it when the file is not on disk, and :func:`save_summary` writes what this
    call read back into it, with the environment the runs ran in (``_environment``, :func:`runs_environment`) and
    the study's summary (``_summary``, which experiments/overview.py reads)."""

    def __init__(self) -> None:
        self.open(None, "")

    def open(self, root: Path | None, name: str) -> None:
        self.root, self.name, self.ran, self.started_in = root, name, False, ""
        # runs this call read (--reuse: on disk or from the committed archive) instead of running them
        self.reused = 0
        self.summary: Mapping[str, Any] | None = None  # set by save_summary (not for a smoke run)
        self.stored: dict[str, Any] = {}
        self.read: dict[str, Any] = {}

    def key(self, path: Path) -> str | None:
        if self.root is None:
            return None
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return None


ARCHIVE = _Archive()


def load_archive(name: str) -> dict[str, Any]:
    """The committed archive of study ``name`` (``docs/experiments/runs/<name>.json.gz``), ``{}`` when it has none."""
    import gzip

    archive = RUNS / f"{name}.json.gz"
    return json.loads(gzip.decompress(archive.read_bytes())) if archive.is_file() else {}


def study_folder(name: str, args: argparse.Namespace) -> Path:
    """The study's runs folder: the smoke folder, else ``outputs/experiments/<name>``, whose committed archive
    (:func:`load_archive`) :func:`read_run_json` falls back on with ``--reuse``."""
    out = args.smoke or REPO / "outputs" / "experiments" / name
    ARCHIVE.open(out, name)
    ARCHIVE.started_in = environment()  # the code the runs run with: the tree when the study starts
    if args.reuse and not args.smoke:
        ARCHIVE.stored = load_archive(name)
    return out


def read_run_json(path: Path) -> Any:
    """A JSON file a run wrote: from disk, else (``--reuse``) from the study's committed archive."""
    key = ARCHIVE.key(path)
    if path.is_file():
        data = json.loads(path.read_text())
    elif key is not None and key in ARCHIVE.stored:
        data = ARCHIVE.stored[key]
    else:
        where = f" nor in docs/experiments/runs/{ARCHIVE.name}.json.gz" if ARCHIVE.stored else ""
        raise FileNotFoundError(f"{path}: not on disk{where} (run the study without --reuse)")
    if key is not None:
        ARCHIVE.read[key] = data
    return data


def seed_runs(folder: Path) -> list[Path]:
    """The ``seed<k>`` run folders of one arm, on disk or (``--reuse``) in the study's archive, by seed."""
    found = {p.name for p in folder.glob("seed*")}
    key = ARCHIVE.key(folder)
    if key is not None:
        found |= {k[len(key) + 1 :].split("/")[0] for k in ARCHIVE.stored if k.startswith(key + "/seed")}
    return [folder / name for name in sorted(found, key=lambda n: int(n[4:]))]


def _has_run(path: Path) -> bool:
    key = ARCHIVE.key(path)
    return path.is_file() or (key is not None and key in ARCHIVE.stored)


def run_toolkit(argv: Sequence[str], result: Path, *, reuse: bool, label: str) -> dict:
    """``matrix-llm ARGV`` in its own process (in this one when :data:`IN_PROCESS`; with ``reuse``, not again when
    ``result`` exists, on disk or in the study's archive), then its JSON ``result``; a failure raises with the end
    of the process's stderr."""
    if reuse and _has_run(result):
        ARCHIVE.reused += 1
    else:
        ARCHIVE.ran = True
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
    return read_run_json(result)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


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


def experiment_args(
    description: str, argv: Sequence[str] | None = None, flags: Mapping[str, str] | None = None
) -> argparse.Namespace:
    """``--smoke OUT`` (a tiny run into OUT, no docs written), ``--reuse`` (read the runs an earlier call left) and
    the study's own on/off ``flags`` (name -> help)."""
    parser = argparse.ArgumentParser(description=description)
    for flag, text in (flags or {}).items():
        parser.add_argument(flag, action="store_true", help=text)
    parser.add_argument(
        "--smoke", type=Path, default=None, help="tiny run into this folder (no docs written)"
    )
    parser.add_argument("--reuse", action="store_true", help="read the runs an earlier call left")
    args = parser.parse_args(argv)
    global IN_PROCESS, REUSE
    IN_PROCESS, REUSE = args.smoke is not None, args.reuse
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


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what :mod:`platform` knows)."""
    import platform

    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> str:
    """Where this process runs: the commit (``+ uncommitted changes`` when the tree differs from it), Python, torch,
    transformers, the CPU count, model and the instruction set torch's kernels use (runs on another CPU take other
    floating-point code paths, which move single seeds: docs/experiments/README.md), ``MKL_CBWR`` when set, and the
    torch threads."""
    import os
    import platform

    import torch
    import transformers

    commit = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    # the docs and figures being written are not the code that ran
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/experiments")
    dirty = " + uncommitted changes" if changed else ""
    paths = torch.backends.cpu.get_cpu_capability()
    if os.environ.get("MKL_CBWR"):
        paths += f", MKL_CBWR={os.environ['MKL_CBWR']}"
    return (
        f"commit {commit}{dirty}; Python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}; {os.cpu_count()} CPUs ({_cpu_model()}, torch kernels {paths}), "
        f"{torch.get_num_threads()} torch threads"
    )


def _ran_in() -> str:
    """Where the runs of a call that ran some ran: this process's :func:`environment` as the study started, and
    where it also read earlier runs (a study extended with more runs: on disk or from the committed archive), the
    archive's record of those beside it."""
    here = ARCHIVE.started_in or environment()
    if not ARCHIVE.reused:
        return here
    earlier = ARCHIVE.stored.get("_environment", "not recorded")
    return (
        f"{here} for the runs this call made; the {ARCHIVE.reused} before them (read with --reuse): {earlier}"
    )


def runs_environment() -> str:
    """Where the study's runs ran: when this call ran any of them, :func:`_ran_in`; when every run was read from an
    earlier call (``--reuse``), the environment the study's archive recorded when they ran, with the commit the doc
    is rendered at (an archive from before that record: not recorded, never this machine's; runs on disk without an
    archive: this process's, marked as a rerender)."""
    if ARCHIVE.ran:
        return _ran_in()
    if not REUSE:
        return ARCHIVE.started_in or environment()
    rendered = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    if "_environment" in ARCHIVE.stored:
        return f"{ARCHIVE.stored['_environment']}; rendered from them with --reuse at commit {rendered}"
    if ARCHIVE.stored:
        return (
            "their commit and environment were not recorded (the archive predates that record); rendered from "
            f"them with --reuse at commit {rendered}"
        )
    return f"{environment()} (--reuse: the runs were read from an earlier call, at this commit or before it)"


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
    """``docs/experiments/<name>.md``: ``result`` is the markdown lines (tables) under the result heading; the runs'
    commit and environment (:func:`runs_environment`) go under the setup; ``figure``, the doc's image, must already
    be beside it."""
    if not (path.parent / figure).is_file():
        raise FileNotFoundError(f"write_doc: {path.name} shows {figure}, which is not in {path.parent}")
    text = "\n".join(
        [
            f"# {title}",
            "",
            f"**Question.** {question}",
            "",
            f"**Setup.** {setup}",
            "",
            f"**Runs.** {runs_environment()}.",
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
    if ARCHIVE.summary is not None:
        _write_archive()
    print(f"wrote {path}")


def log_history(run_dir: Path) -> list[dict]:
    """The Trainer's ``log_history`` of one run."""
    return read_run_json(run_dir / "trainer_state.json")["log_history"]


def curve(log: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of ``key``; a training key skips the evaluation entries (which repeat it as ``eval_``)."""
    training = not key.startswith("eval_")
    points = [(h["step"], h[key]) for h in log if key in h and not (training and "eval_loss" in h)]
    return [s for s, _ in points], [v for _, v in points]


COLLAPSED = 0.1  # the image features' matrix entropy below which a CLIP run counts as collapsed


def image_collapsed(run_dir: Path) -> bool:
    """Whether a CLIP run's image features ended collapsed: their matrix entropy at the last logged training step
    below :data:`COLLAPSED`."""
    return curve(log_history(run_dir), "image_entropy")[1][-1] < COLLAPSED


def save_summary(out: Path, summary: Mapping[str, Any], smoke: bool, repo: Path) -> Path:
    """Write ``out/summary.json`` and (not for a smoke run) the study's archive of what it read from its runs
    (:func:`study_folder`); returns the folder of the doc and the figure (``out`` for a smoke run, else
    ``docs/experiments``)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    docs = out if smoke else repo / "docs" / "experiments"
    docs.mkdir(parents=True, exist_ok=True)
    if not smoke and ARCHIVE.name:
        ARCHIVE.summary = summary
        _write_archive()
    return docs


def _write_archive() -> None:
    """``docs/experiments/runs/<study>.json.gz``: what the study read from its runs so far, its summary and where
    the runs ran; written by :func:`save_summary` and again by :func:`write_doc`, so that what a study reads
    between the two (a figure's training logs) is kept too."""
    import gzip

    RUNS.mkdir(parents=True, exist_ok=True)
    # overview.py reads the summary
    kept = {**dict(sorted(ARCHIVE.read.items())), "_summary": ARCHIVE.summary}
    ran_in = _ran_in() if ARCHIVE.ran else ARCHIVE.stored.get("_environment")
    if ran_in is not None:  # where the runs ran (runs_environment), kept for a later --reuse
        kept["_environment"] = ran_in
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    (RUNS / f"{ARCHIVE.name}.json.gz").write_bytes(gzip.compress(text.encode(), mtime=0))


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

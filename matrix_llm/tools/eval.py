"""``matrix-llm eval TASK``: the dispatcher of the evaluation tasks, each in its mode's ``evaluate`` module and
imported only when it runs (``matrix-llm eval --help`` loads none of them): ``gsm8k`` / ``rescore``
(:mod:`matrix_llm.modes.lm.eval_gsm8k`), ``probe`` / ``knn`` (:mod:`matrix_llm.modes.ssl.evaluate`), ``zeroshot``
/ ``retrieval`` (:mod:`matrix_llm.modes.clip.eval_tasks`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _lazy(module: str, function: str):
    """A task whose module is imported only when it runs (``matrix-llm eval --help`` stays fast)."""

    def run(argv: Sequence[str]) -> dict[str, Any]:
        return getattr(importlib.import_module(f"matrix_llm.{module}"), function)(argv)

    return run


_TASKS = {
    "gsm8k": _lazy("modes.lm.eval_gsm8k", "run_gsm8k_cli"),
    "rescore": _lazy("modes.lm.eval_gsm8k", "rescore_cli"),
    "probe": _lazy("modes.ssl.evaluate", "main_probe"),
    "knn": _lazy("modes.ssl.evaluate", "main_knn"),
    "zeroshot": _lazy("modes.clip.eval_tasks", "main_zeroshot"),
    "retrieval": _lazy("modes.clip.eval_tasks", "main_retrieval"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``matrix-llm eval``: ``gsm8k``, ``rescore``, ``probe``, ``knn``, ``zeroshot`` or ``retrieval``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        sys.stdout.write(
            "usage: matrix-llm eval {gsm8k,rescore,probe,knn,zeroshot,retrieval} [options]\n\n"
            "  gsm8k    GSM8K accuracy by greedy generation, scored like lm-evaluation-harness\n"
            "           (matrix-llm eval gsm8k --model PATH_OR_HUB_ID [--prompt qa] [--limit 50] ...)\n"
            "  rescore  recompute every score of a samples.jsonl with the current extraction code\n"
            "  probe    linear probe (logistic regression) on a vision backbone's frozen features, and at random init\n"
            "  knn      weighted cosine kNN (DINO) on a vision backbone's frozen features, and at random init\n"
            "  zeroshot zero-shot top-1 / top-5 of an image-text dual encoder with prompt templates\n"
            "  retrieval image <-> text retrieval R@1/5/10 of a dual encoder (open_clip's metric names)\n\n"
            "`matrix-llm eval TASK --help` lists the options of a task with their defaults.\n"
        )
        return 0 if argv else 2
    task, rest = argv[0], argv[1:]
    if task not in _TASKS:
        sys.stderr.write(f"matrix-llm eval: unknown task {task!r}; expected one of {sorted(_TASKS)}\n")
        return 2
    _TASKS[task](rest)
    return 0

"""GSM8K evaluation by generation, scored like lm-evaluation-harness: the library behind ``matrix-llm eval``
(:mod:`matrix_llm.modes.lm.eval_gsm8k`) and the in-training :class:`~matrix_llm.modes.lm.callback.GSM8KEvalCallback`.

:func:`evaluate_gsm8k` generates (:mod:`matrix_llm.modes.lm.generation`) and :func:`score_samples` scores; prompts,
stop strings, answer extraction and normalisation all come from :mod:`matrix_llm.data.gsm8k`. The sample
fields, metrics and standard errors are documented in :mod:`matrix_llm.modes.lm.eval_gsm8k`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "BOOT_SEED",
    "N_BOOT",
    "EvalResult",
    "build_prompts",
    "evaluate_gsm8k",
    "read_jsonl",
    "score_samples",
    "write_jsonl",
]

N_BOOT = 10_000
BOOT_SEED = 0


# ------------------------------------------------------------------------------------------------------------
# Scoring: one function for the eval run, rescore and the callback
# ------------------------------------------------------------------------------------------------------------


def _bootstrap_stderr(k: int, n: int, *, n_boot: int, seed: int) -> float | None:
    import numpy as np

    if n < 2:
        return None
    means = np.random.default_rng(seed).binomial(n, k / n, size=n_boot) / n
    return float(np.std(means, ddof=1))


def _clt_stderr(k: int, n: int) -> float | None:
    if n < 2:
        return None
    p = k / n
    return math.sqrt(p * (1 - p) / (n - 1))


def score_samples(
    samples: Sequence[dict[str, Any]], *, n_boot: int = N_BOOT, seed: int = BOOT_SEED
) -> dict[str, float | None]:
    """Score ``samples`` in place (extracted answers, correctness) and return the metrics.

    Each sample needs ``completion``, ``reference`` (the GSM8K answer or its final number) and ``strict_mode``
    (the prompt's strict filter, ``EvalPrompt.strict_mode``). Everything else is recomputed from these, so the
    eval run, ``rescore`` and the callback agree by construction. Metrics: see the module docstring.
    """
    from matrix_llm.data.gsm8k import answers_match, extract_answer, score_completion

    n = len(samples)
    if n == 0:
        raise ValueError("score_samples got no samples: nothing to score")
    for i, s in enumerate(samples):
        missing = {"completion", "reference", "strict_mode"} - set(s)
        if missing:
            raise ValueError(f"sample {i} lacks the fields {sorted(missing)}; found {sorted(s)}")
        score = score_completion(s["completion"], s["reference"], strict_mode=s["strict_mode"])
        metamath = extract_answer(s["completion"], mode="metamath")
        s.update(
            extracted_strict=score.strict,
            extracted_flexible=score.flexible,
            extracted_metamath=metamath,
            correct=score.strict_lm_eval,
            correct_strict=score.strict_lm_eval,
            correct_flexible=score.flexible_lm_eval,
            correct_strict_numeric=score.strict_correct,
            correct_flexible_numeric=score.flexible_correct,
            correct_metamath=answers_match(metamath, s["reference"]),
        )
    metrics: dict[str, float | None] = {"n": n}
    scores = [
        ("strict_accuracy", "correct_strict"),
        ("flexible_accuracy", "correct_flexible"),
        ("strict_accuracy_numeric", "correct_strict_numeric"),
        ("flexible_accuracy_numeric", "correct_flexible_numeric"),
    ]
    if any(s["extracted_metamath"] is not None for s in samples):  # only where the format is used at all
        scores.append(("metamath_accuracy", "correct_metamath"))
    for name, key in scores:
        k = sum(bool(s[key]) for s in samples)
        metrics[name] = k / n
        metrics[f"{name}_stderr"] = _bootstrap_stderr(k, n, n_boot=n_boot, seed=seed)
        metrics[f"{name}_stderr_clt"] = _clt_stderr(k, n)
    metrics["no_answer_rate"] = sum(s["extracted_strict"] is None for s in samples) / n
    metrics["flexible_no_answer_rate"] = sum(s["extracted_flexible"] is None for s in samples) / n
    if all("finish_reason" in s for s in samples):
        metrics["truncated_rate"] = sum(s["finish_reason"] == "length" for s in samples) / n
    metrics["n_boot"] = n_boot
    metrics["bootstrap_seed"] = seed
    return metrics


# ------------------------------------------------------------------------------------------------------------
# Prompts and generation
# ------------------------------------------------------------------------------------------------------------


def build_prompts(
    questions: Sequence[str],
    *,
    prompt: str,
    tokenizer: Any = None,
    fewshot_examples: Sequence[Sequence[Mapping[str, str]] | None] | None = None,
) -> list[str]:
    """Evaluation prompt texts (:func:`matrix_llm.data.gsm8k.build_eval_prompt`); ``fewshot_examples[i]`` per item."""
    from matrix_llm.data.gsm8k import build_eval_prompt

    shots = fewshot_examples if fewshot_examples is not None else [None] * len(questions)
    if len(shots) != len(questions):
        raise ValueError(f"fewshot_examples has {len(shots)} entries for {len(questions)} questions")
    return [
        build_eval_prompt(q, prompt=prompt, fewshot_examples=s, tokenizer=tokenizer)
        for q, s in zip(questions, shots, strict=True)
    ]


@dataclass
class EvalResult:
    """Scored samples (in item order) and the metrics of :func:`score_samples`."""

    samples: list[dict[str, Any]]
    metrics: dict[str, float]
    seconds: float = 0.0
    num_new_tokens: int = 0
    over_context: int | None = (
        None  # prompts leaving fewer than max_new_tokens of the context (None: not counted)
    )


def evaluate_gsm8k(
    model,
    tokenizer,
    items: Sequence[Mapping[str, str]],
    *,
    prompt: str = "qa",
    fewshot_examples: Sequence[Sequence[Mapping[str, str]] | None] | None = None,
    max_new_tokens: int = 512,
    batch_size: int = 16,
    synced_gpus: bool = False,
    autocast_dtype=None,
    progress: bool = True,
    indices: Sequence[int] | None = None,
    score: bool = True,
) -> EvalResult:
    """Generate greedy answers for ``items`` (``{"question", "answer"}`` rows) and score them.

    ``indices`` labels the samples (default ``0..n-1``). With ``score=False`` the samples are returned unscored
    (the callback scores after gathering ranks). The model is used as given; put it in eval mode first.
    """
    from matrix_llm.data.gsm8k import get_eval_prompt, reference_answer
    from matrix_llm.modes.lm.generation import generate

    spec = get_eval_prompt(prompt)
    questions = [it["question"] for it in items]
    prompts = build_prompts(questions, prompt=prompt, tokenizer=tokenizer, fewshot_examples=fewshot_examples)
    out = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        stop_strings=spec.stop,
        synced_gpus=synced_gpus,
        autocast_dtype=autocast_dtype,
        progress=progress,
        desc=f"gsm8k ({prompt})",
    )
    indices = list(range(len(items))) if indices is None else list(indices)
    samples = [
        {
            "index": idx,
            "question": it["question"],
            "prompt": p,
            "completion": c,
            "finish_reason": r,
            "num_new_tokens": k,
            "reference": reference_answer(it["answer"]),
            "strict_mode": spec.strict_mode,
        }
        for idx, it, p, c, r, k in zip(
            indices, items, prompts, out.completions, out.finish_reasons, out.num_new_tokens, strict=True
        )
    ]
    metrics = score_samples(samples) if score and samples else {}
    return EvalResult(samples, metrics, out.seconds, sum(out.num_new_tokens), out.over_context)


# ------------------------------------------------------------------------------------------------------------
# Files, versions, model loading
# ------------------------------------------------------------------------------------------------------------


def write_jsonl(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]

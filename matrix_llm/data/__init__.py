"""Data: the labels every mode shares (:mod:`.labels`), GSM8K loading, prompts and scoring (:mod:`.gsm8k`),
synthetic problems (:mod:`.synthetic`), the completion-only collator (:mod:`.collator`), images (:mod:`.images`,
:mod:`.augment`), image-caption pairs (:mod:`.image_text`) and texts (:mod:`.text`).

Importing this package imports none of them: each name below is loaded from its module when first used, so a
vision run that needs :mod:`.images` never loads the GSM8K code.
"""

from __future__ import annotations

import importlib
from typing import Any

_FROM = {
    "IGNORE_INDEX": "labels",
    "label_fraction_mask": "labels",
    "LabelledShareSampler": "labels",
    "CompletionCollator": "collator",
    "generate_problems": "synthetic",
    "synthetic_dataset": "synthetic",
    **dict.fromkeys(
        (
            "EVAL_PROMPTS",
            "TEMPLATES",
            "EvalPrompt",
            "Score",
            "TokenizeStats",
            "answers_match",
            "build_eval_prompt",
            "encode_prompt",
            "extract_answer",
            "format_completion",
            "format_prompt",
            "get_eval_prompt",
            "lm_eval_exact_match",
            "load_gsm8k",
            "load_sft_data",
            "normalize_answer",
            "score_completion",
            "tokenize_dataset",
            "tokenize_example",
        ),
        "gsm8k",
    ),
}

__all__ = sorted(_FROM)


def __getattr__(name: str) -> Any:
    if name in _FROM:
        return getattr(importlib.import_module(f"{__name__}.{_FROM[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Data: GSM8K loading, prompts and scoring (:mod:`.gsm8k`), synthetic problems (:mod:`.synthetic`) and the
completion-only collator (:mod:`.collator`).

Importing this package is cheap: ``datasets`` and ``torch`` are imported only by the functions that need them.
"""

from .collator import CompletionCollator
from .gsm8k import (
    EVAL_PROMPTS,
    IGNORE_INDEX,
    TEMPLATES,
    EvalPrompt,
    Score,
    TokenizeStats,
    answers_match,
    build_eval_prompt,
    encode_prompt,
    extract_answer,
    format_completion,
    format_prompt,
    get_eval_prompt,
    lm_eval_exact_match,
    load_gsm8k,
    load_sft_data,
    normalize_answer,
    score_completion,
    tokenize_dataset,
    tokenize_example,
)
from .synthetic import generate_problems, synthetic_dataset

__all__ = [
    "EVAL_PROMPTS",
    "IGNORE_INDEX",
    "TEMPLATES",
    "CompletionCollator",
    "EvalPrompt",
    "Score",
    "TokenizeStats",
    "answers_match",
    "build_eval_prompt",
    "encode_prompt",
    "extract_answer",
    "format_completion",
    "format_prompt",
    "generate_problems",
    "get_eval_prompt",
    "lm_eval_exact_match",
    "load_gsm8k",
    "load_sft_data",
    "normalize_answer",
    "score_completion",
    "synthetic_dataset",
    "tokenize_dataset",
    "tokenize_example",
]

"""GSM8K: answer extraction and scoring (:mod:`.scoring`), prompt templates and evaluation prompts
(:mod:`.prompts`), loading and tokenisation (:mod:`.loading`).

This package is the **one source of truth** for GSM8K in matrix_llm: training, the in-training evaluation
callback and ``matrix-llm eval`` all import it, so a prompt, a stop string or a regex exists exactly once.

Scoring follows lm-evaluation-harness first [0]:

- ``strict``   = lm-eval ``gsm8k`` filter ``strict-match``: regex ``#### (\\-?[0-9\\.\\,]+)``, take the first match.
- ``flexible`` = lm-eval ``flexible-extract``: regex ``(-?[$0-9.,]{2,})|(-?[0-9]+)``, ``group_select: -1``
  (the last number in the text).
- ``cot``      = lm-eval ``gsm8k_cot`` ``strict-match``: regex ``The answer is (\\-?[0-9\\.\\,]+).``, first match.
  The final ``.`` is the regex wildcard, as in lm-eval: ``"The answer is 18."`` and ``"The answer is 18 apples"``
  give ``18``, but ``"The answer is 18"`` at the very end of a text gives ``1`` (the wildcard eats the last
  digit). We reproduce this on purpose, for parity; the stop string ``"Q:"`` usually leaves a newline after it.

Two extensions, **not** part of lm-eval, are available for diagnosis and are never used by the lm-eval
compatible scores:

- ``boxed``    = the last ``\\boxed{N}`` (instruct/reasoning models). lm-eval's strict filter ignores
  ``\\boxed{}``; its flexible filter picks the number inside it anyway because it takes the last number.
- ``metamath`` = MetaMath's own extraction [2]: the first number after the last ``"The answer is: "``
  (MetaMathQA responses end with ``The answer is: N``, not ``#### N``, so a model trained on MetaMathQA scores
  near 0 with ``strict``). MetaMath rounds fractions to integers; here ``3/4`` stays a string.

Normalisation (:func:`normalize_answer`) is lm-eval's ``exact_match`` with ``ignore_case: true`` and
``regexes_to_ignore: [",", "\\$", "(?s).*#### ", "\\.$"]`` applied in that order.
:func:`lm_eval_exact_match` is lm-eval's pure string comparison on top of it; :func:`answers_match` adds
numeric equality (``18 == 18.0 == 18.00 == $18``, ``1,000 == 1000``). Report both (:func:`score_completion`
returns both for the strict and the flexible filter). :func:`answers_match` is never stricter than
:func:`lm_eval_exact_match` on the same strings; it is looser exactly where two strings spell the same number
differently: trailing decimal zeros (``18.00`` vs ``18``, lm-eval issue #3214), leading zeros (``018``),
a leading ``+`` and ``-0`` vs ``0``.

Prompts:

- training templates ``alpaca`` (MetaMath's prompt [2]), ``qa`` (lm-eval's ``Question: ...\\nAnswer:``) and
  ``chat`` (the tokenizer's chat template);
- evaluation prompts ``zero_shot_cot`` (MetaMath's evaluation prompt), ``fewshot5`` (lm-eval ``gsm8k``),
  ``cot8`` (lm-eval ``gsm8k_cot``, the 8 chain-of-thought exemplars of Wei et al. 2022 [1]), and ``alpaca``,
  ``qa``, ``chat`` (zero-shot, exactly the training prompt: what the in-training eval uses).

References:
    [0] EleutherAI/lm-evaluation-harness, ``lm_eval/tasks/gsm8k/gsm8k.yaml`` (v3.0) and ``gsm8k-cot.yaml``
        (v3.0); ``lm_eval/filters/extraction.py::RegexFilter``; ``lm_eval/api/samplers.py``.
    [1] Wei et al. 2022, "Chain-of-Thought Prompting Elicits Reasoning in Large Language Models",
        arXiv 2201.11903, Table 20 (the GSM8K exemplars, as shipped in lm-eval's ``gsm8k-cot.yaml``).
    [2] meta-math/MetaMath ``train_math.py`` (Alpaca prompt) and ``eval_gsm8k.py`` (prompt + " Let's think
        step by step.", stop strings, ``The answer is: `` extraction).
"""

from .loading import (
    IGNORE_INDEX,
    TokenizeStats,
    encode_prompt,
    load_gsm8k,
    load_sft_data,
    tokenize_dataset,
    tokenize_example,
)
from .prompts import (
    ALPACA_PROMPT,
    COT8_EXEMPLARS,
    EVAL_PROMPTS,
    LM_EVAL_FEWSHOT_SEED,
    QA_PROMPT,
    ROW_FORMATS,
    STOP_STRINGS,
    TEMPLATES,
    EvalPrompt,
    build_eval_prompt,
    format_completion,
    format_example,
    format_prompt,
    get_eval_prompt,
    lm_eval_fewshot_indices,
    row_format,
)
from .scoring import (
    EXTRACTION_MODES,
    INVALID,
    Score,
    answers_match,
    extract_answer,
    lm_eval_exact_match,
    lm_eval_filter,
    normalize_answer,
    reference_answer,
    score_completion,
)

__all__ = [
    "ALPACA_PROMPT",
    "COT8_EXEMPLARS",
    "EVAL_PROMPTS",
    "EXTRACTION_MODES",
    "IGNORE_INDEX",
    "INVALID",
    "LM_EVAL_FEWSHOT_SEED",
    "QA_PROMPT",
    "ROW_FORMATS",
    "STOP_STRINGS",
    "TEMPLATES",
    "EvalPrompt",
    "Score",
    "TokenizeStats",
    "answers_match",
    "build_eval_prompt",
    "encode_prompt",
    "extract_answer",
    "format_completion",
    "format_example",
    "format_prompt",
    "get_eval_prompt",
    "lm_eval_exact_match",
    "lm_eval_filter",
    "lm_eval_fewshot_indices",
    "load_gsm8k",
    "load_sft_data",
    "normalize_answer",
    "reference_answer",
    "row_format",
    "score_completion",
    "tokenize_dataset",
    "tokenize_example",
]

"""matrix_llm's metrics as local Hugging Face ``evaluate`` modules, which load offline from the installed package:

    import evaluate
    from matrix_llm.metrics import module_path

    gsm8k = evaluate.load(module_path("gsm8k"))
    gsm8k.compute(predictions=["... #### 72"], references=["... #### 72"])  # strict / flexible exact match
    entropy = evaluate.load(module_path("matrix_entropy"))
    entropy.compute(embeddings=[[0.1, 0.2], [0.3, -0.1]])  # matrix entropy and effective rank of the batch

- ``gsm8k``: lm-evaluation-harness's GSM8K exact match, strict (``#### N``; ``The answer is N.`` for chain of
  thought) and flexible (the last number), exactly :func:`matrix_llm.data.gsm8k.score_completion` (the scorer of
  ``matrix-llm eval gsm8k``), plus the numeric matches and the no-answer rate.
- ``matrix_entropy``: the von Neumann entropy of the trace-normalised cosine Gram of a batch of embeddings and its
  exponential, the effective rank (:func:`matrix_llm.features.diagnostics.entropy_erank`, what training logs as
  ``matrix_entropy`` / ``effective_rank``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MODULES", "module_path"]

MODULES = ("gsm8k", "matrix_entropy")


def module_path(name: str) -> str:
    """The folder of the ``evaluate`` module ``name`` (one of :data:`MODULES`), for ``evaluate.load``."""
    if name not in MODULES:
        raise ValueError(f"module_path: expected one of {MODULES}; got {name!r}")
    return str(Path(__file__).with_name(name))

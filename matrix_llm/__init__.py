"""matrix_llm: matrix information theory for training with the Hugging Face stack.

    from matrix_llm import MatrixTrainer, LMConfig, LMObjective
    from matrix_llm import MatrixSFTTrainer   # TRL's SFTTrainer with the LM objective (pip install "matrix-llm[trl]")
    from matrix_llm import info   # the pure maths: matrix entropy, MCE, matrix KL, effective rank, MIR / HDR

Importing the package is side-effect free and loads nothing heavy: each public name below is imported from its
module on first use (transformers, datasets only then). The pure maths lives in :mod:`matrix_llm.info` and
:mod:`matrix_llm.losses`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "MatrixTrainer": "matrix_llm.trainer",
    "MatrixSFTTrainer": "matrix_llm.modes.lm.trl_trainer",  # needs TRL (the `trl` extra)
    "DataArguments": "matrix_llm.config",
    "MatrixTrainingArguments": "matrix_llm.config",
    "ModelArguments": "matrix_llm.config",
    "MatrixMetricsCallback": "matrix_llm.callbacks",
    "GSM8KEvalCallback": "matrix_llm.modes.lm.callback",
    **{
        name: "matrix_llm.modes"
        for name in (
            "LMConfig",
            "LMObjective",
            "SSLConfig",
            "SSLObjective",
            "CLIPConfig",
            "CLIPObjective",
            "ClassificationConfig",
            "ClassificationObjective",
        )
    },
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))

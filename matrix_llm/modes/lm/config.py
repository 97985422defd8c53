"""The LM mode's configuration (``objective: lm``, command ``matrix-llm sft``), beside its objective
(:mod:`matrix_llm.modes.lm.objective`).

- :class:`LMModelArguments`: :class:`~matrix_llm.config.ModelArguments` plus the offline tiny Llama
  (``model_name_or_path: tiny``).
- :class:`LMDataArguments`: which dataset (Hub id, local file or ``synthetic``), prompt template, lengths.
- :class:`LMConfig`: :class:`~matrix_llm.config.MatrixTrainingArguments` plus the ``matrix_*`` fields of the
  LM matrix loss. Their values are checked by the objective's and the loss's own validation
  (:meth:`LMObjective.argument_problems`), reported under the field names: one validation, one list of
  formulations (:data:`matrix_llm.losses.token.FORMULATIONS`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from matrix_llm.config import DataArguments, MatrixTrainingArguments, ModelArguments
from matrix_llm.modes.lm.objective import LOSS_TYPES, LMObjective
from matrix_llm.parsing import problem

__all__ = ["TINY_MODEL", "LMConfig", "LMDataArguments", "LMModelArguments"]

TINY_MODEL = "tiny"


@dataclass
class LMModelArguments(ModelArguments):
    """The causal LM to fine-tune; ``model_name_or_path: tiny`` builds an offline, randomly initialised tiny
    Llama and trains a byte-level BPE tokenizer on the training texts (the ``tiny_*`` fields): no download,
    CPU-sized, for demos and tests."""

    tiny_vocab_size: int = field(
        default=512,
        metadata={"help": "Tiny model: BPE vocabulary size of the tokenizer trained on the data."},
    )
    load_in_4bit: bool = field(
        default=False,
        metadata={
            "help": "QLoRA: load the base weights in 4 bit (bitsandbytes; pip install 'matrix-llm[quantization]')."
        },
    )
    load_in_8bit: bool = field(
        default=False, metadata={"help": "Load the base weights in 8 bit (bitsandbytes)."}
    )
    bnb_4bit_quant_type: str = field(
        default="nf4",
        metadata={"help": "4-bit data type: nf4 (QLoRA's) or fp4.", "choices": ["nf4", "fp4"]},
    )
    bnb_4bit_compute_dtype: str | None = field(
        default=None,
        metadata={
            "help": "dtype of the 4-bit matmuls: bfloat16, float16 or float32; None = `dtype` (float32 for auto).",
            "choices": ["bfloat16", "float16", "float32"],
        },
    )
    use_bnb_nested_quant: bool = field(
        default=False,
        metadata={"help": "Quantise the 4-bit quantisation constants too (QLoRA's double quant)."},
    )

    @property
    def is_tiny(self) -> bool:
        return self.model_name_or_path == TINY_MODEL

    @property
    def quantized(self) -> bool:
        return self.load_in_4bit or self.load_in_8bit

    def quantization_config(self) -> Any:
        """The ``transformers.BitsAndBytesConfig`` of the ``load_in_*`` / ``bnb_*`` fields, or None."""
        if not self.quantized:
            return None
        import torch
        from transformers import BitsAndBytesConfig

        if self.load_in_8bit:
            return BitsAndBytesConfig(load_in_8bit=True)
        compute = self.bnb_4bit_compute_dtype or (
            self.dtype if self.dtype not in (None, "auto") else "float32"
        )
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.bnb_4bit_quant_type,
            bnb_4bit_compute_dtype=getattr(torch, compute),
            bnb_4bit_use_double_quant=self.use_bnb_nested_quant,
        )

    def problems(self) -> list[str]:
        out = super().problems()
        if self.load_in_4bit and self.load_in_8bit:
            out.append(problem("load_in_8bit", "false when load_in_4bit is true (one or the other)", True))
        if self.quantized and not self.use_peft:
            out.append(
                problem("use_peft", "true with load_in_4bit / load_in_8bit", False)
                + ": quantised weights are frozen; train a LoRA adapter on them (QLoRA)"
            )
        if self.quantized and self.is_tiny:
            out.append(
                problem(
                    "model_name_or_path",
                    "a saved model (a Hub id or a folder) to quantise on loading",
                    TINY_MODEL,
                )
                + ": the tiny model is built, not loaded; save it first"
            )
        if self.quantized and importlib.util.find_spec("bitsandbytes") is None:
            out.append(
                problem(
                    "load_in_4bit" if self.load_in_4bit else "load_in_8bit", "bitsandbytes installed", True
                )
                + ": pip install 'matrix-llm[quantization]'"
            )
        if self.tiny_vocab_size < 300:
            out.append(
                problem(
                    "tiny_vocab_size",
                    "an integer >= 300 (256 bytes + special tokens + merges)",
                    self.tiny_vocab_size,
                )
            )
        return out


@dataclass
class LMDataArguments(DataArguments):
    """The training / evaluation data: GSM8K-format word problems, or any TRL row format (`dataset_name`)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub id (openai/gsm8k, meta-math/MetaMathQA), a local .jsonl/.json/.parquet file, or `synthetic` "
            "for the embedded generator of GSM8K-format arithmetic problems (offline). Rows: question/answer "
            "(GSM8K; `template` applies), query/response (MetaMathQA), messages (conversational, chat template), "
            "prompt/completion (TRL, texts as they are) or text (every token learned)."
        },
    )
    dataset_config: str | None = field(default="main", metadata={"help": "Hub dataset config (GSM8K: main)."})
    eval_split: str | None = field(
        default=None,
        metadata={"help": "Split used for evaluation (GSM8K: test), or a local file; None = no eval set."},
    )
    eval_dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Evaluation data if it differs from dataset_name (e.g. openai/gsm8k when training on "
            "MetaMathQA); None = dataset_name."
        },
    )
    eval_dataset_config: str | None = field(
        default="main", metadata={"help": "Hub config of eval_dataset_name (used only when that is set)."}
    )
    template: str = field(
        default="qa",
        metadata={
            "help": "Prompt template: qa (lm-eval's `Question: ...\\nAnswer:`), alpaca (MetaMath's) or chat "
            "(the tokenizer's chat template).",
            "choices": ["alpaca", "qa", "chat"],
        },
    )
    dataset_format: str | None = field(
        default=None,
        metadata={
            "help": "Row format of dataset_name: question_answer (GSM8K), messages, sharegpt (conversations), "
            "alpaca (instruction/input/output), prompt_completion (texts or message lists) or text; None = "
            "detected from the columns (the run info records which).",
            "choices": ["question_answer", "messages", "sharegpt", "alpaca", "prompt_completion", "text"],
        },
    )
    max_length: int = field(default=512, metadata={"help": "Prompt + completion tokens kept per example."})
    packing: bool = field(
        default=False,
        metadata={
            "help": "Padding-free packing: each micro-batch is flattened into one sequence "
            "(transformers.DataCollatorWithFlattening: position_ids restart per example, so attention stays "
            "within each example); the matrix term is computed per example and averaged. Not with "
            "matrix_scope: global."
        },
    )
    drop_truncated: bool = field(
        default=True,
        metadata={
            "help": "Drop examples longer than max_length (default: right-truncation would cut the '#### N' line "
            "and EOS); false keeps them truncated."
        },
    )
    synthetic_train_size: int = field(default=2000, metadata={"help": "`synthetic`: training problems."})
    synthetic_eval_size: int = field(default=200, metadata={"help": "`synthetic`: evaluation problems."})
    synthetic_steps: int = field(
        default=2,
        metadata={"help": "`synthetic`: problems take 1 to this many arithmetic steps (at most 3)."},
    )
    synthetic_seed: int = field(
        default=0, metadata={"help": "`synthetic`: generator seed (eval uses seed + 1)."}
    )
    gsm8k_eval_samples: int = field(
        default=0,
        metadata={
            "help": "Generation-based GSM8K accuracy at every evaluation (GSM8KEvalCallback) on the first this "
            "many eval rows: logs eval_gsm8k_strict / eval_gsm8k_flexible / eval_gsm8k_no_answer. 0: off."
        },
    )
    gsm8k_eval_prompt: str | None = field(
        default=None,
        metadata={
            "help": "Prompt of the in-training GSM8K eval (matrix_llm.data.gsm8k.EVAL_PROMPTS); "
            "default: the training `template`, zero-shot."
        },
    )
    gsm8k_eval_max_new_tokens: int = field(
        default=512,
        metadata={
            "help": "Generation budget of the in-training GSM8K eval (512 as `matrix-llm eval`; 256 "
            "truncates long chains of thought)."
        },
    )
    synthetic_max_value: int = field(
        default=50,
        metadata={"help": "`synthetic`: largest additive input of a problem (factors stay in 2..9); >= 3."},
    )

    @property
    def is_synthetic(self) -> bool:
        return self.dataset_name == "synthetic"

    def problems(self) -> list[str]:
        out = super().problems()
        if self.max_length < 8:
            out.append(problem("max_length", "an integer >= 8", self.max_length))
        for name in ("synthetic_train_size", "synthetic_eval_size"):
            if getattr(self, name) < 1:
                out.append(problem(name, "a positive integer", getattr(self, name)))
        if not 1 <= self.synthetic_steps <= 3:
            out.append(problem("synthetic_steps", "1, 2 or 3", self.synthetic_steps))
        if self.gsm8k_eval_samples < 0:
            out.append(problem("gsm8k_eval_samples", "an integer >= 0", self.gsm8k_eval_samples))
        if self.gsm8k_eval_max_new_tokens < 1:
            out.append(
                problem("gsm8k_eval_max_new_tokens", "an integer >= 1", self.gsm8k_eval_max_new_tokens)
            )
        if self.gsm8k_eval_prompt is not None:
            from matrix_llm.data.gsm8k import EVAL_PROMPTS

            if self.gsm8k_eval_prompt not in EVAL_PROMPTS or self.gsm8k_eval_prompt == "fewshot5":
                choices = sorted(set(EVAL_PROMPTS) - {"fewshot5"})
                out.append(problem("gsm8k_eval_prompt", f"one of {choices}", self.gsm8k_eval_prompt))
        if self.synthetic_max_value < 3:
            out.append(problem("synthetic_max_value", "an integer >= 3", self.synthetic_max_value))
        return out


@dataclass
class LMConfig(MatrixTrainingArguments):
    """``MatrixTrainingArguments`` plus the LM matrix loss: ``loss = lm_loss + matrix_loss_weight * matrix_loss``.

    The matrix loss is the matrix cross-entropy (MCE) of ``docs/formulations.md`` on the token representations
    of the completion tokens; ``matrix_loss_type: none`` (or ``matrix_loss_weight: 0``) trains with the plain LM
    loss and only logs the diagnostics (matrix entropy, effective rank).
    """

    matrix_loss_type: str = field(
        default="head",
        metadata={
            "help": "Matrix loss formulation (docs/formulations.md): head (hidden-state Gram vs target head-row Gram, "
            "default), relation (predicted-distribution Gram vs one-hot Gram), alignment (covariance of "
            "expected vs target embeddings), or none (plain LM loss; entropy/effective rank still logged).",
            "choices": list(LOSS_TYPES),
        },
    )
    matrix_loss_weight: float = field(
        default=0.1,
        metadata={
            "help": "Weight gamma of the matrix term: loss = lm_loss + gamma * matrix_loss.",
        },
    )
    matrix_layer: int = field(
        default=-1,
        metadata={
            "help": "Which token representation: -1 = the vector the LM head is applied to (final hidden "
            "state after the last norm); k >= 0 = output of decoder layer k (= hidden_states[k + 1], before the "
            "final norm for the last layer); "
            "-k (k >= 2) = output of decoder layer n_layers - k (= hidden_states[-k]).",
        },
    )
    matrix_mu: float | None = field(
        default=None,
        metadata={
            "help": "Shift mu * I added before the matrix log (> 0); None = the formulation's default "
            "(head/relation 1e-2, alignment 0.5; see matrix_llm.losses.TokenMCELoss). At 0.5 the alignment term's "
            "gradient is about 1 percent of head's; 0.01 makes it about as strong as relation (docs/formulations.md).",
        },
    )
    matrix_log: str = field(
        default="eigh",
        metadata={
            "help": "Matrix logarithm: eigh (exact, default) or taylor (the original Matrix-SSL code's series; "
            "meaningful for alignment only: head/relation matrices have eigenvalues near 1/T, where a few terms "
            "are far from log, and a warning says so).",
            "choices": ["eigh", "taylor"],
        },
    )
    matrix_taylor_order: int = field(
        default=4, metadata={"help": "Order of the Taylor log (matrix_log: taylor)."}
    )
    matrix_max_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Sub-sample at most this many completion tokens per micro-batch (None = all).",
        },
    )
    matrix_scope: str = field(
        default="local",
        metadata={
            "help": "local: matrix loss per micro-batch per process; global: gather the token features of "
            "all processes (autograd-aware) first.",
            "choices": ["local", "global"],
        },
    )

    def problems(self) -> list[str]:
        return super().problems() + self.objective_problems("lm", LMObjective.argument_problems)

    def objective_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~matrix_llm.modes.LMObjective`: the fields' plus the seed of
        ``matrix_max_tokens`` sub-sampling. With scope local that draws from the global torch RNG (checkpointed
        by the Trainer, so a resumed run draws the same subsets); with scope global from a private generator
        seeded identically on every rank (all ranks must pick the same tokens; not restored on resume)."""
        return {**super().objective_kwargs(), "seed": self.seed if self.matrix_scope == "global" else None}

"""Configuration of ``matrix-llm sft``: three dataclasses, one YAML file, CLI overrides.

    matrix-llm sft --config recipes/demo/mce.yaml --learning_rate 1e-3 --use_peft false

- :class:`ModelArguments`: which model to load (TRL's names: ``model_name_or_path``, ``use_peft``,
  ``lora_r``, ...), plus the offline tiny model (``model_name_or_path: tiny``).
- :class:`DataArguments`: which dataset (Hub id, local file or ``synthetic``), prompt template, lengths.
- :class:`MatrixTrainingArguments`: ``transformers.TrainingArguments`` plus the ``matrix_*`` fields of the
  matrix loss.

:func:`parse_args` reads ``--config FILE.yaml`` and then ``--field value`` overrides (the command line
wins). Every key of the YAML file and every flag is checked against the three dataclasses *before* anything
heavy happens: unknown names (with the closest valid name suggested), values of the wrong type, values
outside their choices and the dataclasses' own validation errors are collected and raised together as
one :class:`ConfigError`, one line per problem.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from transformers import HfArgumentParser, TrainingArguments

__all__ = [
    "ConfigError",
    "DataArguments",
    "MATRIX_LOSS_TYPES",
    "MatrixTrainingArguments",
    "ModelArguments",
    "TINY_MODEL",
    "parse_args",
]

MATRIX_LOSS_TYPES = ("none", "head", "relation", "alignment")
TINY_MODEL = "tiny"


class ConfigError(ValueError):
    """Every problem found in a configuration (YAML + command line), one per line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} configuration problem(s):\n{lines}")


def _problem(name: str, expected: str, got: Any) -> str:
    return f"`{name}`: expected {expected}; got {got!r}"


# --------------------------------------------------------------------------------------------------------
# dataclasses
# --------------------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    """The model to fine-tune (field names as in TRL's ``ModelConfig``)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or local directory of a causal LM (e.g. EleutherAI/llemma_7b). The special value "
            "`tiny` builds an offline, randomly initialised tiny Llama and trains a byte-level BPE tokenizer "
            "on the training texts (see the tiny_* fields): no download, CPU-sized, for demos and tests."
        },
    )
    model_revision: str = field(
        default="main", metadata={"help": "Branch, tag or commit of the model on the Hub."}
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow custom modelling code from the Hub. Off unless you turn it on."},
    )
    dtype: str | None = field(
        default="auto",
        metadata={
            "help": "Weights dtype passed to from_pretrained: auto, bfloat16, float16 or float32.",
            "choices": ["auto", "bfloat16", "float16", "float32"],
        },
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "Attention kernel (eager, sdpa, flash_attention_2, ...); None = default."},
    )
    use_peft: bool = field(default=False, metadata={"help": "Train a LoRA adapter instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Module names LoRA wraps (e.g. q_proj v_proj), or `all-linear` (every linear layer but "
            "the LM head). None = all-linear."
        },
    )
    tiny_hidden_size: int = field(
        default=64, metadata={"help": "Tiny model (`model_name_or_path: tiny`): width."}
    )
    tiny_num_layers: int = field(default=2, metadata={"help": "Tiny model: number of decoder layers."})
    tiny_num_heads: int = field(default=4, metadata={"help": "Tiny model: attention heads."})
    tiny_vocab_size: int = field(
        default=512,
        metadata={"help": "Tiny model: BPE vocabulary size of the tokenizer trained on the data."},
    )

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        if self.lora_target_modules is None or self.lora_target_modules == ["all-linear"]:
            self.lora_target_modules = ["all-linear"]

    @property
    def is_tiny(self) -> bool:
        return self.model_name_or_path == TINY_MODEL

    @property
    def peft_target_modules(self) -> str | list[str]:
        """``lora_target_modules`` in the form ``peft.LoraConfig(target_modules=...)`` takes."""
        mods = self.lora_target_modules or ["all-linear"]
        return "all-linear" if mods == ["all-linear"] else list(mods)

    def problems(self) -> list[str]:
        out = []
        if not self.model_name_or_path:
            out.append(
                _problem(
                    "model_name_or_path", "a Hub id, a local directory or `tiny`", self.model_name_or_path
                )
            )
        for name in ("lora_r", "lora_alpha", "tiny_hidden_size", "tiny_num_layers", "tiny_num_heads"):
            if getattr(self, name) < 1:
                out.append(_problem(name, "a positive integer", getattr(self, name)))
        if not 0.0 <= self.lora_dropout < 1.0:
            out.append(_problem("lora_dropout", "a float in [0, 1)", self.lora_dropout))
        if self.tiny_hidden_size % max(self.tiny_num_heads, 1):
            out.append(
                _problem(
                    "tiny_hidden_size",
                    f"a multiple of tiny_num_heads={self.tiny_num_heads}",
                    self.tiny_hidden_size,
                )
            )
        if self.tiny_vocab_size < 300:
            out.append(
                _problem(
                    "tiny_vocab_size",
                    "an integer >= 300 (256 bytes + special tokens + merges)",
                    self.tiny_vocab_size,
                )
            )
        mods = self.lora_target_modules
        if mods is not None and "all-linear" in mods and len(mods) > 1:
            out.append(_problem("lora_target_modules", "`all-linear` alone or a list of module names", mods))
        return out


@dataclass
class DataArguments:
    """The training / evaluation data (GSM8K-format word problems)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub id (openai/gsm8k, meta-math/MetaMathQA), a local .jsonl/.json/.parquet file with "
            "question/answer (GSM8K) or query/response (MetaMathQA) fields, or `synthetic` for the embedded "
            "generator of GSM8K-format arithmetic problems (offline)."
        },
    )
    dataset_config: str | None = field(default="main", metadata={"help": "Hub dataset config (GSM8K: main)."})
    train_split: str = field(default="train", metadata={"help": "Split used for training."})
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
    max_length: int = field(default=512, metadata={"help": "Prompt + completion tokens kept per example."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Truncate the training set (debug)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the eval set (debug)."})
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
        metadata={"help": "Prompt of the in-training GSM8K eval (matrix_llm.data.gsm8k.EVAL_PROMPTS); "
                  "default: the training `template`, zero-shot."},
    )
    gsm8k_eval_max_new_tokens: int = field(
        default=512,
        metadata={"help": "Generation budget of the in-training GSM8K eval (512 as `matrix-llm eval`; 256 "
                  "truncates long chains of thought)."},
    )
    synthetic_max_value: int = field(
        default=50,
        metadata={"help": "`synthetic`: largest additive input of a problem (factors stay in 2..9); >= 3."},
    )

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    @property
    def is_synthetic(self) -> bool:
        return self.dataset_name == "synthetic"

    def problems(self) -> list[str]:
        out = []
        if not self.dataset_name:
            out.append(_problem("dataset_name", "a Hub id, a local file or `synthetic`", self.dataset_name))
        if self.max_length < 8:
            out.append(_problem("max_length", "an integer >= 8", self.max_length))
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                out.append(_problem(name, "a positive integer or null", value))
        for name in ("synthetic_train_size", "synthetic_eval_size"):
            if getattr(self, name) < 1:
                out.append(_problem(name, "a positive integer", getattr(self, name)))
        if not 1 <= self.synthetic_steps <= 3:
            out.append(_problem("synthetic_steps", "1, 2 or 3", self.synthetic_steps))
        if self.gsm8k_eval_samples < 0:
            out.append(_problem("gsm8k_eval_samples", "an integer >= 0", self.gsm8k_eval_samples))
        if self.gsm8k_eval_max_new_tokens < 1:
            out.append(_problem("gsm8k_eval_max_new_tokens", "an integer >= 1", self.gsm8k_eval_max_new_tokens))
        if self.gsm8k_eval_prompt is not None:
            from .data.gsm8k import EVAL_PROMPTS

            if self.gsm8k_eval_prompt not in EVAL_PROMPTS or self.gsm8k_eval_prompt == "fewshot5":
                choices = sorted(set(EVAL_PROMPTS) - {"fewshot5"})
                out.append(_problem("gsm8k_eval_prompt", f"one of {choices}", self.gsm8k_eval_prompt))
        if self.synthetic_max_value < 3:
            out.append(_problem("synthetic_max_value", "an integer >= 3", self.synthetic_max_value))
        return out


@dataclass
class MatrixTrainingArguments(TrainingArguments):
    """``transformers.TrainingArguments`` plus the matrix loss: ``loss = lm_loss + matrix_loss_weight * matrix_loss``.

    The matrix loss is the matrix cross-entropy (MCE) of MATH.md §4 on the token representations of the
    completion tokens; ``matrix_loss_type: none`` trains with the plain LM loss and only logs the
    diagnostics (matrix entropy, effective rank).
    """

    matrix_loss_type: str = field(
        default="head",
        metadata={
            "help": "Matrix loss formulation (MATH.md §4): head (hidden-state Gram vs target head-row Gram, "
            "default), relation (predicted-distribution Gram vs one-hot Gram), alignment (covariance of "
            "expected vs target embeddings), or none (plain LM loss; entropy/effective rank still logged).",
            "choices": list(MATRIX_LOSS_TYPES),
        },
    )
    matrix_loss_weight: float = field(
        default=0.1,
        metadata={"help": "Weight gamma of the matrix term: loss = lm_loss + gamma * matrix_loss."},
    )
    matrix_layer: int = field(
        default=-1,
        metadata={
            "help": "Which token representation: -1 = the vector the LM head is applied to (final hidden "
            "state after the last norm); k >= 0 = output of decoder layer k (= hidden_states[k + 1], before the "
            "final norm for the last layer); "
            "-k (k >= 2) = output of decoder layer n_layers - k (= hidden_states[-k])."
        },
    )
    matrix_mu: float | None = field(
        default=None,
        metadata={
            "help": "Shift mu * I added before the matrix log (> 0); None = the formulation's default "
            "(head/relation 1e-2, alignment 0.5; see matrix_llm.losses.TokenMCELoss)."
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
        metadata={"help": "Sub-sample at most this many completion tokens per micro-batch (None = all)."},
    )
    matrix_scope: str = field(
        default="local",
        metadata={
            "help": "local: matrix loss per micro-batch per process; global: gather the token features of "
            "all processes (autograd-aware) first.",
            "choices": ["local", "global"],
        },
    )
    matrix_metrics_steps: int | None = field(
        default=None,
        metadata={
            "help": "Compute the diagnostics matrix_entropy / effective_rank (an extra eigendecomposition of "
            "the token Gram) on the micro-batches of every k-th optimizer step (None = logging_steps, or 1 when "
            "logging_steps is a fraction; 0 = never in training); always in evaluation."
        },
    )

    def __post_init__(self) -> None:
        problems = self.matrix_problems()
        try:
            super().__post_init__()
        except ValueError as e:  # TrainingArguments' own checks stop at their first problem
            problems.append(f"TrainingArguments: {e}")
        if problems:
            raise ConfigError(problems)

    def matrix_problems(self) -> list[str]:
        """Validation of the ``matrix_*`` fields (all problems, not only the first)."""
        out = []
        if self.matrix_loss_type not in MATRIX_LOSS_TYPES:
            out.append(
                _problem("matrix_loss_type", f"one of {list(MATRIX_LOSS_TYPES)}", self.matrix_loss_type)
            )
        if not isinstance(self.matrix_loss_weight, (int, float)) or not self.matrix_loss_weight >= 0:
            out.append(_problem("matrix_loss_weight", "a float >= 0", self.matrix_loss_weight))
        if self.matrix_mu is not None and not self.matrix_mu > 0:
            out.append(_problem("matrix_mu", "a float > 0 or null", self.matrix_mu))
        if self.matrix_log not in ("eigh", "taylor"):
            out.append(_problem("matrix_log", "`eigh` or `taylor`", self.matrix_log))
        if self.matrix_taylor_order < 1:
            out.append(_problem("matrix_taylor_order", "an integer >= 1", self.matrix_taylor_order))
        if self.matrix_max_tokens is not None and self.matrix_max_tokens < 2:
            out.append(_problem("matrix_max_tokens", "an integer >= 2 or null", self.matrix_max_tokens))
        if self.matrix_scope not in ("local", "global"):
            out.append(_problem("matrix_scope", "`local` or `global`", self.matrix_scope))
        if self.matrix_metrics_steps is not None and self.matrix_metrics_steps < 0:
            out.append(_problem("matrix_metrics_steps", "an integer >= 0 or null", self.matrix_metrics_steps))
        return out

    @property
    def effective_matrix_metrics_steps(self) -> int:
        """``matrix_metrics_steps`` with ``None`` resolved to ``logging_steps`` (at least 1; a fractional
        ``logging_steps``, a share of the run, resolves to 1: diagnostics every step)."""
        if self.matrix_metrics_steps is not None:
            return int(self.matrix_metrics_steps)
        return max(1, int(self.logging_steps))


# --------------------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------------------

DATACLASSES = (ModelArguments, DataArguments, MatrixTrainingArguments)
_UNSET = object()


def _field_table() -> dict[str, tuple[type, dataclasses.Field, Any]]:
    """``name -> (dataclass, field, resolved type hint)`` over the three dataclasses."""
    table = {}
    for cls in DATACLASSES:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init:
                table[f.name] = (cls, f, hints[f.name])
    return table


def _union_args(tp: Any) -> tuple:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return (tp,)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "yes", "y", "t", "1", "on"):
            return True
        if v in ("false", "no", "n", "f", "0", "off"):
            return False
    raise ValueError("a boolean (true/false)")


def _to_scalar(value: Any, tp: Any) -> Any:
    """Convert ``value`` to the non-union type ``tp``; ``ValueError(expected)`` if impossible."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if value == c or str(value) == str(c):
                return c
        raise ValueError(f"one of {list(choices)}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [m.value for m in tp]
        if isinstance(value, tp) or value in values:
            return value if not isinstance(value, tp) else value.value
        raise ValueError(f"one of {values}")
    if tp is bool:
        return _to_bool(value)
    if tp is int:
        if isinstance(value, bool):
            raise ValueError("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ValueError("an integer")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError("a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads `2e-5` as a string
            except ValueError:
                pass
        raise ValueError("a number")
    if tp is str:
        if isinstance(value, bool):  # `resume_from_checkpoint: true` in YAML
            return str(value).lower()
        if isinstance(value, (str, int, float)):
            return str(value)
        raise ValueError("a string")
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise ValueError("a mapping")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ValueError(getattr(tp, "__name__", str(tp)))


def _convert(name: str, value: Any, tp: Any, choices: list | None) -> Any:
    """Convert a YAML value or a CLI string (list of strings for list fields) to the type hint ``tp``."""
    members = _union_args(tp)
    optional = type(None) in members
    members = [m for m in members if m is not type(None)]
    # `null` / `~` mean None for every optional field; `none` too unless the field takes strings
    # (`report_to: none` is a value)
    null_string = isinstance(value, str) and (
        value.lower() in ("null", "~") or (value.lower() == "none" and str not in members)
    )
    if value is None or (null_string and optional):
        if optional:
            return None
        raise ValueError("a value (not null)")
    list_members = [m for m in members if typing.get_origin(m) is list]
    scalar_members = [m for m in members if typing.get_origin(m) is not list]
    # lists: YAML lists, CLI multi-value flags, or one scalar for a list-only field
    if isinstance(value, (list, tuple)):
        if list_members:
            (elem,) = typing.get_args(list_members[0]) or (Any,)
            return [_convert(name, v, elem, None) for v in value]
        if len(value) == 1:
            value = value[0]
        else:
            raise ValueError("a single value, not a list")
    elif list_members and not scalar_members:
        (elem,) = typing.get_args(list_members[0]) or (Any,)
        return [_convert(name, value, elem, None)]
    expected = []
    # prefer exact types (a bool stays a bool in `str | bool`), then conversions in the declared order
    for m in scalar_members:
        if isinstance(m, type) and not issubclass(m, enum.Enum) and type(value) is m:
            result = value
            break
    else:
        result = _UNSET
        for m in scalar_members:
            try:
                result = _to_scalar(value, m)
                break
            except ValueError as e:
                expected.append(str(e))
        if result is _UNSET:
            raise ValueError(" or ".join(dict.fromkeys(expected)) or "a valid value")
    if choices is not None and result not in choices:
        raise ValueError(f"one of {list(choices)}")
    return result


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def _split_cli(argv: list[str], table: dict) -> tuple[dict[str, Any], list[str]]:
    """``--name value`` / ``--name=value`` / ``--name v1 v2`` / bare ``--flag`` / ``--no_flag`` -> dict."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            problems.append(f"unexpected argument {token!r}: expected `--field value`")
            i += 1
            continue
        key, eq, inline = token[2:].partition("=")
        key = key.replace("-", "_")
        values = [inline] if eq else []
        j = i + 1
        if not eq:
            while j < len(argv) and not (argv[j].startswith("--") and len(argv[j]) > 2):
                values.append(argv[j])
                j += 1
        i = j
        negated = False
        if key not in table and key.startswith("no_") and key[3:] in table:
            key, negated = key[3:], True
        if key not in table:
            problems.append(f"unknown option `--{key}`{_suggest(key, list(table))}")
            continue
        hint = table[key][2]
        is_list = any(typing.get_origin(m) is list for m in _union_args(hint))
        is_bool = bool in _union_args(hint)
        if negated:
            if not is_bool or values:
                problems.append(
                    _problem(key, f"`--{key} false` (only boolean fields have --no_{key})", values)
                )
                continue
            out[key] = False
        elif not values:
            if is_bool:
                out[key] = True
            else:
                problems.append(_problem(key, "a value after the flag", "nothing"))
        elif is_list:
            out[key] = values
        elif len(values) == 1:
            out[key] = values[0]
        else:
            problems.append(_problem(key, "a single value", values))
    return out, problems


def _load_yaml(path: str) -> tuple[dict[str, Any], list[str]]:
    import yaml

    p = Path(path)
    if not p.is_file():
        return {}, [_problem("config", "an existing YAML file", str(path))]
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        return {}, [f"`config`: {path} is not valid YAML: {e}"]
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        return {}, [_problem("config", f"a mapping of field: value in {path}", type(data).__name__)]
    return data, []


def parse_args(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, MatrixTrainingArguments]:
    """Parse ``[--config FILE.yaml] [--field value ...]`` into the three dataclasses.

    The YAML file sets defaults, command-line flags override them. Booleans accept true/false/yes/no/1/0 in
    both (``--use_peft false``; a bare ``--use_peft`` means true; ``--no_use_peft`` also works). List fields
    take several values (``--lora_target_modules q_proj v_proj``) or a YAML list. ``--help`` prints every
    field with its help text and exits.

    Raises:
        ConfigError: listing every unknown name (with the closest valid name), every value of the wrong type
            and every validation error of the dataclasses, one per line. Nothing heavy (no model, no data)
            has been loaded when it is raised.
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        HfArgumentParser(DATACLASSES, prog="matrix-llm sft").print_help()
        raise SystemExit(0)

    table = _field_table()
    problems: list[str] = []

    # --config may appear anywhere; take it out first
    config_paths, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] == "--config":
            if i + 1 >= len(argv):
                problems.append(_problem("config", "a YAML file after --config", "nothing"))
            else:
                config_paths.append(argv[i + 1])
            i += 2
        elif argv[i].startswith("--config="):
            config_paths.append(argv[i].split("=", 1)[1])
            i += 1
        else:
            rest.append(argv[i])
            i += 1
    if len(config_paths) > 1:
        problems.append(_problem("config", "one YAML file", config_paths))

    raw: dict[str, tuple[Any, str]] = {}  # name -> (value, source)
    for path in config_paths[:1]:
        data, errs = _load_yaml(path)
        problems += errs
        for key, value in data.items():
            if key not in table:
                problems.append(f"unknown field `{key}` in {path}{_suggest(str(key), list(table))}")
            else:
                raw[key] = (value, path)
    cli, errs = _split_cli(rest, table)
    problems += errs
    for key, value in cli.items():
        raw[key] = (value, "command line")

    values: dict[str, Any] = {}
    for key, (value, source) in raw.items():
        cls, f, hint = table[key]
        choices = f.metadata.get("choices")
        try:
            values[key] = _convert(key, value, hint, choices)
        except ValueError as e:
            problems.append(f"`{key}` ({source}): expected {e}; got {value!r}")

    # the dataclasses' own validation, each one on its own so that all of them report
    outputs = []
    for cls in DATACLASSES:
        kwargs = {k: v for k, v in values.items() if table[k][0] is cls}
        try:
            outputs.append(cls(**kwargs))
        except ConfigError as e:
            problems += e.problems
        except (ValueError, TypeError) as e:
            problems.append(f"{cls.__name__}: {e}")
    if problems:
        raise ConfigError(problems)
    model_args, data_args, training_args = outputs
    return model_args, data_args, training_args

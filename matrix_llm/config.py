"""The configuration every training command shares; each mode adds its own beside its objective.

- :class:`ModelArguments`: which model to load (TRL's names: ``model_name_or_path``, ``use_peft``, ``lora_r``,
  ...). A mode subclasses it for its own model options (e.g. the offline tiny model of ``sft``).
- :class:`DataArguments`: the data fields every mode has (dataset, config, splits, ``max_*_samples`` with one
  bound); a mode subclasses it for its own (columns, image size, prompt template, ...).
- :class:`MatrixTrainingArguments`: ``transformers.TrainingArguments`` plus what every mode shares: the
  ``objective`` a recipe picks (a key of :data:`matrix_llm.modes.OBJECTIVES`), the cadence of scheduled
  matrix diagnostics, ``learning_rate_scaling`` (the rate scaled by the total batch) and
  ``overwrite_output_dir``. Each mode's config subclasses it in ``modes/<mode>/config.py`` (the pairing of TRL's
  ``<algo>_config.py`` / ``<algo>_trainer.py``).

**One name per setting.** Every field a mode's config adds to :class:`MatrixTrainingArguments` is named
``<field_prefix><objective argument>`` (``ssl_gamma`` -> ``SSLObjective(gamma=...)``, ``clip_mce_mu`` ->
``CLIPObjective(mce_mu=...)``, ``matrix_loss_weight`` -> ``LMObjective(loss_weight=...)``): the objective's
keyword arguments (:meth:`MatrixTrainingArguments.objective_kwargs`), the field names its error messages use and
the model card's settings (:meth:`MatrixTrainingArguments.card_settings`) are derived from the fields, so they
cannot drift apart, and the prefix rule holds by construction. A renamed field keeps its old name working for a
while through ``transformers.HfArgumentParser``'s own ``metadata={"aliases": ["--old_name"]}``
(:func:`matrix_llm.parsing.parse_args` accepts it with a deprecation warning naming the new one).

Every dataclass validates itself in one place, ``problems()`` (all problems, not only the first), and raises
:class:`~matrix_llm.parsing.ConfigError` from ``__post_init__``; :func:`matrix_llm.parsing.parse_args` collects
those of all dataclasses of a command before anything heavy is loaded.
"""

from __future__ import annotations

import copy
import dataclasses
import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from transformers import TrainingArguments

from .parsing import ConfigError, looks_like_path, problem

__all__ = ["ConfigError", "DataArguments", "ImageDataArguments", "MatrixTrainingArguments", "ModelArguments"]


@dataclass
class ModelArguments:
    """The model to train, for every command (field names as in TRL's ``ModelConfig``). A mode whose command does
    not train LoRA adapters sets ``supports_peft = False`` (then ``use_peft: true`` is a configuration problem)."""

    supports_peft: ClassVar[bool] = True

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or local directory of the model to train (e.g. EleutherAI/llemma_7b); each command "
            "documents the special values it accepts (e.g. `tiny` for an offline random-init model)."
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
    use_dora: bool = field(
        default=False,
        metadata={"help": "DoRA: LoRA with a learned magnitude per output feature (peft's use_dora)."},
    )
    use_rslora: bool = field(
        default=False,
        metadata={"help": "rsLoRA: scale the adapter by lora_alpha / sqrt(r) instead of lora_alpha / r."},
    )
    lora_modules_to_save: list[str] | None = field(
        default=None,
        metadata={
            "help": "Modules trained in full and saved with the adapter (e.g. lm_head embed_tokens); None = none."
        },
    )

    tiny_hidden_size: int = field(
        default=64,
        metadata={"help": "Offline tiny model (each command's `tiny*` model_name_or_path): width."},
    )
    tiny_num_layers: int = field(default=2, metadata={"help": "Tiny model: number of layers."})
    tiny_num_heads: int = field(default=4, metadata={"help": "Tiny model: attention heads."})

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        if self.lora_target_modules is None or self.lora_target_modules == ["all-linear"]:
            self.lora_target_modules = ["all-linear"]

    def lora_config(self, **extra: Any) -> Any:
        """The ``peft.LoraConfig`` of these fields (``extra``: what a mode adds, e.g. ``task_type``)."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=self.peft_target_modules,
            use_dora=self.use_dora,
            use_rslora=self.use_rslora,
            modules_to_save=list(self.lora_modules_to_save) if self.lora_modules_to_save else None,
            **extra,
        )

    @property
    def peft_target_modules(self) -> str | list[str]:
        """``lora_target_modules`` in the form ``peft.LoraConfig(target_modules=...)`` takes."""
        mods = self.lora_target_modules or ["all-linear"]
        return "all-linear" if mods == ["all-linear"] else list(mods)

    def problems(self) -> list[str]:
        out = []
        if not self.model_name_or_path:
            out.append(
                problem("model_name_or_path", "a Hub id or a local directory", self.model_name_or_path)
            )
        for name in ("lora_r", "lora_alpha", "tiny_hidden_size", "tiny_num_layers", "tiny_num_heads"):
            if getattr(self, name) < 1:
                out.append(problem(name, "a positive integer", getattr(self, name)))
        if self.use_peft and not self.supports_peft:
            out.append(
                problem(
                    "use_peft",
                    f"false ({type(self).__name__}: this command trains no LoRA adapter)",
                    self.use_peft,
                )
            )
        if not 0.0 <= self.lora_dropout < 1.0:
            out.append(problem("lora_dropout", "a float in [0, 1)", self.lora_dropout))
        if self.tiny_hidden_size % max(self.tiny_num_heads, 1):
            out.append(
                problem(
                    "tiny_hidden_size",
                    f"a multiple of tiny_num_heads={self.tiny_num_heads}",
                    self.tiny_hidden_size,
                )
            )
        mods = self.lora_target_modules
        if mods is not None and "all-linear" in mods and len(mods) > 1:
            out.append(problem("lora_target_modules", "`all-linear` alone or a list of module names", mods))
        return out


@dataclass
class DataArguments:
    """The data fields every mode has; a mode subclasses it (and may redeclare a field to change its default or
    help). ``max_train_samples`` / ``max_eval_samples`` are at least 2: the matrix terms and the probes are
    batch-level (one row has no covariance)."""

    dataset_name: str | None = field(default=None, metadata={"help": "Hub id or local dataset."})
    dataset_config: str | None = field(
        default=None,
        metadata={"help": "Hub dataset config (modular-addition: the modulus, or modulus:train_fraction)."},
    )
    train_split: str = field(default="train", metadata={"help": "Split used for training."})
    eval_split: str | None = field(
        default="test", metadata={"help": "Split used for evaluation (null: none)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the eval set."})
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Read the training split as a stream (datasets.IterableDataset: a Hub id, a local folder or "
            "file, webdataset .tar shards), each process its share, rows decoded as they come; needs "
            "`max_steps`; resumes exactly (matrix_llm/data/streaming.py)."
        },
    )
    shuffle_buffer_size: int = field(
        default=1000,
        metadata={"help": "Streaming: rows shuffled together (windows of this many; 1: the stream's order)."},
    )

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    def problems(self) -> list[str]:
        """Every problem of the fields (subclasses extend it), a local data path that does not exist or is an
        empty folder included (every field named ``*dataset`` / ``*dataset_name``)."""
        out = []
        if not self.dataset_name:
            out.append(problem("dataset_name", "a Hub id or a local dataset", self.dataset_name))
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 2:
                out.append(problem(name, "an integer >= 2 or null", value))
        if self.shuffle_buffer_size < 1:
            out.append(problem("shuffle_buffer_size", "a positive integer", self.shuffle_buffer_size))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if (
                f.name.endswith(("dataset", "dataset_name"))
                and isinstance(value, str)
                and looks_like_path(value)
            ):
                path = Path(value).expanduser()
                if any(c in value for c in "*?["):  # a glob of files (webdataset shards)
                    if not glob.glob(str(path)):
                        out.append(
                            problem(f.name, "a pattern that matches files", value) + ": it matches none"
                        )
                elif not path.exists():
                    out.append(
                        problem(f.name, "a Hub id or an existing local file or folder", value)
                        + ": no such file or folder"
                    )
                elif path.is_dir() and not any(path.iterdir()):
                    out.append(
                        problem(f.name, "a Hub id or a local dataset", value) + ": the folder is empty"
                    )
        return out


@dataclass
class ImageDataArguments(DataArguments):
    """:class:`DataArguments` of the modes that read images (``ssl``, ``clip``, ``classify``)."""

    skip_corrupt_images: bool = field(
        default=False,
        metadata={
            "help": "Skip an image that cannot be decoded (a warning names its file; the count is logged as "
            "train `skipped_images`) instead of stopping the run with a message that names it (a checkpoint is "
            "saved)."
        },
    )


LR_SCALING = ("none", "linear", "sqrt")  # learning_rate_scaling's rules


@dataclass
class MatrixTrainingArguments(TrainingArguments):
    """``transformers.TrainingArguments`` plus the fields every mode shares (module docstring).

    Subclasses add their own fields and extend :meth:`problems`; all problems are raised together.
    ``field_prefix``: what every field a subclass adds starts with (``matrix_`` for the LM and classification
    modes, ``ssl_``, ``clip_``; the rest of the name is the objective's keyword argument).
    """

    field_prefix: ClassVar[str] = "matrix_"

    objective: str = field(
        default="lm",
        metadata={
            "help": "The training objective, i.e. the mode (a key of matrix_llm.modes.OBJECTIVES: lm = causal "
            "LM fine-tuning with a matrix loss). A command accepts the objectives it runs; each objective's "
            "config class checks that it is the one named here."
        },
    )
    matrix_metrics_steps: int | None = field(
        default=None,
        metadata={
            "help": "Compute the objective's scheduled matrix diagnostics (e.g. matrix_entropy / effective_rank, "
            "an extra eigendecomposition) on the micro-batches of every k-th optimizer step (None = logging_steps, "
            "or 1 when logging_steps is a fraction; 0 = never in training); always in evaluation.",
        },
    )
    matrix_probe_samples: int = field(
        default=0,
        metadata={
            "help": "Attach MatrixMetricsCallback: per-layer matrix entropy / effective rank and the mode's pair "
            "metrics (MIR, HDR, ...) of the first N evaluation rows (training rows without an eval set), every "
            "matrix_metrics_steps and at every evaluation, logged as probe_*. 0: off."
        },
    )
    learning_rate_scaling: str = field(
        default="none",
        metadata={
            "help": "Scale learning_rate by the total batch (per_device_train_batch_size x processes x "
            "gradient_accumulation_steps) over learning_rate_base_batch: `linear` (Goyal et al. 2017; SimCLR, BYOL, "
            "DINO, solo-learn's scale_lr), `sqrt`, or `none`; so a recipe's rate holds on any number of GPUs. The run "
            "trains with the scaled rate and records both in matrix_llm_run.json.",
        },
    )
    learning_rate_base_batch: int = field(
        default=256,
        metadata={"help": "The total batch at which learning_rate_scaling leaves the rate as set."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Allow training into an output_dir that already holds a finished run (it is refused "
            "otherwise, unless resuming)."
        },
    )

    def __post_init__(self) -> None:
        problems = self.problems()
        try:
            super().__post_init__()
        except ValueError as e:  # TrainingArguments' own checks stop at their first problem
            problems.append(f"TrainingArguments: {e}")
        if problems:
            raise ConfigError(problems)

    def problems(self) -> list[str]:
        """Validation of the matrix_llm fields (all problems, not only the first); subclasses extend it."""
        out = []
        if not self.objective:
            out.append(problem("objective", "a key of matrix_llm.modes.OBJECTIVES (e.g. lm)", self.objective))
        if self.matrix_probe_samples < 0 or self.matrix_probe_samples == 1:
            out.append(
                problem("matrix_probe_samples", "0 (off) or an integer >= 2", self.matrix_probe_samples)
            )
        if self.matrix_metrics_steps is not None and self.matrix_metrics_steps < 0:
            out.append(problem("matrix_metrics_steps", "an integer >= 0 or null", self.matrix_metrics_steps))
        if self.learning_rate_scaling not in LR_SCALING:
            out.append(problem("learning_rate_scaling", " or ".join(LR_SCALING), self.learning_rate_scaling))
        if self.learning_rate_base_batch < 1:
            out.append(
                problem("learning_rate_base_batch", "a positive integer", self.learning_rate_base_batch)
            )
        if self.learning_rate_scaling != "none" and self.auto_find_batch_size:
            # the rate is scaled once, by the batch as set; auto_find_batch_size may halve it afterwards
            out.append(
                problem(
                    "learning_rate_scaling",
                    "none with auto_find_batch_size (which can shrink the batch the rate was scaled by)",
                    self.learning_rate_scaling,
                )
            )
        return out

    def scale_learning_rate(self) -> dict[str, Any] | None:
        """Apply ``learning_rate_scaling`` to ``learning_rate``, once (a second call changes nothing): the rate
        times ``B / learning_rate_base_batch`` (``linear``) or its square root (``sqrt``), ``B`` the total batch
        of one optimizer step over every process; a DeepSpeed config's ``auto`` rates follow. :class:`MatrixTrainer`
        calls it. Returns (and keeps as ``learning_rate_record``) what was done, ``None`` for ``none``."""
        if self.learning_rate_scaling == "none" or getattr(self, "learning_rate_record", None):
            return getattr(self, "learning_rate_record", None)
        total = self.per_device_train_batch_size * self.world_size * self.gradient_accumulation_steps
        ratio = total / self.learning_rate_base_batch
        factor = ratio if self.learning_rate_scaling == "linear" else ratio**0.5
        as_set, scaled = self.learning_rate, self.learning_rate * factor
        self.learning_rate_record = {
            "rule": self.learning_rate_scaling,
            "learning_rate_as_set": as_set,
            "total_batch": total,
            "base_batch": self.learning_rate_base_batch,
            "learning_rate": scaled,
        }
        # a DeepSpeed config's "auto" rates were filled with the rate as set when these arguments were made
        deepspeed = getattr(self, "hf_deepspeed_config", None)
        if deepspeed is not None:
            for key in ("optimizer.params.lr", "scheduler.params.warmup_max_lr"):
                node, name = deepspeed.find_config_node(key)
                if node is not None and node.get(name) == as_set:
                    node[name] = scaled
        self.learning_rate = scaled
        return self.learning_rate_record

    @classmethod
    def objective_fields(cls) -> dict[str, str]:
        """``field name -> objective keyword argument``: the mode's fields without their ``field_prefix``, and
        ``matrix_metrics_steps`` (``metrics_steps``)."""
        fields = {name: name[len(cls.field_prefix) :] for name in cls.mode_fields()}
        return {**fields, "matrix_metrics_steps": "metrics_steps"}

    def objective_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the mode's objective, from its fields (:meth:`objective_fields`;
        ``matrix_metrics_steps`` resolved by :attr:`effective_matrix_metrics_steps`). A mode adds the arguments
        that no field of its own gives (e.g. the run's ``seed``) by extending this."""
        kwargs = {arg: getattr(self, name) for name, arg in self.objective_fields().items()}
        kwargs["metrics_steps"] = self.effective_matrix_metrics_steps
        return kwargs

    @classmethod
    def mode_fields(cls) -> list[str]:
        """The fields a mode's config adds to ``MatrixTrainingArguments``: each is a setting of its objective."""
        shared = {f.name for f in dataclasses.fields(MatrixTrainingArguments)}
        return [f.name for f in dataclasses.fields(cls) if f.name not in shared]

    def card_settings(self) -> dict[str, Any]:
        """What the model card lists as the objective's settings: every field of :meth:`mode_fields`."""
        return {name: getattr(self, name) for name in self.mode_fields()}

    def objective_problems(self, name: str, argument_problems: Any) -> list[str]:
        """For a subclass that configures objective ``name``: the objective field must name it, and the
        objective's own ``argument_problems(**self.objective_kwargs())`` are reported under the config's field
        names (from :meth:`objective_fields`), so that the values are validated once, by the objective."""
        out = []
        if self.objective != name:
            out.append(
                problem(
                    "objective", f"`{name}` ({type(self).__name__} configures that objective)", self.objective
                )
            )
        field_of = {arg: field_name for field_name, arg in self.objective_fields().items()}
        kwargs = self.objective_kwargs()
        kwargs["metrics_steps"] = max(0, kwargs["metrics_steps"])  # checked above, under its own name
        for arg, expected, got in argument_problems(**kwargs):
            out.append(problem(field_of.get(arg, arg), expected, got))
        return out

    def __getstate__(self) -> dict:
        """Pickled (``training_args.bin`` in ``output_dir`` and every checkpoint) without ``hub_token``, so the
        token never reaches disk or a Hub upload; the object in memory (and its copies) keep it."""
        state = dict(self.__dict__)
        state["hub_token"] = None
        return state

    def __copy__(self) -> MatrixTrainingArguments:
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo: dict) -> MatrixTrainingArguments:
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()})
        return new

    @property
    def effective_matrix_metrics_steps(self) -> int:
        """``matrix_metrics_steps`` with ``None`` resolved to ``logging_steps`` (at least 1; a fractional
        ``logging_steps``, a share of the run, resolves to 1: diagnostics every step)."""
        if self.matrix_metrics_steps is not None:
            return int(self.matrix_metrics_steps)
        return max(1, int(self.logging_steps))

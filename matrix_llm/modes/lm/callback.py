"""GSM8K accuracy by generation inside the training loop (any ``transformers.Trainer``).

``compute_metrics`` only sees teacher-forced argmax tokens; :class:`GSM8KEvalCallback` instead *generates* on a
fixed subset at every evaluation (``on_evaluate``, i.e. every ``eval_steps``) with the same prompt, stop strings,
generation and scoring code as ``matrix-llm eval gsm8k`` (:func:`matrix_llm.modes.lm.evaluate.evaluate_gsm8k` and
:func:`~matrix_llm.modes.lm.evaluate.score_samples`), and logs::

    eval_gsm8k_strict     lm-eval strict-match exact match (``#### N``; ``The answer is N.`` for cot8)
    eval_gsm8k_flexible   lm-eval flexible-extract exact match (last number)
    eval_gsm8k_no_answer  fraction of completions with no strict answer

Usage::

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val, ...)
    trainer.add_callback(GSM8KEvalCallback(tokenizer, load_gsm8k(split="test"), prompt="qa", num_samples=200,
                                           trainer=trainer))

Where the numbers go:

- always into the ``metrics`` dict of the evaluation (what ``trainer.evaluate()`` returns, and what
  ``metric_for_best_model="eval_gsm8k_strict"`` / ``load_best_model_at_end`` look at);
- with ``trainer=`` given: through ``trainer.log`` as their own log entry, so every reporter (TensorBoard, W&B,
  the console) and ``state.log_history`` get them (the pattern of TRL's ``LogCompletionsCallback``). Without it,
  they are merged into the evaluation's entry of ``state.log_history`` (hence ``trainer_state.json``), but the
  reporters have already received that entry (the Trainer logs before it calls ``on_evaluate``) and do not
  see them.

Multi-process (DDP, DeepSpeed): each rank generates a strided shard of the subset, the samples are gathered
with ``all_gather_object`` and every rank scores the same full list, so all ranks log identical values, equal to
a single-process run on the same items. Under DeepSpeed ZeRO-3 the weights are sharded, so generation runs with
``synced_gpus=True`` (every rank runs the same number of batches and forward passes); this is chosen
automatically (``synced_gpus=None``), also for FSDP (GPU only, untested here: FSDP does not run on CPU). PEFT models work as they are. The model is put in eval mode for
generation and back into its previous mode afterwards. With ``bf16=True`` and float32 weights on a GPU,
generation runs under bf16 autocast.

Samples are written to ``{output_dir}/gsm8k_samples/step-{global_step}.jsonl`` on the main process
(``save_samples=False`` to turn off). Several ``on_evaluate`` calls at one step (a dict of eval datasets) reuse
the first result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from matrix_llm.callbacks import log_eval_metrics

logger = logging.getLogger(__name__)

__all__ = ["GSM8KEvalCallback"]

METRIC_KEYS = {"strict": "strict_accuracy", "flexible": "flexible_accuracy", "no_answer": "no_answer_rate"}


class GSM8KEvalCallback(TrainerCallback):
    """Generate on a fixed GSM8K subset at each evaluation and log strict/flexible accuracy and no-answer rate.

    Args:
        tokenizer: the model's tokenizer.
        dataset: rows with ``question`` and ``answer`` (a ``datasets.Dataset`` or a list of dicts, e.g.
            ``load_gsm8k(split="test")``); the first ``num_samples`` rows are used, the same every time (and the
            same rows as ``matrix-llm eval gsm8k --limit num_samples``).
        prompt: evaluation prompt (``matrix_llm.data.gsm8k.EVAL_PROMPTS``); default ``"qa"``, the default
            training template, zero-shot.
        num_samples: size of the subset (``None``: all rows).
        max_new_tokens: generation budget (default 512).
        batch_size: prompts per ``generate`` call on each rank.
        fewshot_examples: for ``fewshot5``: one list of 5 train rows used for every question.
        trainer: the trainer, to log through ``trainer.log`` (see the module docstring).
        synced_gpus: ``None`` = on when several processes hold sharded weights (DeepSpeed ZeRO-3, FSDP).
        metric_prefix: key prefix of the logged metrics.
        save_samples: write each evaluation's samples as JSON lines under ``output_dir``.
    """

    def __init__(
        self,
        tokenizer,
        dataset: Sequence[Mapping[str, str]] | Any,
        *,
        prompt: str = "qa",
        num_samples: int | None = 100,
        max_new_tokens: int = 512,
        batch_size: int = 16,
        fewshot_examples: Sequence[Mapping[str, str]] | None = None,
        trainer=None,
        synced_gpus: bool | None = None,
        metric_prefix: str = "eval_gsm8k",
        save_samples: bool = True,
    ):
        from matrix_llm.data.gsm8k import get_eval_prompt

        get_eval_prompt(prompt)  # validates the name
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be >= 1 or None; got {num_samples}")
        n = len(dataset) if num_samples is None else min(num_samples, len(dataset))
        items = []
        for i in range(n):
            row = dataset[i]
            if not isinstance(row, Mapping) or not {"question", "answer"} <= set(row):
                raise ValueError(
                    f"dataset row {i} must have the fields 'question' and 'answer'; got {row!r:.120}"
                )
            items.append({"question": row["question"], "answer": row["answer"]})
        if not items:
            raise ValueError("GSM8KEvalCallback got an empty dataset")
        if prompt == "fewshot5" and fewshot_examples is None:
            raise ValueError(
                "prompt='fewshot5' needs fewshot_examples (5 train rows with 'question' and 'answer')"
            )
        self.tokenizer = tokenizer
        self.items = items
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.fewshot_examples = list(fewshot_examples) if fewshot_examples is not None else None
        self.trainer = trainer
        self.synced_gpus = synced_gpus
        self.metric_prefix = metric_prefix
        self.save_samples = save_samples
        self.last_samples: list[dict[str, Any]] = []
        self.last_metrics: dict[str, float] = {}
        self._last_step: int | None = None
        self._last_logs: dict[str, float] = {}

    # -- helpers ---------------------------------------------------------------------------------------------

    def _use_synced_gpus(self, world_size: int, model=None, args=None) -> bool:
        """``synced_gpus`` unless set: on when several processes share sharded weights (ZeRO-3 or FSDP)."""
        if self.synced_gpus is not None:
            return self.synced_gpus
        if world_size < 2:
            return False
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled() or bool(getattr(args, "fsdp", None)):
            return True
        try:
            from transformers.distributed.fsdp import is_fsdp_managed_module
        except ImportError:  # older layouts
            return False
        return model is not None and is_fsdp_managed_module(model)

    @staticmethod
    def _autocast_dtype(args, model):
        import torch

        param = next(model.parameters())
        if getattr(args, "bf16", False) and param.device.type == "cuda" and param.dtype == torch.float32:
            return torch.bfloat16
        return None

    def evaluate(
        self, model, args=None, *, is_main: bool = True
    ) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """Generate and score on the subset (all ranks take part when a process group is up)."""
        from matrix_llm import distributed, features
        from matrix_llm.modes.lm.evaluate import evaluate_gsm8k, score_samples

        world, rank = distributed.world_size(), distributed.rank()
        mine = list(range(rank, len(self.items), world))
        shots = [self.fewshot_examples] * len(mine) if self.fewshot_examples is not None else None
        with features.evaluating(model):
            result = evaluate_gsm8k(
                model,
                self.tokenizer,
                [self.items[i] for i in mine],
                prompt=self.prompt,
                fewshot_examples=shots,
                max_new_tokens=self.max_new_tokens,
                batch_size=self.batch_size,
                synced_gpus=self._use_synced_gpus(world, model, args),
                autocast_dtype=self._autocast_dtype(args, model),
                progress=is_main,
                indices=mine,
                score=False,
            )
        samples = result.samples
        if world > 1:
            gathered: list[list[dict[str, Any]] | None] = [None] * world
            import torch.distributed as dist

            dist.all_gather_object(gathered, samples)
            samples = sorted((s for part in gathered for s in part), key=lambda s: s["index"])
        return samples, score_samples(samples)

    # -- TrainerCallback -------------------------------------------------------------------------------------

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        if model is None:
            raise ValueError("GSM8KEvalCallback.on_evaluate needs the model (the Trainer passes it)")
        if self._last_step != state.global_step:
            samples, scores = self.evaluate(model, args, is_main=state.is_world_process_zero)
            self.last_samples, self.last_metrics = samples, scores
            self._last_logs = {f"{self.metric_prefix}_{k}": float(scores[v]) for k, v in METRIC_KEYS.items()}
            self._last_step = state.global_step
            if self.save_samples and state.is_world_process_zero and args is not None and args.output_dir:
                from matrix_llm.modes.lm.evaluate import write_jsonl

                out = Path(args.output_dir) / "gsm8k_samples"
                out.mkdir(parents=True, exist_ok=True)
                write_jsonl(out / f"step-{state.global_step}.jsonl", samples)
            self._log(state)
        if metrics is not None:
            metrics.update(self._last_logs)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        # results are cached per global step (an evaluate right after the last eval step does not generate
        # again); at the end of training `load_best_model_at_end` may have swapped the weights without changing
        # the step, so the next evaluate must generate anew
        self._last_step = None
        return control

    def _log(self, state) -> None:
        log_eval_metrics(dict(self._last_logs), state, self.trainer)

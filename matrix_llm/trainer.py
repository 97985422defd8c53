"""``MatrixTrainer``: the single training loop, a ``transformers.Trainer`` that delegates its loss to an objective.

It overrides ``compute_loss`` and ``log`` (plus two one-line fixes so that objectives of models without
``labels`` run in ``evaluate()`` and keep the batch keys they read); accumulation, mixed precision,
DDP/DeepSpeed/FSDP, checkpoints and resume, ``report_to``, progress bars and ``push_to_hub`` are the Trainer's.
"""

from __future__ import annotations

import math
from collections import defaultdict
from functools import partial
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

from matrix_llm.data.streaming import POSITION, StreamCheckpoint, StreamingRows, stream_collator
from matrix_llm.modes import ObjectiveOutput, build_objective

from . import features

__all__ = ["MatrixTrainer", "one_element_scalars"]


class MatrixTrainer(Trainer):
    """A ``transformers.Trainer`` whose loss is ``objective(model, batch)`` (:mod:`matrix_llm.modes`): for
    the LM objective, ``loss = lm_loss + matrix_loss_weight * matrix_loss`` (:mod:`matrix_llm.modes.lm.objective`).

    Args:
        objective: a callable ``(model, inputs, *, base_loss, step) -> ObjectiveOutput``. ``None``: built from
            ``args`` (``OBJECTIVES[args.objective]``; ``args`` is then that objective's config class, e.g.
            :class:`~matrix_llm.modes.LMConfig`). The objective's ``callbacks(trainer)`` (if any) are added.
        train_sampler: the order of the training rows (a ``torch.utils.data.Sampler`` the DataLoader cuts into
            batches, e.g. :class:`~matrix_llm.data.labels.LabelledShareSampler`); ``None``: the Trainer's.
        Everything else: as ``transformers.Trainer``.

    **Gradient accumulation and multi-process scaling.** The returned loss is
    ``token_loss + s * batch_loss``:

    - ``token_loss`` (the LM cross-entropy) is the parent ``Trainer.compute_loss`` result, untouched. Since
      transformers 4.46 it is a token *sum* divided by ``num_items_in_batch`` (the completion tokens of all
      micro-batches of the optimizer step, and of all processes when ``average_tokens_across_devices``, then
      multiplied by ``num_processes`` inside ``compute_loss`` because DDP averages gradients). Summed over
      the micro-batches it is the token mean over the accumulated batch, and the Trainer does *not* divide it
      by ``gradient_accumulation_steps``.
    - ``batch_loss`` (``matrix_loss_weight * MCE``) is a per-micro-batch quantity: a matrix over that
      micro-batch's tokens is not additive. It is added *after* the parent's ``× num_processes``, so DDP's
      gradient average makes it the mean over processes, and it is scaled by
      ``s = 1 / current_gradient_accumulation_steps`` exactly when the Trainer will not divide the loss itself
      (``loss_is_scaled_for_ga``, decided like ``Trainer.training_step``: the model accepts loss kwargs and
      ``num_items_in_batch`` is known, or a ``compute_loss_func`` is set, unless ``loss_is_scaled_for_ga`` is
      forced); otherwise ``s = 1`` and the Trainer divides the whole loss by the accumulation steps.
      Either way the matrix term contributes the *mean* of the per-micro-batch matrix losses to the
      update, so its weight relative to the LM loss does not change with ``gradient_accumulation_steps``
      (tested in ``tests/test_trainer.py``). In evaluation ``s = 1``.

    The matrix term is *not* the matrix loss of the accumulated batch: MCE over ``k`` micro-batches of
    ``T`` tokens is a mean of ``k`` ``T x T`` terms, not one ``kT x kT`` term (docs/formulations.md); to
    change the batch a matrix sees, change ``per_device_train_batch_size`` (or use ``matrix_scope: global``
    to pool all processes).

    **Logging** (TRL's pattern): each micro-batch's metrics (``ObjectiveOutput.metrics`` and the token loss)
    go through :meth:`record_metrics`, the public channel that callbacks may use too: gathered over processes,
    kept per name until ``log()`` adds their means (NaN-free) to the Trainer's logs (``eval_`` prefix in
    evaluation) and clears them. The keys are the objective's (see its docstring); ``loss`` / ``eval_loss``
    (the weighted total that is optimised) come from the Trainer itself.

    **Batches without labels** (a bare vision backbone, a dual encoder): ``evaluate()`` still runs the objective
    (:meth:`prediction_step`; the Trainer would otherwise call the model and skip the loss), and batch keys listed
    in ``objective.input_names`` survive ``remove_unused_columns``.

    **Evaluation does not change the training run**: :meth:`evaluate` leaves torch's random state as it found it
    (the evaluation DataLoader draws its base seed from torch's generator, so evaluating every ``eval_steps`` would
    otherwise change the dropout masks of every step after it).

    **0-dim parameters** (CLIP's ``logit_scale``) under DeepSpeed ZeRO-0/1/2 are made 1-element
    (:func:`one_element_scalars`), which DeepSpeed's start-up broadcast needs.

    **Resuming a model whose checkpoint names differ from its parameters' names** (transformers v5 renames ViT's
    attention weights on load and saves them under the old names; the Trainer's resume loads the checkpoint with a
    plain ``load_state_dict``, so those weights silently stay at their initial values, transformers#43701): the
    checkpoint is loaded through ``from_pretrained`` instead (:meth:`_load_from_checkpoint`, and
    :meth:`_load_best_model` for ``load_best_model_at_end``), as the final model is.
    """

    # Whether the parent's ``compute_loss(..., return_outputs=True)`` costs nothing more than without outputs (true of
    # ``transformers.Trainer``; TRL's SFTTrainer runs an extra forward for them, so MatrixSFTTrainer sets False and
    # the objective gets ``outputs=None`` unless the caller of ``compute_loss`` asked for them).
    parent_outputs_are_free = True

    def __init__(self, *args: Any, objective: Any = None, train_sampler: Any = None, **kwargs: Any) -> None:
        # learning_rate_scaling, before the rate reaches DeepSpeed or the optimizer
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        if hasattr(training_args, "scale_learning_rate"):
            training_args.scale_learning_rate()
        super().__init__(*args, **kwargs)
        self.objective = objective if objective is not None else build_objective(self.args)
        self.train_sampler = train_sampler
        if self.is_deepspeed_enabled and not is_deepspeed_zero3_enabled():
            one_element_scalars(self.model)  # before DeepSpeed's start-up broadcast (see there)
        self.add_callback(_DropPredictMetrics(self))
        for callback in getattr(self.objective, "callbacks", lambda trainer: [])(self):
            self.add_callback(callback)
        self._metrics: dict[str, dict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self.stream: StreamCheckpoint | None = None
        self._resumed_from: str | None = None
        if isinstance(self.train_dataset, StreamingRows):
            self.stream = StreamCheckpoint(
                self.train_dataset, rank=self.args.process_index, workers=self.args.dataloader_num_workers
            )
            self.add_callback(self.stream)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """``train_sampler`` when given (e.g. :class:`~matrix_llm.data.labels.LabelledShareSampler`), else the
        Trainer's."""
        if self.train_sampler is not None:
            return self.train_sampler
        return super()._get_train_sampler(train_dataset)

    # -- streamed training data (matrix_llm.data.streaming) ------------------------------------------------

    def get_train_dataloader(self) -> Any:
        """A streamed training set (:class:`~matrix_llm.data.streaming.StreamingRows`) is this process's share
        already: its DataLoader is prepared as one process's (no second split, no dispatch from the main
        process); anything else goes the Trainer's way."""
        if self.stream is None:
            return super().get_train_dataloader()
        from accelerate.data_loader import prepare_data_loader
        from torch.utils.data import DataLoader

        args = self.args
        loader = DataLoader(
            self.train_dataset,
            batch_size=self._train_batch_size,
            collate_fn=stream_collator(self.data_collator),
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            prefetch_factor=args.dataloader_prefetch_factor if args.dataloader_num_workers else None,
        )
        return prepare_data_loader(
            loader, self.accelerator.device, num_processes=1, process_index=0, dispatch_batches=False
        )

    def get_resumed_dataloader(self, dataloader: Any, num_batches: int) -> Any:
        """A stream goes on from the positions its checkpoint saved instead of reading the skipped batches again
        (the Trainer calls this from transformers 5.25; before, it reads them again: the same batches, slower)."""
        if self.stream is None or self._resumed_from is None:
            return super().get_resumed_dataloader(dataloader, num_batches)
        self.stream.load(self._resumed_from)
        return dataloader

    def _load_renamed(self, checkpoint: str, model: Any = None) -> bool:
        """Load ``checkpoint`` through ``from_pretrained`` when its weight names are not the model's (class
        docstring); False when the Trainer's own loading is right (nothing done)."""
        from pathlib import Path

        from safetensors import safe_open
        from transformers import PreTrainedModel

        target = features.unwrap(model if model is not None else self.model)
        weights = Path(checkpoint) / "model.safetensors"
        if self.is_deepspeed_enabled or not (isinstance(target, PreTrainedModel) and weights.is_file()):
            return False
        with safe_open(str(weights), framework="pt") as f:
            renamed = set(f.keys()) - set(target.state_dict())
        if not renamed:
            return False
        saved = type(target).from_pretrained(checkpoint, config=target.config)
        target.load_state_dict(saved.state_dict())
        return True

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        self._resumed_from = resume_from_checkpoint
        if not self._load_renamed(resume_from_checkpoint, model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        if not self._load_renamed(self.state.best_model_checkpoint):
            super()._load_best_model()

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        for name in getattr(self.objective, "input_names", ()):
            if name not in self._signature_columns:
                self._signature_columns.append(name)

    # -- loss ---------------------------------------------------------------------------------------------

    def _trainer_scales_for_ga(self, num_items_in_batch: Any) -> bool:
        """Whether ``Trainer.training_step`` treats the loss as already scaled for gradient accumulation."""
        forced = getattr(self, "loss_is_scaled_for_ga", None)
        if forced is not None:
            return bool(forced)
        return bool(
            (self.model_accepts_loss_kwargs and num_items_in_batch is not None)
            or self.compute_loss_func is not None
        )

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        training = model.training
        if POSITION in inputs:  # a streamed batch: where its rows came from, for the next checkpoint
            positions = {POSITION: inputs.pop(POSITION)}
            if training and self.stream is not None:
                self.stream.consumed(positions)
        parent = super()
        # the parent's model outputs, when they cost nothing more or the caller asked for them (class docstring)
        want_outputs = return_outputs or self.parent_outputs_are_free

        def base_loss(m: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, Any]:
            if want_outputs:
                return parent.compute_loss(
                    m, batch, return_outputs=True, num_items_in_batch=num_items_in_batch
                )
            return parent.compute_loss(m, batch, num_items_in_batch=num_items_in_batch), None

        out: ObjectiveOutput = self.objective(
            model, inputs, base_loss=base_loss, step=self.state.global_step if training else None
        )
        # accumulation factor (see the class docstring)
        ga = 1
        if training and self._trainer_scales_for_ga(num_items_in_batch):
            ga = max(1, int(getattr(self, "current_gradient_accumulation_steps", 1) or 1))
        loss = out.token_loss
        if out.batch_loss is not None:
            batch_term = out.batch_loss / ga
            loss = batch_term if loss is None else loss + batch_term
        if loss is None:
            raise ValueError(f"MatrixTrainer: the objective {type(self.objective).__name__} returned no loss")

        metrics = dict(out.metrics)
        if out.token_loss is not None:
            # the token loss summed over the micro-batches is the accumulated-batch mean: times `ga` gives a
            # per-micro-batch value whose mean over the micro-batches is that mean
            metrics[out.token_loss_name] = out.token_loss.detach().float() * ga
        self.record_metrics(metrics, mode="train" if training else "eval")
        if not return_outputs:
            return loss
        return loss, (out.outputs if out.outputs is not None else {})  # the Trainer indexes what it gets

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """``Trainer.evaluate``, with torch's random state (CPU and this process's device) restored after."""
        with features.random_state_kept(self.args.device):
            return super().evaluate(*args, **kwargs)

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, Any, Any]:
        """The Trainer's, when the batch has its labels; without them (self-supervised and image-text objectives),
        the objective's loss alone, which the Trainer would otherwise skip."""
        if any(inputs.get(name) is not None for name in self.label_names):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach().mean(), None, None

    def record_metrics(self, metrics: dict[str, torch.Tensor | float], mode: str | None = None) -> None:
        """Queue scalar metrics for the next ``log()`` (means over the values recorded since the last one).

        The public channel for objectives and callbacks. One collective gathers the values of all processes
        (NaN-free mean), so every rank must call it at the same point with the same keys (``nan`` where a rank
        has no value). ``mode``: ``"train"`` or ``"eval"``; ``None`` = from the model's mode.
        """
        mode = mode or ("train" if self.model.training else "eval")
        if mode not in self._metrics:
            raise ValueError(f"record_metrics: `mode` must be 'train' or 'eval'; got {mode!r}")
        if not metrics:
            return
        names = sorted(metrics)
        device = self.args.device
        values = torch.stack(
            [torch.as_tensor(metrics[k], dtype=torch.float32).detach().to(device) for k in names]
        )
        if self.accelerator.num_processes > 1:
            values = self.accelerator.gather(values[None]).reshape(-1, len(names))
            finite = torch.isfinite(values)
            count = finite.sum(0)
            values = torch.where(finite, values, torch.zeros_like(values)).sum(0) / count.clamp(min=1)
            values = torch.where(count > 0, values, torch.full_like(values, math.nan))
        for name, value in zip(names, values.tolist(), strict=True):
            if math.isfinite(value):
                self._metrics[mode][name].append(value)

    # -- logging ------------------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        own = "loss" in logs if mode == "train" else any(k.endswith("_runtime") for k in logs)
        if not own:  # a callback's own entry (probe metrics, GSM8K accuracy): the queued means wait for ours
            Trainer.log(self, logs, start_time)  # past any parent that merges its own queue too (TRL's)
            return
        metrics = {name: sum(vals) / len(vals) for name, vals in self._metrics[mode].items() if vals}
        if mode == "eval":
            prefix = next((k[: -len("runtime")] for k in logs if k.endswith("_runtime")), "eval_")
            metrics = {f"{prefix}{k}": v for k, v in metrics.items()}
        for key, value in metrics.items():
            logs.setdefault(key, value)  # never override the Trainer's own keys (`loss`, `eval_loss`)
        super().log(logs, start_time)
        self._metrics[mode].clear()


class _DropPredictMetrics(TrainerCallback):
    """``Trainer.predict`` runs ``compute_loss`` (so metrics are recorded under ``eval``) but never calls
    ``log()``: drop them, so they cannot leak into the next evaluation's logged means."""

    def __init__(self, trainer: MatrixTrainer) -> None:
        self.trainer = trainer

    def on_predict(self, args, state, control, metrics=None, **kwargs):
        self.trainer._metrics["eval"].clear()
        return control


def one_element_scalars(model: Any) -> list[str]:
    """Make every 0-dim parameter of ``model`` a 1-element one, for DeepSpeed: at start-up it broadcasts each
    parameter as ``p.data.view(torch.uint8)``, which raises for a 0-dim one ("self.dim() cannot be 0 to view Float
    as Byte", deepspeed 0.19; CLIP's ``logit_scale`` is 0-dim). The model's arithmetic is unchanged (broadcasting);
    its ``state_dict`` keeps the 0-dim form, so saved models and checkpoints are the usual ones, and
    ``load_state_dict`` takes either form. Returns the names of the parameters changed."""
    changed = []
    for prefix, module in model.named_modules():
        names = [name for name, p in module.named_parameters(recurse=False) if p.dim() == 0]
        for name in names:
            old = getattr(module, name)
            setattr(module, name, nn.Parameter(old.data.reshape(1), requires_grad=old.requires_grad))
            changed.append(f"{prefix}.{name}" if prefix else name)
        if names:
            module.register_state_dict_post_hook(partial(_scalars_0d, names=names))
            module.register_load_state_dict_pre_hook(partial(_scalars_1d, names=names))
    return changed


def _scalars_0d(module: Any, state_dict: dict, prefix: str, local_metadata: Any, *, names: list[str]) -> None:
    for name in names:
        if prefix + name in state_dict:
            state_dict[prefix + name] = state_dict[prefix + name].reshape(())


def _scalars_1d(module: Any, state_dict: dict, prefix: str, *args: Any, names: list[str]) -> None:
    for name in names:
        if prefix + name in state_dict and state_dict[prefix + name].dim() == 0:
            state_dict[prefix + name] = state_dict[prefix + name].reshape(1)

"""Callbacks for any ``transformers.Trainer``: :func:`log_eval_metrics` (the one way an ``on_evaluate`` callback
logs what it measured) and ``MatrixMetricsCallback``: matrix diagnostics of a model on a fixed probe batch, during training with any
``transformers.Trainer`` (plain, :class:`~matrix_llm.trainer.MatrixTrainer`, TRL's).

Every ``every`` optimizer steps the probe batch (the same rows on every rank) goes through the model once, in
eval mode and without gradients, and the callback logs its own entry through ``transformers.Trainer.log`` (so every
reporter and ``trainer_state.json`` get them; :func:`log_entry`), with the prefix ``probe_``:

- per layer ``i`` of the model's block stack: ``probe_layer{i}_matrix_entropy`` / ``probe_layer{i}_effective_rank``
  of the layer's output pooled per example (mean over the attended tokens or patches);
- for a classifier (a head mapping to ``config.num_labels`` and labels in the batch): ``probe_mir`` and
  ``probe_hdr`` between the features the head sees and the head rows of their labels, ``probe_head_entropy``
  (``W Wᵀ``), ``probe_class_mean_entropy`` (Gram of the class means) and ``probe_nc1``
  (``tr(Σ_W Σ_B⁺) / C``, within- over between-class scatter), whose neural-collapse values are the closed
  forms of docs/formulations.md and 0;
- for a causal LM (an LM head and ``labels``): ``probe_mir`` / ``probe_hdr`` between the hidden states the LM
  head sees at the completion positions and the head rows of their next tokens.

Every rank runs the probe (under ZeRO-3 the forward is a collective) and computes the same values, so nothing
is gathered. The model's mode is restored afterwards and no random state is drawn: training is unchanged
(tested). ``matrix_probe_samples: N`` in a recipe attaches it with the first ``N`` evaluation rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import Trainer, TrainerCallback

from matrix_llm import features, info
from matrix_llm.data.labels import IGNORE_INDEX
from matrix_llm.features import diagnostics

__all__ = ["MatrixMetricsCallback", "classification_pair_metrics", "log_entry", "log_eval_metrics"]


def classification_pair_metrics(feats: Tensor, head: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """MIR / HDR / head and class-mean entropies / NC1 of features ``(N, d)``, head rows ``(C, d)``, labels ``(N,)``.

    MIR and HDR are NaN where the features or the head rows span one direction (entropy 0: the ratios are 0/0), as a
    collapsed representation does, so the diagnostic reports it instead of ending the run.

    Raises:
        ValueError: fewer than 2 classes among ``labels`` (MIR is 0/0 there).
    """
    classes = torch.unique(labels)
    if classes.numel() < 2:
        raise ValueError(
            f"MatrixMetricsCallback: the probe batch needs at least 2 classes; got {classes.tolist()}"
        )
    feats, head = feats.double(), head.double()
    try:
        mir, hdr = info.mir_hdr(info.gram(feats), info.gram(head[labels]))
    except info.UndefinedRatioError:  # a rank-1 Gram: the entropy in the denominators is 0
        mir = hdr = feats.new_tensor(float("nan"))
    means = torch.stack([feats[labels == c].mean(0) for c in classes])
    centred_means = means - feats.mean(0)
    within = sum(
        (feats[labels == c] - m).mT @ (feats[labels == c] - m) for c, m in zip(classes, means, strict=True)
    )
    within = within / feats.shape[0]
    between = centred_means.mT @ centred_means / classes.numel()
    nc1 = torch.trace(within @ torch.linalg.pinv(between, hermitian=True)) / classes.numel()
    return {
        "mir": mir,
        "hdr": hdr,
        "head_entropy": info.entropy(info.gram(head)),
        "class_mean_entropy": info.entropy(info.gram(centred_means)),
        "nc1": nc1,
    }


class MatrixMetricsCallback(TrainerCallback):
    """Matrix diagnostics on a fixed probe batch every ``every`` optimizer steps (module docstring).

    Args:
        probe: rows (a list of dicts or a ``datasets.Dataset``), collated once with ``collator``.
        trainer: the trainer to log through (``trainer.log``); its ``data_collator`` is the default ``collator``.
        collator: turns the probe rows into a batch (default: the trainer's).
        every: cadence in optimizer steps (default: ``args.matrix_metrics_steps`` when the arguments have it,
            else ``logging_steps``); the probe also runs at every evaluation.
        layers: block indices to report (default: all; ``()`` for none).
    """

    def __init__(
        self,
        probe: Sequence[Mapping[str, Any]] | Any,
        *,
        trainer: Any,
        collator: Any = None,
        every: int | None = None,
        layers: Sequence[int] | None = None,
    ) -> None:
        rows = [probe[i] for i in range(len(probe))]
        if len(rows) < 2:
            raise ValueError(f"MatrixMetricsCallback: the probe needs at least 2 rows; got {len(rows)}")
        self.trainer = trainer
        self.batch = (collator or trainer.data_collator)(rows)
        self.every = every
        self.layers = layers

    def _cadence(self, args: Any) -> int:
        if self.every is not None:
            return int(self.every)
        steps = getattr(args, "effective_matrix_metrics_steps", None)
        return int(steps) if steps is not None else max(1, int(args.logging_steps))

    @torch.no_grad()
    def compute(self, model: torch.nn.Module) -> dict[str, float]:
        """The probe metrics of ``model`` now (``probe_``-prefixed floats)."""
        out: dict[str, Tensor] = {}
        with features.evaluating(model) as device:
            batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in self.batch.items()}
            labels = batch.pop("labels", None)
            head = self._head(model)
            layers = (
                features.capture_layers(model, self.layers) if self.layers != () else contextlib.nullcontext()
            )
            mask = batch.get("attention_mask")
            capture = (
                features.capture_head_input(model, mask)
                if head is not None
                else features.capture_hidden(model, -1)
            )
            with layers as hidden, capture as captured:
                model(**batch)
            for index, states in sorted((hidden or {}).items()):
                pooled = (
                    features.pool(states, "mean", attention_mask=mask)
                    if states.dim() == 3
                    else states.flatten(1)
                )
                ent, erank = diagnostics.entropy_erank(pooled)
                out[f"layer{index}_matrix_entropy"], out[f"layer{index}_effective_rank"] = ent, erank
            if labels is not None and head is not None:
                keep = labels != IGNORE_INDEX
                weight = features.full_weight(head.weight)
                out.update(classification_pair_metrics(captured.features[keep], weight, labels[keep]))
            elif labels is not None and captured.hidden is not None:
                tokens = features.token_features(captured.hidden, labels)
                weight = features.head_weight(model)
                if tokens.targets.numel() >= 2:
                    mir, hdr = info.mir_hdr(
                        info.gram(tokens.hidden.double()), info.gram(weight.double()[tokens.targets])
                    )
                    out.update(mir=mir, hdr=hdr)
        return {f"probe_{k}": float(v) for k, v in out.items()}

    @staticmethod
    def _head(model: torch.nn.Module) -> Any:
        """The classifier head, or None for a model without ``config.num_labels`` heads (e.g. a causal LM)."""
        try:
            if features.unwrap(model).get_output_embeddings() is not None:
                return None
        except (AttributeError, NotImplementedError):
            pass
        return features.classifier_head(model)

    def _log(self, control: Any, values: dict[str, float]) -> None:
        """:func:`log_entry` without cancelling a log the Trainer is about to write: its ``on_log`` clears
        ``control.should_log``, which ``on_step_end`` set for the Trainer's own step log."""
        pending = control.should_log
        log_entry(self.trainer, dict(values))
        control.should_log = pending

    def on_step_end(self, args, state, control, model=None, **kwargs):
        every = self._cadence(args)
        if model is not None and every > 0 and state.global_step % every == 0:
            self._log(control, self.compute(model))
        return control

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        if model is not None:
            values = {f"eval_{k}": v for k, v in self.compute(model).items()}
            if metrics is not None:
                metrics.update(values)  # what evaluate() returns
            self._log(control, values)  # what the reporters and trainer_state.json see
        return control


def log_entry(trainer: Any, logs: dict[str, float]) -> None:
    """Log a callback's own entry with ``transformers.Trainer.log`` itself: a subclass that merges the metrics it
    queued for the step into whatever is logged next (TRL's ``SFTTrainer``: ``entropy``, ``mean_token_accuracy``)
    keeps them for the step's own entry instead of losing them to the callback's. Any other trainer: its ``log``."""
    if isinstance(trainer, Trainer):
        Trainer.log(trainer, logs)
    else:
        trainer.log(logs)


def log_eval_metrics(logs: dict[str, float], state, trainer=None) -> None:
    """Log metrics an ``on_evaluate`` callback computed: through ``trainer`` (:func:`log_entry`) when given (every
    reporter and ``state.log_history`` get them), else merged into the evaluation's entry of ``state.log_history``."""
    if trainer is not None:
        log_entry(trainer, logs)
        return
    last = state.log_history[-1] if state.log_history else None
    if (
        last is not None
        and last.get("step") == state.global_step
        and any(k.startswith("eval_") for k in last)
    ):
        last.update(logs)
    else:
        state.log_history.append({**logs, "step": state.global_step})

"""Causal-LM objective: ``loss = lm_loss + matrix_loss_weight * matrix_loss`` (DESIGN.md, "The LM matrix loss").

One forward pass: the LM loss is the parent Trainer's (``num_items_in_batch``-normalised token CE); the token
representations of ``matrix_layer`` are captured during that same pass by a hook
(:func:`matrix_llm.features.capture_hidden`); the completion positions after the causal shift go to
:class:`matrix_llm.losses.TokenMCELoss` (formulation ``head``, ``relation`` or ``alignment``, MATH.md §4).
The three formulations are matrix_llm's documented derivations: the authors' LLM code is unreleased.

Logged per micro-batch: ``matrix_loss`` (the unweighted MCE), ``matrix_entropy`` and ``effective_rank`` (von
Neumann entropy of the trace-normalised cosine Gram of the token representations, and its exp, via
:func:`matrix_llm.info.feature_entropy`; the same quantity whether or not a matrix loss is trained, so CE and
MCE runs compare directly). They cost an eigendecomposition of their own, so in training they are computed
only every ``metrics_steps`` optimizer steps, whatever the loss type (always in evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .. import features
from ..losses.token import TokenMCELoss
from .base import ObjectiveOutput

__all__ = ["LMObjective"]

LOSS_TYPES = ("none", "head", "relation", "alignment")


class LMObjective:
    """The LM objective (see module docstring).

    Args:
        loss_type: ``"none"`` (plain LM loss, diagnostics only), ``"head"``, ``"relation"`` or ``"alignment"``.
        weight: ``matrix_loss_weight`` (``>= 0``).
        layer: ``matrix_layer`` (``-1`` = the LM-head input; see :func:`matrix_llm.features.capture_hidden`).
        mu, log, order, max_tokens, scope, seed: passed to :class:`~matrix_llm.losses.TokenMCELoss`.
        metrics_steps: in training, compute the diagnostics every this many optimizer steps
            (``0``: never).
    """

    name = "lm"

    def __init__(
        self,
        *,
        loss_type: str = "head",
        weight: float = 0.1,
        layer: int = -1,
        mu: float | None = None,
        log: str = "eigh",
        order: int = 4,
        max_tokens: int | None = None,
        scope: str = "local",
        seed: int | None = None,
        metrics_steps: int = 1,
    ) -> None:
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"LMObjective: `loss_type` must be one of {LOSS_TYPES}; got {loss_type!r}")
        if not weight >= 0:
            raise ValueError(f"LMObjective: `weight` must be >= 0; got {weight!r}")
        if metrics_steps < 0:
            raise ValueError(f"LMObjective: `metrics_steps` must be >= 0; got {metrics_steps!r}")
        self.loss_type = loss_type
        self.weight = float(weight)
        self.layer = int(layer)
        self.scope = scope
        self.metrics_steps = int(metrics_steps)
        self.matrix_loss: nn.Module | None = None
        if loss_type != "none":
            self.matrix_loss = TokenMCELoss(
                formulation=loss_type,
                mu=mu,
                log=log,
                order=order,
                max_tokens=max_tokens,
                scope=scope,
                seed=seed,
                diagnostics=False,  # the objective computes its own, every `metrics_steps`
            )

    @classmethod
    def from_args(cls, args: Any) -> LMObjective:
        """Build from :class:`~matrix_llm.config.MatrixTrainingArguments` (or anything with its fields)."""
        return cls(
            loss_type=args.matrix_loss_type,
            weight=args.matrix_loss_weight,
            layer=args.matrix_layer,
            mu=args.matrix_mu,
            log=args.matrix_log,
            order=args.matrix_taylor_order,
            max_tokens=args.matrix_max_tokens,
            scope=args.matrix_scope,
            # `matrix_max_tokens` sub-sampling: with scope local, the global torch RNG (checkpointed by the
            # Trainer, so a resumed run draws the same subsets); with scope global, a private generator seeded
            # identically on every rank (all ranks must pick the same tokens; not restored on resume)
            seed=args.seed if args.matrix_scope == "global" else None,
            metrics_steps=args.effective_matrix_metrics_steps,
        )

    @property
    def metric_names(self) -> tuple[str, ...]:
        names = ("matrix_entropy", "effective_rank")
        return (("matrix_loss",) + names) if self.matrix_loss is not None else names

    def _diagnostics_due(self, step: int | None) -> bool:
        if step is None:
            return True
        return self.metrics_steps > 0 and step % self.metrics_steps == 0

    def __call__(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        *,
        base_loss: Callable[[nn.Module, dict[str, Any]], tuple[Tensor, Any]],
        step: int | None = None,
    ) -> ObjectiveOutput:
        """One micro-batch. ``step``: the optimizer step in training (``None`` in evaluation)."""
        if "labels" not in inputs:
            raise ValueError(
                "LMObjective: the batch has no `labels` (completion-only labels, -100 elsewhere)"
            )
        labels = inputs["labels"]
        with features.capture_hidden(model, self.layer) as captured:
            lm_loss, outputs = base_loss(model, inputs)
        nan = torch.tensor(math.nan, device=lm_loss.device)
        metrics = dict.fromkeys(self.metric_names, nan)
        batch_loss = None
        if captured.hidden is None:
            raise RuntimeError(
                f"LMObjective: the hook on matrix_layer={self.layer} captured nothing; the model's forward did "
                "not call that module"
            )
        needs_logits = self.loss_type in ("relation", "alignment")
        logits = getattr(outputs, "logits", None) if needs_logits else None
        if needs_logits and logits is None:
            raise ValueError(
                f"LMObjective: matrix_loss_type={self.loss_type!r} needs the logits, but the model returned none"
            )
        tokens = features.token_features(captured.hidden, labels, logits)
        if self.matrix_loss is not None:
            # before the token-count test: under ZeRO-3 fetching the head weight is a collective that every
            # rank must join in every step, even a rank whose micro-batch has fewer than 2 completion tokens
            weight = features.head_weight(model, requires_grad=self.loss_type == "alignment")
        if self.matrix_loss is not None and (self.scope == "global" or tokens.targets.shape[0] >= 2):
            out = self.matrix_loss(tokens.hidden, tokens.targets, weight, tokens.logits)
            batch_loss = self.weight * out.total.to(lm_loss.dtype)
            metrics["matrix_loss"] = out.parts["mce"].detach().float()
        if self._diagnostics_due(step) and tokens.hidden.shape[0] >= 1:
            ent, erank = features.no_grad_entropy_erank(tokens.hidden)
            metrics["matrix_entropy"] = ent.float()
            metrics["effective_rank"] = erank.float()
        return ObjectiveOutput(
            token_loss=lm_loss,
            batch_loss=batch_loss,
            metrics=metrics,
            outputs=outputs,
            token_loss_name="lm_loss",
        )

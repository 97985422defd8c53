"""Causal-LM objective: ``loss = lm_loss + matrix_loss_weight * matrix_loss`` (DESIGN.md, "The LM matrix loss").

One forward pass: the LM loss is the parent Trainer's (``num_items_in_batch``-normalised token CE); the token
representations of ``matrix_layer`` are captured during that same pass by a hook
(:func:`matrix_llm.features.capture_hidden`); the completion positions after the causal shift go to
:class:`matrix_llm.losses.TokenMCELoss` (formulation ``head``, ``relation`` or ``alignment``, docs/formulations.md).
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

from matrix_llm import features
from matrix_llm.features import diagnostics
from matrix_llm.losses.token import FORMULATIONS, TokenMCELoss
from matrix_llm.modes.base import Objective, ObjectiveCard, ObjectiveOutput

__all__ = ["LOSS_TYPES", "LMObjective"]

LOSS_TYPES = ("none", *FORMULATIONS)

# what each choice of `matrix_loss_type` trains, for model cards (written out: a card is read on the Hub;
# docs/formulations.md has the derivations)
DESCRIPTIONS = {
    "head": "`MCE(target, prediction) = -tr(target log prediction) + tr(prediction)` between the trace-normalised "
    "cosine Gram (+ 0.01 I) of the final hidden states of the completion tokens and that of their target tokens' "
    "LM-head rows",
    "relation": "`MCE(target, prediction)` between the trace-normalised cosine Gram (+ 0.01 I) of the predicted "
    "next-token distributions and the Gram of the one-hot targets",
    "alignment": "`MCE(target, prediction)` between the covariances (+ 0.5 I) of the expected embeddings `Wᵀ p` and "
    "of the target tokens' LM-head rows `W[y]` (Matrix-SSL's alignment term)",
    "none": "no matrix loss (plain cross-entropy baseline); matrix entropy and effective rank only logged",
}


class LMObjective(Objective):
    """The LM objective (see module docstring).

    Args:
        loss_type: ``"none"`` (plain LM loss, diagnostics only), ``"head"``, ``"relation"`` or ``"alignment"``.
        loss_weight: ``matrix_loss_weight`` (``>= 0``; ``0`` skips the matrix term entirely, as ``"none"``).
        layer: ``matrix_layer`` (``-1`` = the LM-head input; see :func:`matrix_llm.features.capture_hidden`).
        mu, log, taylor_order (the loss's ``order``), max_tokens, scope, seed: passed to
            :class:`~matrix_llm.losses.TokenMCELoss`.
        metrics_steps: in training, compute the diagnostics every this many optimizer steps
            (``0``: never).
    """

    name = "lm"
    config_name = "LMConfig"
    plot_panels = (
        ("LM loss", "lm_loss"),
        ("matrix loss", "matrix_loss"),
        ("total loss", "loss"),
        ("matrix entropy", "matrix_entropy"),
        ("effective rank", "effective_rank"),
        ("GSM8K strict-match", "gsm8k_strict"),
    )

    def __init__(
        self,
        *,
        loss_type: str = "head",
        loss_weight: float = 0.1,
        layer: int = -1,
        mu: float | None = None,
        log: str = "eigh",
        taylor_order: int = 4,
        max_tokens: int | None = None,
        scope: str = "local",
        seed: int | None = None,
        metrics_steps: int = 1,
    ) -> None:
        problems = self.argument_problems(
            loss_type=loss_type,
            loss_weight=loss_weight,
            layer=layer,
            mu=mu,
            log=log,
            taylor_order=taylor_order,
            max_tokens=max_tokens,
            scope=scope,
            seed=seed,
            metrics_steps=metrics_steps,
        )
        if problems:
            name, expected, got = problems[0]
            raise ValueError(f"LMObjective: `{name}` must be {expected}; got {got!r}")
        self.loss_type = loss_type
        self.weight = float(loss_weight)
        self.layer = int(layer)
        self.scope = scope
        self.metrics_steps = int(metrics_steps)
        self.matrix_loss: nn.Module | None = None
        if loss_type != "none" and self.weight > 0:
            self.matrix_loss = TokenMCELoss(
                formulation=loss_type,
                mu=mu,
                log=log,
                order=taylor_order,
                max_tokens=max_tokens,
                scope=scope,
                seed=seed,
                diagnostics=False,  # the objective computes its own, every `metrics_steps`
            )

    @classmethod
    def argument_problems(
        cls,
        *,
        loss_type: str = "head",
        loss_weight: float = 0.1,
        layer: int = -1,
        metrics_steps: int = 1,
        taylor_order: int = 4,
        **loss_kwargs: Any,
    ) -> list[tuple[str, str, Any]]:
        """Every invalid argument as ``(name, expected, got)``, the loss's own included (the one validation of
        these arguments: ``__init__`` and :class:`~matrix_llm.modes.lm.config.LMConfig` use it)."""
        out: list[tuple[str, str, Any]] = []
        if loss_type not in LOSS_TYPES:
            out.append(("loss_type", f"one of {list(LOSS_TYPES)}", loss_type))
        if isinstance(loss_weight, bool) or not isinstance(loss_weight, (int, float)) or not loss_weight >= 0:
            out.append(("loss_weight", "a number >= 0", loss_weight))
        if isinstance(layer, bool) or not isinstance(layer, int):
            out.append(("layer", "an integer", layer))
        if isinstance(metrics_steps, bool) or not isinstance(metrics_steps, int) or metrics_steps < 0:
            out.append(("metrics_steps", "an integer >= 0", metrics_steps))
        if loss_type in FORMULATIONS:
            loss_problems = TokenMCELoss.argument_problems(
                formulation=loss_type, order=taylor_order, **loss_kwargs
            )
            out += [
                ("taylor_order" if name == "order" else name, expected, got)
                for name, expected, got in loss_problems
            ]
        return out

    def card(self, args: Any) -> ObjectiveCard:
        loss_type = self.loss_type if self.matrix_loss is not None else "none"
        objective = (
            "`loss = lm_loss + matrix_loss_weight * matrix_loss`"
            if loss_type != "none"
            else "`loss = lm_loss` (cross-entropy on the completion tokens)"
        )
        return ObjectiveCard(
            summary=objective,
            details=[
                f"Matrix loss: **{loss_type}**: {DESCRIPTIONS[loss_type]}.",
                (
                    "The loss is applied to the completion tokens only (prompt and padding masked, after the causal "
                    "shift)."
                ),
            ],
            settings=args.card_settings(),
            tags=["sft"] + (["matrix-cross-entropy"] if loss_type != "none" else []),
            note=(
                "**Note.** The original authors of matrix cross-entropy for LLMs (Zhang et al., ICML 2024) did "
                "not release their LLM code. The LM formulation used here is matrix_llm's documented derivation "
                "(the formulation above), not the authors' method; report results as \"MCE-augmented SFT "
                f'(formulation `{loss_type}` chosen by matrix_llm, official code unreleased)".'
            ),
            pipeline_tag="text-generation",
            auto_class="AutoModelForCausalLM",
        )

    @property
    def metric_names(self) -> tuple[str, ...]:
        names = ("matrix_entropy", "effective_rank")
        return (("matrix_loss",) + names) if self.matrix_loss is not None else names

    def _per_example(self, tokens: features.TokenFeatures, weight: Tensor) -> Tensor | None:
        """Packed rows: the mean over the packed examples (with >= 2 completion tokens) of each example's own
        matrix loss, never a matrix across example boundaries; ``None`` if no example has 2 tokens."""
        if self.scope == "global":
            raise ValueError(
                "LMObjective: matrix_scope=global cannot be combined with packing (the matrix term of "
                "packed rows is computed per example)"
            )
        losses = []
        for segment in torch.unique(tokens.segments):
            rows = tokens.segments == segment
            if int(rows.sum()) >= 2:
                logits = None if tokens.logits is None else tokens.logits[rows]
                losses.append(
                    self.matrix_loss(tokens.hidden[rows], tokens.targets[rows], weight, logits).total
                )
        return torch.stack(losses).mean() if losses else None

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
        packed = inputs.get("position_ids") if "attention_mask" not in inputs else None
        if packed is not None:
            # padding-free packing: transformers keeps attention inside each example (from the restarting
            # position_ids) only when no KV cache is built, and models build one by default, in training too
            inputs = {**inputs, "use_cache": False}
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
        needs_logits = self.matrix_loss is not None and self.loss_type in ("relation", "alignment")
        logits = getattr(outputs, "logits", None) if needs_logits else None
        if needs_logits and logits is None and self.layer != -1:
            raise ValueError(
                f"LMObjective: matrix_loss_type={self.loss_type!r} needs the logits; the forward returned none "
                f"(TRL's fused LM head does not build them) and matrix_layer={self.layer} is not the LM-head input "
                "they could be computed from: use matrix_layer -1"
            )
        tokens = features.token_features(captured.hidden, labels, logits, position_ids=packed)
        if needs_logits and logits is None:  # the head applied to the completion positions only
            tokens.logits = features.head_logits(model, tokens.hidden)
        if self.matrix_loss is not None:
            # before the token-count test: under ZeRO-3 fetching the head weight is a collective that every
            # rank must join in every step, even a rank whose micro-batch has fewer than 2 completion tokens
            weight = features.head_weight(model, requires_grad=self.loss_type == "alignment")
        if self.matrix_loss is not None and tokens.segments is not None:
            mce = self._per_example(tokens, weight)
            if mce is not None:
                batch_loss = self.weight * mce.to(lm_loss.dtype)
                metrics["matrix_loss"] = mce.detach().float()
        elif self.matrix_loss is not None and (self.scope == "global" or tokens.targets.shape[0] >= 2):
            out = self.matrix_loss(tokens.hidden, tokens.targets, weight, tokens.logits)
            batch_loss = self.weight * out.total.to(lm_loss.dtype)
            metrics["matrix_loss"] = out.parts["mce"].detach().float()
        if self._diagnostics_due(step) and tokens.hidden.shape[0] >= 1:
            ent, erank = diagnostics.entropy_erank(tokens.hidden)
            metrics["matrix_entropy"] = ent.float()
            metrics["effective_rank"] = erank.float()
        return ObjectiveOutput(
            token_loss=lm_loss,
            batch_loss=batch_loss,
            metrics=metrics,
            outputs=outputs,
            token_loss_name="lm_loss",
        )

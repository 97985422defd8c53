"""Supervised (and semi-supervised) classification with matrix regularisers (docs/formulations.md, MIR / HDR):

    loss = CE(labelled rows) + mir_weight * (-MIR) + hdr_weight * HDR - entropy_weight * H(F Fᵀ)

on the features ``F`` the classifier head is applied to (captured in the same forward pass,
:func:`matrix_llm.features.capture_head_input`) and the head's weight rows ``W_y`` of the rows' labels.
Unlabelled rows (``labels == -100``, e.g. outside ``label_fraction``) get no CE; with ``pseudo_labels`` they
take part in the regulariser with the model's own prediction as label (FixMatch-style use of MIR / HDR).

In training, images (``pixel_values``) may pass through ``augment`` first (a
:class:`~matrix_llm.data.augment.TrainingView`: random resized crop and flip, seeded per step); evaluation sees
them as they are.

Logged per micro-batch: ``ce_loss``, ``accuracy`` (on the labelled rows), and every ``metrics_steps`` optimizer
steps (always in evaluation) the neural-collapse diagnostics ``mir``, ``hdr`` (features vs head rows of the
labels), ``matrix_entropy`` / ``effective_rank`` of the features and ``head_entropy`` (of ``W Wᵀ``); at
neural collapse ``mir`` -> ``1/(C-1) + (C-2) log(C-2) / ((C-1) log(C-1))``, ``hdr`` -> 0 and both entropies
-> ``log(C-1)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matrix_llm import features, info
from matrix_llm.data.labels import IGNORE_INDEX
from matrix_llm.features import diagnostics
from matrix_llm.losses.neural_collapse import MIRHDRLoss
from matrix_llm.modes.base import Objective, ObjectiveCard, ObjectiveOutput

__all__ = ["ClassificationObjective"]


class ClassificationObjective(Objective):
    """The classification objective (module docstring).

    Args:
        mir_weight, hdr_weight: weights of ``-MIR`` and ``HDR`` (:class:`~matrix_llm.losses.MIRHDRLoss`), ``>= 0``.
        entropy_weight: weight of ``-H(F Fᵀ)`` (feature matrix entropy pushed up), ``>= 0``.
        pseudo_labels: unlabelled rows join the regulariser with their predicted label.
        metrics_steps: diagnostics every this many optimizer steps in training (``0``: never).
        augment: ``(pixel_values, step) -> pixel_values`` applied to the training batches (``None``: none).
    """

    name = "classification"
    config_name = "ClassificationConfig"
    plot_panels = (
        ("cross-entropy", "ce_loss"),
        ("total loss", "loss"),
        ("accuracy", "accuracy"),
        ("MIR (features vs head rows)", "mir"),
        ("HDR (features vs head rows)", "hdr"),
        ("feature matrix entropy", "matrix_entropy"),
        ("head matrix entropy", "head_entropy"),
        ("effective rank", "effective_rank"),
    )

    def __init__(
        self,
        *,
        mir_weight: float = 0.0,
        hdr_weight: float = 0.0,
        entropy_weight: float = 0.0,
        pseudo_labels: bool = True,
        metrics_steps: int = 1,
        augment: Callable[[Tensor, int], Tensor] | None = None,
    ) -> None:
        problems = self.argument_problems(
            mir_weight=mir_weight,
            hdr_weight=hdr_weight,
            entropy_weight=entropy_weight,
            metrics_steps=metrics_steps,
        )
        if problems:
            name, expected, got = problems[0]
            raise ValueError(f"ClassificationObjective: `{name}` must be {expected}; got {got!r}")
        self.mir_weight, self.hdr_weight = float(mir_weight), float(hdr_weight)
        self.entropy_weight = float(entropy_weight)
        self.pseudo_labels = bool(pseudo_labels)
        self.metrics_steps = int(metrics_steps)
        self.mir_hdr = MIRHDRLoss(alpha=self.mir_weight, beta=self.hdr_weight)
        self.augment = augment

    @staticmethod
    def argument_problems(pseudo_labels: bool = True, **weights: Any) -> list[tuple[str, str, Any]]:
        """Every invalid argument as ``(name, expected, got)`` (used by ``__init__`` and the config)."""
        out = []
        if not isinstance(pseudo_labels, bool):
            out.append(("pseudo_labels", "true or false", pseudo_labels))
        for name, value in weights.items():
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
            if name == "metrics_steps":
                ok = ok and isinstance(value, int)
            if not ok:
                out.append((name, "an integer >= 0" if name == "metrics_steps" else "a number >= 0", value))
        return out

    @property
    def regularised(self) -> bool:
        return self.mir_weight > 0 or self.hdr_weight > 0 or self.entropy_weight > 0

    def card(self, args: Any) -> ObjectiveCard:
        terms = [
            f"{w} * {t}"
            for w, t in (
                (self.mir_weight, "(-MIR)"),
                (self.hdr_weight, "HDR"),
                (self.entropy_weight, "(-H(F Fᵀ))"),
            )
            if w > 0
        ]
        summary = "`loss = CE" + "".join(f" + {t}" for t in terms) + "`"
        return ObjectiveCard(
            summary=summary,
            details=[
                (
                    "MIR / HDR compare the Gram of the features the classifier head sees with the Gram of the head rows "
                    "of their labels (`MIR = MI / min(H1, H2)`, `HDR = |H1 - H2| / max(H1, H2)` with `MI = H1 + H2 - H(K1 ⊙ K2)`); they are logged whatever the weights."
                )
            ],
            settings=args.card_settings(),
            tags=["image-classification", "neural-collapse"],
            pipeline_tag="image-classification",
            auto_class="AutoModelForImageClassification",
            processor_class="AutoImageProcessor",
        )

    def _due(self, step: int | None) -> bool:
        return step is None or (self.metrics_steps > 0 and step % self.metrics_steps == 0)

    def __call__(
        self, model: nn.Module, inputs: dict[str, Any], *, base_loss: Any = None, step: int | None = None
    ) -> ObjectiveOutput:
        if "labels" not in inputs:
            raise ValueError("ClassificationObjective: the batch has no `labels` (-100 for unlabelled rows)")
        labels = inputs["labels"]
        batch = {k: v for k, v in inputs.items() if k != "labels"}  # CE on the labelled rows only, below
        if self.augment is not None and model.training and "pixel_values" in batch:
            batch["pixel_values"] = self.augment(batch["pixel_values"], -1 if step is None else step)
        with features.capture_head_input(model, batch.get("attention_mask")) as captured:
            outputs = model(**batch)
        logits = outputs.logits
        if captured.features is None:
            raise RuntimeError(
                "ClassificationObjective: the classifier head was not called in the forward pass"
            )
        labelled = labels != IGNORE_INDEX
        nan = torch.tensor(math.nan, device=logits.device)
        metrics: dict[str, Tensor] = {"ce_loss": nan, "accuracy": nan}
        if bool(labelled.any()):
            ce = F.cross_entropy(logits[labelled].float(), labels[labelled])
            metrics["ce_loss"] = ce.detach()
            metrics["accuracy"] = (logits[labelled].argmax(-1) == labels[labelled]).float().mean()
        else:  # a micro-batch of unlabelled rows only: no CE, but a graph for the regulariser and DDP
            ce = logits.sum() * 0.0
        loss = ce
        targets = (
            labels if not self.pseudo_labels else torch.where(labelled, labels, logits.argmax(-1).detach())
        )
        use = targets != IGNORE_INDEX
        # under ZeRO-3 the head is partitioned: gathered (every rank, every step), then without gradient
        feats, head = captured.features[use], features.full_weight(captured.head.weight, requires_grad=True)
        diag = self._due(step)
        if self.regularised or diag:
            extra, parts = self._regulariser(feats, head, targets[use], diag)
            loss = loss + extra
            metrics.update(parts)
        return ObjectiveOutput(token_loss=None, batch_loss=loss, metrics=metrics, outputs=outputs)

    def _regulariser(self, feats: Tensor, head: Tensor, targets: Tensor, diag: bool) -> tuple[Tensor, dict]:
        """The weighted matrix terms (a graph when they are trained) and the diagnostics due."""
        nan = torch.tensor(math.nan, device=feats.device)
        parts: dict[str, Tensor] = {"mir": nan, "hdr": nan}  # the same keys on every rank (one gather)
        loss = feats.sum() * 0.0
        if feats.shape[0] >= 2 and int(torch.unique(targets).numel()) >= 2:  # MIR needs two classes
            out = self.mir_hdr(feats, head, targets)
            if self.mir_weight > 0 or self.hdr_weight > 0:
                loss = loss + out.total.to(feats.dtype)
            parts.update(mir=out.parts["mir"].float(), hdr=out.parts["hdr"].float())
        if self.entropy_weight > 0 and feats.shape[0] >= 2:
            loss = loss - self.entropy_weight * info.feature_entropy(feats.float()).to(feats.dtype)
        if diag and feats.shape[0] >= 1:
            ent, erank = diagnostics.entropy_erank(feats)
            parts.update(matrix_entropy=ent.float(), effective_rank=erank.float())
            parts["head_entropy"] = diagnostics.entropy_erank(head)[0].float()
        return loss, parts

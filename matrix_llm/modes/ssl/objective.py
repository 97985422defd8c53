"""Self-supervised vision objectives (one row each in :mod:`matrix_llm.modes.ssl.methods`) on :class:`~matrix_llm.models.ssl.SSLModel`: one framework, one
backbone, data, augmentation and schedule; only the loss changes (docs/formulations.md):

- ``matrix_ssl``: Matrix-SSL (Zhang et al., ICML 2024), :class:`~matrix_llm.losses.MatrixSSLLoss` with the
  presets ``exact`` (eigh, stable gradient) and ``official`` (the original code's Taylor-log loss);
- ``mec``: Maximum Entropy Coding (Liu et al., NeurIPS 2022), :class:`~matrix_llm.losses.MECLoss`;
- ``simclr``: SimCLR's NT-Xent (Chen et al., ICML 2020), :class:`~matrix_llm.losses.NTXentLoss`, no teacher;
- ``barlow_twins``: Barlow Twins (Zbontar et al., ICML 2021), :class:`~matrix_llm.losses.BarlowTwinsLoss`, no
  teacher, no predictor;
- ``mmae``: M-MAE (Tan et al., ICML 2024) on :class:`~matrix_llm.models.ssl.MAEModel`: the Hub
  ``ViTMAEForPreTraining`` reconstruction loss minus ``tcr_weight * TCR`` of the encoder's class tokens
  (:class:`~matrix_llm.losses.TCRLoss`, shift ``d / tcr_mu`` as the code's ``uniformity_mu``), or U-MAE's
  second-order uniformity (``tcr_form: second_order``); ``tcr_weight: 0`` is plain MAE.

All three gather the projections of every process (the official codes do), and the online linear probe adds
its cross-entropy on detached features: it trains the probe only, but its gradients count in the Trainer's
``max_grad_norm`` clipping of the whole model (as in solo-learn, whose classifier shares the optimizer), so a run
with and without labels differs slightly. Logged per micro-batch: the loss parts
(``uniformity`` / ``alignment``, ``mec``, ``positive_accuracy``), ``probe_loss`` / ``probe_accuracy`` with
labels, and every ``metrics_steps`` optimizer steps (always in evaluation) ``matrix_entropy`` /
``effective_rank`` of the backbone features. The EMA teacher is moved after each optimizer step by
:class:`EMATeacherCallback` (cosine momentum ``teacher_momentum`` -> 1 over the run), and ``teacher_momentum``
is logged.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from matrix_llm import features
from matrix_llm.features import diagnostics
from matrix_llm.models.ssl import cosine_momentum
from matrix_llm.modes.base import Objective, ObjectiveCard, ObjectiveOutput
from matrix_llm.modes.ssl.methods import METHODS

__all__ = ["METHODS", "EMATeacherCallback", "SSLObjective"]

TCR_FORMS = ("logdet", "second_order")


class EMATeacherCallback(TrainerCallback):
    """After each optimizer step: ``teacher <- m·teacher + (1-m)·student`` with BYOL's cosine schedule of ``m``
    from ``base`` to 1 over ``state.max_steps``; the value is recorded as ``teacher_momentum``."""

    def __init__(self, trainer: Any, base: float) -> None:
        self.trainer, self.base = trainer, base

    def on_step_end(self, args, state, control, model=None, **kwargs):
        momentum = cosine_momentum(state.global_step, state.max_steps, self.base)
        features.unwrap(model if model is not None else self.trainer.model).update_teacher(momentum)
        self.trainer.record_metrics({"teacher_momentum": momentum}, mode="train")
        return control


class SSLObjective(Objective):
    """The self-supervised objective (module docstring).

    Args:
        method: a row of :data:`~matrix_llm.modes.ssl.methods.METHODS` (``matrix_ssl``, ``mec``, ``simclr``,
            ``barlow_twins``, ``mmae``), which names its loss, its inputs and whether it has a teacher.
        preset, gamma, lamb, mu, order: :class:`~matrix_llm.losses.MatrixSSLLoss` (``matrix_ssl``).
        eps_sq: :class:`~matrix_llm.losses.MECLoss`'s distortion (``mec``).
        temperature: NT-Xent's temperature (``simclr``).
        barlow_lambda: Barlow Twins' off-diagonal weight (``barlow_twins``; the paper's 5e-3).
        tcr_weight, tcr_mu, tcr_form: M-MAE's ``λ``, the code's ``uniformity_mu`` and ``"logdet"`` /
            ``"second_order"`` (U-MAE) (``mmae``).
        teacher_momentum: base EMA momentum of the teacher (``matrix_ssl``, ``mec``).
        metrics_steps: feature entropy / effective rank every this many optimizer steps (``0``: evaluation only).
    """

    name = "ssl"
    config_name = "SSLConfig"
    plot_panels = (
        ("total loss", "loss"),
        *(panel for m in METHODS.values() for panel in m.panels),
        ("online probe accuracy", "probe_accuracy"),
        ("feature matrix entropy", "matrix_entropy"),
        ("effective rank", "effective_rank"),
        ("teacher momentum", "teacher_momentum"),
    )

    def __init__(
        self,
        *,
        method: str = "matrix_ssl",
        preset: str = "exact",
        gamma: float = 1.0,
        lamb: float = 0.5,
        mu: float = 0.5,
        order: int = 4,
        eps_sq: float = 64.0,
        temperature: float = 0.2,
        barlow_lambda: float = 5e-3,
        tcr_weight: float = 0.01,
        tcr_mu: float = 3.0,
        tcr_form: str = "logdet",
        teacher_momentum: float = 0.996,
        metrics_steps: int = 1,
    ) -> None:
        problems = self.argument_problems(
            method=method,
            teacher_momentum=teacher_momentum,
            metrics_steps=metrics_steps,
            tcr_form=tcr_form,
            tcr_mu=tcr_mu,
        )
        if problems:
            name, expected, got = problems[0]
            raise ValueError(f"SSLObjective: `{name}` must be {expected}; got {got!r}")
        self.method, self.teacher_momentum, self.metrics_steps = (
            method,
            float(teacher_momentum),
            int(metrics_steps),
        )
        self.spec = METHODS[method]
        self.tcr_mu = float(tcr_mu)
        self.loss = self.spec.loss(
            SimpleNamespace(
                preset=preset,
                gamma=gamma,
                lamb=lamb,
                mu=mu,
                order=order,
                eps_sq=eps_sq,
                temperature=temperature,
                barlow_lambda=barlow_lambda,
                tcr_weight=tcr_weight,
                tcr_form=tcr_form,
            )
        )

    @property
    def uses_teacher(self) -> bool:
        return self.spec.teacher

    @staticmethod
    def argument_problems(**values: Any) -> list[tuple[str, str, Any]]:
        """Every invalid argument as ``(name, expected, got)`` (``__init__`` and the config)."""
        out = []
        if "method" in values and values["method"] not in METHODS:
            out.append(("method", f"one of {list(METHODS)}", values["method"]))
        momentum = values.get("teacher_momentum", 0.5)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
            out.append(("teacher_momentum", "a number in [0, 1]", momentum))
        if values.get("tcr_form", "logdet") not in TCR_FORMS:
            out.append(("tcr_form", f"one of {list(TCR_FORMS)}", values["tcr_form"]))
        tcr_mu = values.get("tcr_mu", 1.0)
        if isinstance(tcr_mu, bool) or not isinstance(tcr_mu, (int, float)) or not tcr_mu > 0:
            out.append(("tcr_mu", "a number > 0", tcr_mu))
        steps = values.get("metrics_steps", 1)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            out.append(("metrics_steps", "an integer >= 0", steps))
        return out

    def callbacks(self, trainer: Any) -> list[Any]:
        return [EMATeacherCallback(trainer, self.teacher_momentum)] if self.uses_teacher else []

    def card(self, args: Any) -> ObjectiveCard:
        loss = self.spec.card(args)
        return ObjectiveCard(
            summary=f"Self-supervised: {loss}, on two augmented views (BYOL's asymmetric recipe).",
            details=[
                (
                    "The backbone alone is in `backbone/` (load it with `AutoModel` and its `AutoImageProcessor`); "
                    "the run's own checkpoint also holds the projector, predictor, teacher and online probe."
                )
            ],
            settings=args.card_settings(),
            tags=["self-supervised", "image-feature-extraction", self.method.replace("_", "-")],
            pipeline_tag="image-feature-extraction",
            auto_class="AutoModel",
            processor_class="AutoImageProcessor",
        )

    def __call__(
        self, model: Any, inputs: dict[str, Any], *, base_loss: Any = None, step: int | None = None
    ) -> ObjectiveOutput:
        if "pixel_values" not in inputs:
            raise ValueError(f"SSLObjective: the batch has no `pixel_values`; it has {sorted(inputs)}")
        labels = inputs.get("labels")
        # evaluation draws the same views every time (step -1); training draws new ones per step
        out = model(
            pixel_values=inputs["pixel_values"], labels=labels, augment_step=-1 if step is None else step
        )
        if self.spec.inputs == "mae":
            if not hasattr(out, "reconstruction_loss"):
                raise ValueError("SSLObjective: method 'mmae' needs an MAEModel (a ViTMAEForPreTraining)")
            if not self.loss.second_order:
                self.loss.mu = out.features.shape[-1] / self.tcr_mu
            parts = self.loss(out.features)
            loss = out.reconstruction_loss + parts.total
            metrics = {"reconstruction_loss": out.reconstruction_loss.detach().float()}
            metrics.update(
                {("uniformity_sq" if k == "uniformity" else k): v.float() for k, v in parts.parts.items()}
            )
        else:
            if self.spec.inputs == "views":
                parts = self.loss(out.z1, out.z2)
            elif out.p1 is None:
                raise ValueError(
                    f"SSLObjective: method {self.method!r} needs the model's EMA teacher (teacher=True)"
                )
            else:
                parts = self.loss(out.z1, out.z2, out.p1, out.p2)
            loss = parts.total
            metrics = {k: v.float() for k, v in parts.parts.items()}
        nan = torch.tensor(math.nan, device=loss.device)
        if out.probe_logits is not None:
            labelled = labels != -100
            probe = (
                F.cross_entropy(out.probe_logits[labelled].float(), labels[labelled])
                if labelled.any()
                else nan
            )
            if labelled.any():
                loss = loss + probe
            metrics["probe_loss"] = probe.detach()
            hits = (out.probe_logits[labelled].argmax(-1) == labels[labelled]).float()
            metrics["probe_accuracy"] = hits.mean() if labelled.any() else nan
        if step is None or (self.metrics_steps > 0 and step % self.metrics_steps == 0):
            metrics["matrix_entropy"], metrics["effective_rank"] = diagnostics.entropy_erank(out.features)
        return ObjectiveOutput(
            token_loss=None, batch_loss=loss, metrics=metrics, outputs=None, token_loss_name="ssl_loss"
        )

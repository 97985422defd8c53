"""The self-supervised methods, one row each: the one place that says what a method is. The objective builds its
loss and calls it with the inputs the row names, the command builds the network the row asks for (an EMA teacher,
a predictor, or a masked autoencoder), the config takes its choices from :data:`METHODS`, and the ZeRO-3 / FSDP
refusal and the model card read the row. Adding a method: its loss in :mod:`matrix_llm.losses`, one row here, its fields
in :mod:`matrix_llm.modes.ssl.config`.

Inputs:

- ``"student_teacher"``: ``loss(z1, z2, p1, p2)``, the student's predictions and the EMA teacher's projections of
  the two views (Matrix-SSL, MEC);
- ``"views"``: ``loss(z1, z2)``, the projections of the two views (SimCLR, Barlow Twins);
- ``"mae"``: ``reconstruction_loss + loss(class tokens)`` of a masked autoencoder (M-MAE, U-MAE).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from matrix_llm.losses import BarlowTwinsLoss, MatrixSSLLoss, MECLoss, NTXentLoss, TCRLoss

__all__ = ["INPUTS", "METHODS", "Method"]

INPUTS = ("student_teacher", "views", "mae")


@dataclass(frozen=True)
class Method:
    """One self-supervised method (module docstring).

    Attributes:
        name: the value of ``ssl_method``.
        inputs: what its loss takes (:data:`INPUTS`).
        teacher: the network keeps an EMA teacher of backbone + projector (refused under ZeRO-3 and FSDP).
        predictor: the student's projections go through the predictor head.
        loss: the loss, built from the objective's settings (a namespace of its keyword arguments).
        card: the model card's one-line description, from the run's config.
        panels: ``(title, metric key)`` of the curves ``matrix-llm plot`` draws for it.
    """

    name: str
    inputs: str
    teacher: bool
    predictor: bool
    loss: Callable[[Any], nn.Module]
    card: Callable[[Any], str]
    panels: tuple[tuple[str, str], ...]


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "matrix_ssl",
            "student_teacher",
            teacher=True,
            predictor=True,
            loss=lambda s: MatrixSSLLoss(
                preset=s.preset,
                gamma=s.gamma,
                lamb=s.lamb,
                mu=s.mu,
                order=s.order,
                gather=True,
                check=s.preset == "exact",
            ),
            card=lambda a: (
                f"Matrix-SSL (`{getattr(a, 'ssl_preset', 'exact')}` preset): matrix uniformity + "
                f"{getattr(a, 'ssl_gamma', 1.0)} * matrix alignment, student vs EMA teacher"
            ),
            panels=(("Matrix-SSL uniformity", "uniformity"), ("Matrix-SSL alignment", "alignment")),
        ),
        Method(
            "mec",
            "student_teacher",
            teacher=True,
            predictor=True,
            loss=lambda s: MECLoss(eps_sq=s.eps_sq, gather=True),
            card=lambda a: "Maximum Entropy Coding (student vs EMA teacher)",
            panels=(("MEC coding length", "mec"),),
        ),
        Method(
            "simclr",
            "views",
            teacher=False,
            predictor=False,
            loss=lambda s: NTXentLoss(temperature=s.temperature, gather=True),
            card=lambda a: "SimCLR's NT-Xent",
            panels=(("SimCLR positive accuracy", "positive_accuracy"),),
        ),
        Method(
            "barlow_twins",
            "views",
            teacher=False,
            predictor=False,
            loss=lambda s: BarlowTwinsLoss(lamb=s.barlow_lambda, gather=True),
            card=lambda a: (
                f"Barlow Twins: the views' cross-correlation pushed to the identity (off-diagonal weight "
                f"{getattr(a, 'ssl_barlow_lambda', 5e-3)})"
            ),
            panels=(
                ("Barlow Twins on-diagonal", "on_diagonal"),
                ("Barlow Twins off-diagonal", "off_diagonal"),
            ),
        ),
        Method(
            "mmae",
            "mae",
            teacher=False,
            predictor=False,
            # the shift d / tcr_mu is set at the first call, when d is known
            loss=lambda s: TCRLoss(
                weight=s.tcr_weight, gather=True, second_order=s.tcr_form == "second_order"
            ),
            card=lambda a: "M-MAE: the masked-autoencoder reconstruction loss minus a total-coding-rate term",
            panels=(
                ("MAE reconstruction loss", "reconstruction_loss"),
                ("TCR of the encoder features (M-MAE)", "tcr"),
                ("U-MAE uniformity", "uniformity_sq"),
            ),
        ),
    )
}

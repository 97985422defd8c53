"""The self-supervised vision mode's configuration (``objective: ssl``, command ``matrix-llm ssl``), beside its
objective (:mod:`matrix_llm.modes.ssl.objective`).

- :class:`SSLModelArguments`: a Hub / local vision backbone (``AutoModel``) or an offline random-init
  ``tiny-vit`` / ``tiny-resnet``; pooling; projector / predictor sizes.
- :class:`SSLDataArguments`: ``digits`` (the embedded default), an IDX folder such as
  ``../shared/data/fashion-mnist``, or a Hub / local image dataset (``image_column``, optional ``label_column``
  for the online probe and the evaluation); image size and channels.
- :class:`SSLConfig`: :class:`~matrix_llm.config.MatrixTrainingArguments` plus the method and its loss settings,
  checked by the objective under the field names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from matrix_llm.config import (
    ImageDataArguments,
    MatrixTrainingArguments,
    ModelArguments,
)
from matrix_llm.features.pooled import POOLINGS
from matrix_llm.modes.ssl.objective import METHODS, SSLObjective
from matrix_llm.parsing import problem

__all__ = ["TINY_BACKBONES", "SSLConfig", "SSLDataArguments", "SSLModelArguments"]

TINY_BACKBONES = ("tiny-vit", "tiny-resnet")


@dataclass
class SSLModelArguments(ModelArguments):
    """The backbone (``AutoModel`` of a Hub id or local directory, or ``tiny-vit`` / ``tiny-resnet`` built from a
    config, offline) and the heads of the Matrix-SSL code."""

    supports_peft: ClassVar[bool] = False

    init_from_config: bool = field(
        default=False,
        metadata={
            "help": "Hub backbones: build the architecture from its config at random init (pre-training "
            "from scratch) instead of loading its weights; the image processor still comes from the Hub."
        },
    )
    pooling: str | None = field(
        default=None,
        metadata={"help": "cls, mean or pooler (null: pooler for convolutional backbones, cls otherwise)."},
    )
    projector_hidden: int = field(default=2048, metadata={"help": "Projector hidden width (official: 2048)."})
    projector_dim: int = field(default=2048, metadata={"help": "Projector output size (official: 2048)."})
    predictor_hidden: int = field(
        default=512, metadata={"help": "Predictor hidden width (official: 512; 0: no predictor)."}
    )

    @property
    def is_tiny(self) -> bool:
        return self.model_name_or_path in TINY_BACKBONES

    def problems(self) -> list[str]:
        out = super().problems()
        if self.pooling is not None and self.pooling not in POOLINGS:
            out.append(problem("pooling", f"one of {list(POOLINGS)} or null", self.pooling))
        for name in ("projector_hidden", "projector_dim"):
            if getattr(self, name) < 1:
                out.append(problem(name, "a positive integer", getattr(self, name)))
        if self.predictor_hidden < 0:
            out.append(problem("predictor_hidden", "an integer >= 0", self.predictor_hidden))
        return out


@dataclass
class SSLDataArguments(ImageDataArguments):
    """The images (labels optional: they feed only the online probe and the evaluation)."""

    dataset_name: str = field(
        default="digits",
        metadata={
            "help": "`digits` (scikit-learn, offline), an IDX folder (e.g. ../shared/data/fashion-mnist), or a "
            "Hub id / local dataset (imagefolder)."
        },
    )
    image_column: str = field(default="image", metadata={"help": "Image column."})
    label_column: str | None = field(
        default="label", metadata={"help": "Label column for the probes (null: unlabelled data, no probe)."}
    )
    image_size: int = field(
        default=16, metadata={"help": "Side of the augmented views (tiny backbones: also the input size)."}
    )
    num_channels: int = field(
        default=1, metadata={"help": "Tiny backbones: 1 (grey) or 3 (RGB) input channels."}
    )
    crop_min_scale: float = field(
        default=0.2, metadata={"help": "Smallest share of the image a random crop keeps."}
    )
    jitter_strength: float = field(
        default=1.0,
        metadata={"help": "Colour-jitter strength s (SimCLR): BYOL's amounts times s; 0: no jitter."},
    )
    probe_max_train_samples: int = field(
        default=10_000,
        metadata={
            "help": "Most training images the end-of-run raw-pixel probe baseline fits on (past it: a seeded "
            "class-balanced subset, said in results.json / report.md); the frozen-feature probes and kNN use "
            "every training image."
        },
    )

    def problems(self) -> list[str]:
        out = super().problems()
        if self.image_size < 4:
            out.append(problem("image_size", "an integer >= 4", self.image_size))
        if self.num_channels not in (1, 3):
            out.append(problem("num_channels", "1 or 3", self.num_channels))
        if not 0.0 < self.crop_min_scale <= 1.0:
            out.append(problem("crop_min_scale", "a number in (0, 1]", self.crop_min_scale))
        if self.jitter_strength < 0:
            out.append(problem("jitter_strength", "a number >= 0", self.jitter_strength))
        if self.probe_max_train_samples < 1:
            out.append(problem("probe_max_train_samples", "a positive integer", self.probe_max_train_samples))
        return out


@dataclass
class SSLConfig(MatrixTrainingArguments):
    """``MatrixTrainingArguments`` plus the self-supervised method and its loss settings (docs/formulations.md)."""

    field_prefix: ClassVar[str] = "ssl_"

    objective: str = field(
        default="ssl", metadata={"help": "The training objective; `ssl` for this command."}
    )
    ssl_method: str = field(
        default="matrix_ssl",
        metadata={
            "help": f"The loss: one of {list(METHODS)}.",
            "choices": list(METHODS),
        },
    )
    ssl_preset: str = field(
        default="exact",
        metadata={
            "help": "matrix_ssl: `exact` (eigh, stable gradient) or `official` (the original Taylor-log loss).",
            "choices": ["exact", "official"],
        },
    )
    ssl_gamma: float = field(
        default=1.0,
        metadata={"help": "matrix_ssl: alignment weight γ (0: uniformity only)."},
    )
    ssl_lamb: float = field(
        default=0.5,
        metadata={"help": "matrix_ssl: uniformity target scale λ (code default 0.5)."},
    )
    ssl_mu: float = field(
        default=0.5,
        metadata={"help": "matrix_ssl: covariance shift μ (code default 0.5)."},
    )
    ssl_order: int = field(default=4, metadata={"help": "matrix_ssl official: Taylor order."})
    ssl_eps_sq: float = field(default=64.0, metadata={"help": "mec: distortion ε² (code default 64)."})
    ssl_temperature: float = field(default=0.2, metadata={"help": "simclr: NT-Xent temperature."})
    ssl_barlow_lambda: float = field(
        default=5e-3,
        metadata={
            "help": "barlow_twins: weight λ of the off-diagonal (redundancy) term (paper: 5e-3).",
        },
    )
    ssl_tcr_weight: float = field(
        default=0.01,
        metadata={
            "help": "mmae: weight λ of -TCR (0: MAE). The single-process gradient on any number of processes: "
            "the official code's lamb on W processes is ssl_tcr_weight = lamb / W (docs/formulations.md).",
        },
    )
    ssl_tcr_mu: float = field(
        default=3.0,
        metadata={
            "help": "mmae: the M-MAE code's uniformity_mu (TCR shift d / ssl_tcr_mu; README: 3).",
        },
    )
    ssl_tcr_form: str = field(
        default="logdet",
        metadata={
            "help": "mmae: `logdet` (TCR) or `second_order` (U-MAE's mean squared similarity).",
            "choices": ["logdet", "second_order"],
        },
    )
    ssl_teacher_momentum: float = field(
        default=0.996,
        metadata={
            "aliases": ["--teacher_momentum"],
            "help": "EMA teacher momentum at step 0, raised to 1 on a cosine (BYOL).",
        },
    )

    def problems(self) -> list[str]:
        return super().problems() + self.objective_problems("ssl", SSLObjective.argument_problems)

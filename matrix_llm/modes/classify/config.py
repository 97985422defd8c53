"""The classification mode's configuration (``objective: classification``, command ``matrix-llm classify``),
beside its objective (:mod:`matrix_llm.modes.classify.objective`).

- :class:`ClassificationModelArguments`: a Hub / local ``AutoModelForImageClassification`` or (with a
  ``text_column``) ``AutoModelForSequenceClassification``, or an offline random-init ``tiny-vit`` /
  ``tiny-resnet`` / ``tiny-bert`` (the ``tiny_*`` fields).
- :class:`ClassificationDataArguments`: ``digits`` (scikit-learn, the embedded default), an IDX folder such as
  ``../shared/data/fashion-mnist``, or a Hub / local dataset with ``image`` / ``label`` columns, or texts
  (``text_column``, ``label_column``); the labelled fraction.
- :class:`ClassificationConfig`: :class:`~matrix_llm.config.MatrixTrainingArguments` plus the regulariser weights,
  checked by :meth:`ClassificationObjective.argument_problems` under the field names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from matrix_llm.config import (
    ImageDataArguments,
    MatrixTrainingArguments,
    ModelArguments,
)
from matrix_llm.modes.classify.objective import ClassificationObjective
from matrix_llm.parsing import problem

__all__ = [
    "TINY_CLASSIFIERS",
    "TINY_TEXT_CLASSIFIERS",
    "ClassificationConfig",
    "ClassificationDataArguments",
    "ClassificationModelArguments",
]

TINY_CLASSIFIERS = ("tiny-vit", "tiny-resnet", "tiny-bert")
TINY_TEXT_CLASSIFIERS = ("tiny-bert",)


@dataclass
class ClassificationModelArguments(ModelArguments):
    """The classifier: a Hub id or local directory (``AutoModelForImageClassification``, or
    ``AutoModelForSequenceClassification`` for texts; the head resized to the data's classes), or ``tiny-vit`` /
    ``tiny-resnet`` / ``tiny-bert``: a random-init ViT / ResNet / BERT (with a tokenizer trained on the training
    texts) built from a config (offline; the ``tiny_*`` fields)."""

    supports_peft: ClassVar[bool] = False

    tiny_dropout: float | None = field(
        default=None,
        metadata={
            "help": "tiny-bert: dropout of its hidden states and attention probabilities (null: BERT's 0.1; 0 = "
            "none, so the training-mode forward is the eval-mode one)."
        },
    )

    @property
    def is_tiny(self) -> bool:
        return self.model_name_or_path in TINY_CLASSIFIERS

    def problems(self) -> list[str]:
        out = super().problems()
        if self.tiny_dropout is not None and not 0.0 <= self.tiny_dropout < 1.0:
            out.append(problem("tiny_dropout", "a float in [0, 1)", self.tiny_dropout))
        return out


@dataclass
class ClassificationDataArguments(ImageDataArguments):
    """The images (or texts), how many of their labels training sees, and the training images' augmentation."""

    dataset_name: str = field(
        default="digits",
        metadata={
            "help": "`digits` (scikit-learn's 8x8 digits, offline), an IDX folder (e.g. ../shared/data/fashion-mnist), "
            "or a Hub id / local dataset (imagefolder) with image and label columns."
        },
    )
    text_column: str | None = field(
        default=None,
        metadata={"help": "Texts: the column to classify (a text classifier then; null: images)."},
    )
    label_column: str = field(default="label", metadata={"help": "Texts: the label column (integers)."})
    max_length: int = field(
        default=128, metadata={"help": "Texts: tokens per example (longer ones are cut, counted)."}
    )
    image_size: int = field(default=16, metadata={"help": "Tiny models: images are resized to this size."})
    num_channels: int = field(
        default=1, metadata={"help": "Tiny models: 1 (grey) or 3 (RGB) input channels."}
    )
    label_fraction: float = field(
        default=1.0,
        metadata={
            "help": "Fraction of the training labels kept (class-balanced, seeded by label_seed); the other rows "
            "are unlabelled (no CE; in the regulariser with pseudo-labels when matrix_pseudo_labels)."
        },
    )
    label_seed: int = field(default=0, metadata={"help": "Seed of the labelled subset."})
    labelled_per_batch: int = field(
        default=0,
        metadata={
            "help": "With label_fraction < 1: every training batch holds this many labelled rows (reused in turn), "
            "the rest unlabelled; an epoch is one pass over the unlabelled rows. 0: batches drawn uniformly."
        },
    )

    crop_min_scale: float = field(
        default=1.0,
        metadata={
            "help": "Images, training only: a random resized crop of this share of the area to all of it, back to "
            "the image's size (torchvision's RandomResizedCrop; 1: none)."
        },
    )
    horizontal_flip: bool = field(
        default=False,
        metadata={"help": "Images, training only: flip each image left-right with probability 0.5."},
    )

    @property
    def augmented(self) -> bool:
        return self.crop_min_scale < 1.0 or self.horizontal_flip

    def problems(self) -> list[str]:
        out = super().problems()
        if not 0.0 < self.crop_min_scale <= 1.0:
            out.append(problem("crop_min_scale", "a number in (0, 1] (1: no crop)", self.crop_min_scale))
        if not 0.0 < self.label_fraction <= 1.0:
            out.append(problem("label_fraction", "a number in (0, 1]", self.label_fraction))
        if self.labelled_per_batch < 0:
            out.append(problem("labelled_per_batch", "an integer >= 0", self.labelled_per_batch))
        if self.image_size < 4:
            out.append(problem("image_size", "an integer >= 4", self.image_size))
        if self.max_length < 2:
            out.append(problem("max_length", "an integer >= 2", self.max_length))
        if self.num_channels not in (1, 3):
            out.append(problem("num_channels", "1 or 3", self.num_channels))
        return out


@dataclass
class ClassificationConfig(MatrixTrainingArguments):
    """``MatrixTrainingArguments`` plus the matrix regularisers of classification (docs/formulations.md, MIR/HDR):
    ``loss = CE + matrix_mir_weight * (-MIR) + matrix_hdr_weight * HDR - matrix_entropy_weight * H(F Fᵀ)``."""

    objective: str = field(
        default="classification",
        metadata={"help": "The training objective; `classification` for this command."},
    )
    matrix_mir_weight: float = field(default=0.0, metadata={"help": "Weight of -MIR(features, head rows)."})
    matrix_hdr_weight: float = field(default=0.0, metadata={"help": "Weight of HDR(features, head rows)."})
    matrix_entropy_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of -H(F Fᵀ): the features' matrix entropy pushed up.",
        },
    )
    matrix_pseudo_labels: bool = field(
        default=True,
        metadata={
            "help": "Unlabelled rows join the regulariser with their predicted label.",
        },
    )

    def problems(self) -> list[str]:
        return super().problems() + self.objective_problems(
            "classification", ClassificationObjective.argument_problems
        )

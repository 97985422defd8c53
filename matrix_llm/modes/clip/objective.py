"""CLIP-style image-text alignment (``objective: clip``): any mix of CLIP's symmetric InfoNCE and two matrix
terms, on a ``CLIPModel`` or a ``VisionTextDualEncoderModel`` (docs/formulations.md):

    loss = infonce_weight * InfoNCE + alignment_weight * H_align + mce_weight * MCE(C(T), C(I))

- InfoNCE: :class:`~matrix_llm.losses.CLIPLoss` with the model's learnable ``logit_scale`` (clamped to
  ``[0, log 100]`` after every optimizer step, as CLIP), over the batch of all processes; with
  ``mask_same_captions`` the other pairs of an identical caption (:func:`caption_keys`) are not its negatives;
- ``H_align``: the cross-modal matrix-entropy alignment of Song et al. (MATH.md 5.3,
  :class:`~matrix_llm.losses.CrossModalEntropyLoss`): for each distinct caption of the batch, the entropy of
  ``[its images ; its text]``, so identical captions (and duplicated images) form one group;
- ``MCE``: :class:`~matrix_llm.losses.CrossModalMCELoss` between the two modalities' feature covariances.

Light augmentation, in training only: each image is a random resized crop of ``crop_min_scale`` to all of its
area, as open_clip's training transform (scale ``(0.9, 1)``, no flip: captions name left and right), seeded per
(seed, rank, step) (:class:`~matrix_llm.data.augment.TrainingView`); ``crop_min_scale = 1`` turns it
off. Evaluation sees the images as they are.

Logged: ``infonce``, ``contrastive_accuracy``, ``logit_scale``, the matrix terms that are trained, and every
``metrics_steps`` optimizer steps (always in evaluation) both matrix terms whatever their weights and the pair
diagnostics
``image_entropy`` / ``text_entropy`` (matrix entropy of each modality's batch) and ``mir`` / ``hdr`` between the
image and the text Grams.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import TrainerCallback

from matrix_llm import features, info
from matrix_llm.data.augment import TrainingView
from matrix_llm.features import diagnostics
from matrix_llm.losses import CLIPLoss, CrossModalEntropyLoss, CrossModalMCELoss
from matrix_llm.modes.base import Objective, ObjectiveCard, ObjectiveOutput

__all__ = ["CLIPObjective", "LogitScaleClamp"]

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the temperature at 1/100
_KEY_PRIME = 2**31 - 1  # caption_keys: two polynomial hashes modulo this prime
_KEY_BASES = (131_071, 1_000_003)


class LogitScaleClamp(TrainerCallback):
    """After each optimizer step, ``logit_scale`` is clamped to ``[0, log 100]`` (CLIP's rule)."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        scale = getattr(features.unwrap(model), "logit_scale", None) if model is not None else None
        if scale is not None and not hasattr(scale, "ds_id"):  # under ZeRO-3 the engine owns the partitions
            with torch.no_grad():
                scale.clamp_(0.0, MAX_LOGIT_SCALE)
        return control


def caption_groups(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(labels (N,), first (G,))``: rows with the same caption tokens share a label; ``first`` is each group's
    first row."""
    ids = input_ids if attention_mask is None else input_ids.masked_fill(attention_mask == 0, -1)
    _, labels = torch.unique(ids, dim=0, return_inverse=True)
    rows = torch.arange(len(labels), device=labels.device)
    first = torch.full((int(labels.max()) + 1,), len(labels), device=labels.device, dtype=rows.dtype)
    return labels, first.scatter_reduce(0, labels, rows, reduce="amin")


def caption_keys(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """``(N,)`` int64 keys, equal for rows with the same caption tokens on any rank and at any padding (either
    side): two polynomial hashes modulo ``2^31 - 1`` of the unpadded tokens in order, one key. Two different
    captions of up to 77 tokens share a key by chance about once in ``10^15`` pairs."""
    ids = input_ids.long()
    valid = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    tokens = (ids % _KEY_PRIME + 1).masked_fill_(~valid, 0)  # 0 adds nothing: padding is ignored
    position = (valid.long().cumsum(-1) - 1).clamp_min_(0)  # index among the caption's own tokens
    key = torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
    for base in _KEY_BASES:
        powers = torch.tensor([pow(base, k, _KEY_PRIME) for k in range(ids.shape[1])], device=ids.device)
        key = key * _KEY_PRIME + (tokens * powers[position] % _KEY_PRIME).sum(-1) % _KEY_PRIME
    return key


class CLIPObjective(Objective):
    """The image-text objective (module docstring).

    Args:
        infonce_weight, alignment_weight, mce_weight: the weights of the three terms, ``>= 0``, not all 0.
        mce_mu: the covariance shift of the MCE term, ``> 0``.
        matrix_start_step: the matrix terms are trained from this optimizer step on (InfoNCE alone before).
        mask_same_captions: InfoNCE leaves the other pairs of an identical caption out of its softmaxes (CLIP
            and open_clip count them as negatives).
        metrics_steps: the pair diagnostics every this many optimizer steps (``0``: evaluation only).
    """

    name = "clip"
    config_name = "CLIPConfig"
    input_names = ("input_ids", "attention_mask", "pixel_values")
    plot_panels = (
        ("total loss", "loss"),
        ("InfoNCE", "infonce"),
        ("matrix-entropy alignment", "alignment"),
        ("MCE(image cov, text cov)", "mce"),
        ("in-batch image->text accuracy", "contrastive_accuracy"),
        ("logit scale (log 1/temperature)", "logit_scale"),
        ("image matrix entropy", "image_entropy"),
        ("text matrix entropy", "text_entropy"),
        ("MIR (image vs text Gram)", "mir"),
        ("zero-shot top-1 (eval)", "zeroshot_top1"),
        ("image->text R@1 (eval)", "image_to_text_R@1"),
    )

    def __init__(
        self,
        *,
        infonce_weight: float = 1.0,
        alignment_weight: float = 0.0,
        mce_weight: float = 0.0,
        mce_mu: float = 0.5,
        matrix_start_step: int = 0,
        metrics_steps: int = 1,
        crop_min_scale: float = 1.0,
        mask_same_captions: bool = False,
        seed: int = 0,
    ) -> None:
        problems = self.argument_problems(
            infonce_weight=infonce_weight,
            alignment_weight=alignment_weight,
            mce_weight=mce_weight,
            mce_mu=mce_mu,
            metrics_steps=metrics_steps,
            matrix_start_step=matrix_start_step,
            crop_min_scale=crop_min_scale,
            mask_same_captions=mask_same_captions,
        )
        if problems:
            name, expected, got = problems[0]
            raise ValueError(f"CLIPObjective: `{name}` must be {expected}; got {got!r}")
        self.weights = {
            "infonce": float(infonce_weight),
            "alignment": float(alignment_weight),
            "mce": float(mce_weight),
        }
        self.metrics_steps, self.matrix_start_step = int(metrics_steps), int(matrix_start_step)
        self.infonce, self.alignment, self.mce = (
            CLIPLoss(),
            CrossModalEntropyLoss(),
            CrossModalMCELoss(mu=mce_mu),
        )
        self.crop_min_scale, self.seed, self.mask_same_captions = (
            float(crop_min_scale),
            int(seed),
            mask_same_captions,
        )
        # a random resized crop of each image at its own size; no flip (open_clip's training transform)
        self.light_crop = TrainingView(crop_min_scale=self.crop_min_scale, flip=0.0, seed=self.seed)

    @staticmethod
    def argument_problems(**values: Any) -> list[tuple[str, str, Any]]:
        """Every invalid argument as ``(name, expected, got)`` (``__init__`` and the config)."""
        out = []
        for name, value in values.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if name in ("metrics_steps", "matrix_start_step") and not (
                isinstance(value, int) and number and value >= 0
            ):
                out.append((name, "an integer >= 0", value))
            elif name == "mce_mu" and not (number and value > 0):
                out.append((name, "a number > 0", value))
            elif name == "crop_min_scale" and not (number and 0 < value <= 1):
                out.append((name, "a number in (0, 1] (1: no crop)", value))
            elif name == "mask_same_captions" and not isinstance(value, bool):
                out.append((name, "true or false", value))
            elif name.endswith("_weight") and not (number and value >= 0):
                out.append((name, "a number >= 0", value))
        weights = [values.get(k, 0) for k in ("infonce_weight", "alignment_weight", "mce_weight")]
        if all(isinstance(w, (int, float)) and w == 0 for w in weights):
            out.append(
                (
                    "infonce_weight",
                    "> 0 when the matrix weights are 0 (some term must train)",
                    values.get("infonce_weight"),
                )
            )
        return out

    def callbacks(self, trainer: Any) -> list[Any]:
        return [LogitScaleClamp()]

    def card(self, args: Any) -> ObjectiveCard:
        terms = [
            f"{w} * {n}"
            for n, w in (
                ("InfoNCE", self.weights["infonce"]),
                ("H_align (matrix-entropy alignment)", self.weights["alignment"]),
                ("MCE(image cov, text cov)", self.weights["mce"]),
            )
            if w > 0
        ]
        return ObjectiveCard(
            summary="Image-text alignment: `loss = " + " + ".join(terms) + "`",
            details=[
                (
                    "InfoNCE is CLIP's symmetric loss over the batch of all processes, with a learnable temperature "
                    "clamped at 1/100."
                )
            ],
            settings=args.card_settings(),
            tags=["clip", "zero-shot-image-classification", "matrix-entropy-alignment"],
            pipeline_tag="zero-shot-image-classification",
            auto_class="AutoModel",
            processor_class="AutoProcessor",
        )

    def __call__(
        self, model: Any, inputs: dict[str, Any], *, base_loss: Any = None, step: int | None = None
    ) -> ObjectiveOutput:
        missing = [k for k in ("input_ids", "pixel_values") if k not in inputs]
        if missing:
            raise ValueError(f"CLIPObjective: the batch has no {missing}; it has {sorted(inputs)}")
        mask = inputs.get("attention_mask")
        pixels = inputs["pixel_values"]
        if model.training:
            pixels = self.light_crop(pixels, -1 if step is None else step)
        outputs = model(input_ids=inputs["input_ids"], attention_mask=mask, pixel_values=pixels)
        images, texts = outputs.image_embeds, outputs.text_embeds
        scale = features.unwrap(model).logit_scale
        keys = caption_keys(inputs["input_ids"], mask) if self.mask_same_captions else None
        parts = self.infonce(images, texts, scale, keys)
        loss = self.weights["infonce"] * parts.total
        metrics = {k: v.float() for k, v in parts.parts.items()}
        due = step is None or (self.metrics_steps > 0 and step % self.metrics_steps == 0)
        on = (
            step is None or step >= self.matrix_start_step
        )  # the matrix terms join after InfoNCE's first steps
        w_align, w_mce = (self.weights["alignment"], self.weights["mce"]) if on else (0.0, 0.0)
        metrics["logit_scale"] = (
            scale.detach().float().reshape(())
        )  # 1-element under DeepSpeed (MatrixTrainer)
        if w_align > 0 or due:
            labels, first = caption_groups(inputs["input_ids"], mask)
            aligned = self.alignment(images, texts[first], labels)
            loss = loss + w_align * aligned.total
            metrics["alignment"] = aligned.total.detach().float()
            metrics["alignment_classes"] = aligned.parts[
                "num_classes"
            ].float()  # distinct captions in the batch
        if w_mce > 0 or due:
            mce = self.mce(images, texts)
            loss = loss + w_mce * mce.total
            metrics["mce"] = mce.total.detach().float()
        if due:
            metrics["image_entropy"] = diagnostics.entropy_erank(images)[0]
            metrics["text_entropy"] = diagnostics.entropy_erank(texts)[0]
            nan = torch.tensor(math.nan, device=images.device)
            try:  # MIR is 0/0 when a modality's batch has zero entropy (e.g. one caption repeated)
                with torch.no_grad():
                    mir, hdr = info.mir_hdr(
                        info.gram(images.detach().double()), info.gram(texts.detach().double())
                    )
            except info.UndefinedRatioError:
                mir = hdr = nan
            metrics.update(mir=mir.float(), hdr=hdr.float())
        return ObjectiveOutput(
            token_loss=None, batch_loss=loss, metrics=metrics, outputs=None, token_loss_name="clip_loss"
        )

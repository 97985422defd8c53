"""Image-text evaluation of CLIP-style dual encoders (``CLIPModel``, ``VisionTextDualEncoderModel``): zero-shot
classification with prompt templates and image <-> text retrieval, with open_clip's metric names.

- :func:`zero_shot_accuracy`: each class is the normalised mean of its prompts' text embeddings (CLIP's prompt
  ensembling); an image's prediction is the class of highest cosine similarity; top-1 and top-5 accuracy.
- :func:`retrieval_metrics`: CLIP_benchmark's protocol for images with one or several captions (text -> image: the
  rank of each caption's image; image -> text: a hit when any of the image's captions is in the top k), ties
  broken stably as current open_clip: ``image_to_text_R@{1,5,10}``, ``text_to_image_R@{1,5,10}``,
  ``*_mean_rank``, ``*_median_rank`` (ranks from 1), open_clip's names.
- :func:`zeroshot_set`: the zero-shot images, class names and templates (``scenes``' held-out compositions,
  Fashion-MNIST with its class names, or any labelled image set with ``zeroshot_classes``); with classes left out
  of training, the seen / unseen split of generalised zero-shot learning (:func:`zero_shot_accuracy`) and the
  seen-unseen curve of calibrated stacking (:func:`seen_unseen_curve`);
- :func:`zero_shot_geometry`: how the zero-shot images sit around their class prompts: the mean within-class
  matrix entropy of the image embeddings, NC1, and MIR / HDR between the images and their classes' text
  embeddings (``matrix_llm.callbacks.classification_pair_metrics`` with the class embeddings as the head);
- :class:`ImageTextEvalCallback`: both during training, at every evaluation (``eval_zeroshot_top1``, ...).

Command line: :mod:`matrix_llm.modes.clip.eval_tasks` (``matrix-llm eval zeroshot`` / ``eval retrieval``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from matrix_llm import distributed
from matrix_llm.data.image_text import SCENE_SOURCES
from matrix_llm.features import evaluating

logger = logging.getLogger("matrix_llm.modes.clip.evaluate")

__all__ = [
    "ImageTextEvalCallback",
    "class_embeddings",
    "encode_images",
    "encode_pairs",
    "evaluate_dual_encoder",
    "retrieval_metrics",
    "seen_unseen_curve",
    "zero_shot_accuracy",
    "zeroshot_set",
]
GENERIC_TEMPLATES = ["a photo of a {}.", "a picture of a {}.", "a {}."]


def zeroshot_set(data_args: Any, seed: int) -> tuple[Any, list[str], list[str]] | None:
    """``(rows with image / label, class names, templates)`` of the zero-shot set of ``data_args`` (a
    :class:`~matrix_llm.modes.clip.config.CLIPDataArguments`), or ``None``. Class names: ``zeroshot_classes``,
    else (the training set itself) ``class_names``, else the dataset's own; templates: ``zeroshot_templates``,
    else (the training set itself) ``caption_templates``, else generic ones."""
    source = data_args.zeroshot_dataset
    if source is None:
        return None
    n = data_args.max_eval_samples or 1000
    if source in SCENE_SOURCES:
        from matrix_llm.data.image_text import CLASS_NAMES, scene_dataset, scene_templates

        rows = scene_dataset(
            "zeroshot", n, side=data_args.image_size, seed=seed, captions=SCENE_SOURCES[source]
        )
        templates = scene_templates(SCENE_SOURCES[source])
        return (
            rows,
            list(data_args.zeroshot_classes or CLASS_NAMES),
            list(data_args.zeroshot_templates or templates),
        )
    from matrix_llm.data.images import class_names_of, load_image_dataset

    rows = load_image_dataset(source, "test")
    rows = rows.select(range(min(n, len(rows))))
    trained_on = getattr(data_args, "dataset_name", None) == source  # the training set's names and templates
    classes = (
        data_args.zeroshot_classes or (trained_on and data_args.class_names) or class_names_of(source, rows)
    )
    if not classes:
        raise ValueError(
            f"`zeroshot_classes`: the class names of {source} are needed for zero-shot evaluation"
        )
    templates = (
        data_args.zeroshot_templates or (trained_on and data_args.caption_templates) or GENERIC_TEMPLATES
    )
    return rows, list(classes), list(templates)


def _features(out: Any) -> torch.Tensor:
    """The projected features of ``get_image_features`` / ``get_text_features`` (a tensor, or the
    ``pooler_output`` of the output object transformers 5 returns)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.no_grad()
def encode_pairs(
    model: Any, rows: Any, collator: Any, *, batch_size: int = 256, num_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised ``(image_embeds (N, d), text_embeds (M, d), caption_image (M,))`` of the ``image`` / ``caption``
    rows (float32, CPU): every image once and every one of its captions (a row's caption may be a list), with the
    index of each caption's image; ``collator``: an :class:`~matrix_llm.data.image_text.ImageTextCollator` (its
    image collator and tokenizer). With several processes each encodes its shard of the rows and every process
    gets the whole result, in the rows' order (:mod:`matrix_llm.features.sharded`)."""
    from matrix_llm.features.sharded import gather_shards, shard_batches

    images, texts, owners = [], [], []
    with evaluating(model) as device:
        for chunk in shard_batches(rows, batch_size, num_workers=num_workers):
            kept, decoded = collator.images.decode(chunk)  # without the images skip_corrupt left out
            pixels = collator.images.pixel_values(decoded).to(device)
            first = sum(len(x) for x in images)  # the index of this chunk's first image on this process
            images.append(_features(model.get_image_features(pixel_values=pixels)).float().cpu())
            captions = []
            for n, i in enumerate(kept):
                row = chunk[i]
                for caption in [row["caption"]] if isinstance(row["caption"], str) else row["caption"]:
                    captions.append(caption)
                    owners.append(first + n)
            text = collator.tokenizer(
                captions, padding=True, truncation=True, max_length=collator.max_length, return_tensors="pt"
            )
            features = model.get_text_features(
                input_ids=text["input_ids"].to(device), attention_mask=text["attention_mask"].to(device)
            )
            texts.append(_features(features).float().cpu())
    counts = gather_shards(torch.tensor([sum(len(x) for x in images)]))  # images per process
    offset = int(counts[: distributed.rank()].sum())  # owners index this process's images: make them global
    return (
        F.normalize(gather_shards(images), dim=-1),
        F.normalize(gather_shards(texts), dim=-1),
        gather_shards(torch.tensor(owners, dtype=torch.long) + offset),
    )


@torch.no_grad()
def encode_images(
    model: Any, rows: Any, collator: Any, *, batch_size: int = 256, num_workers: int = 0
) -> torch.Tensor:
    """Normalised image embeddings of the ``image`` rows (``collator``: an image collator), float32 on the CPU,
    each process encoding its shard (as :func:`encode_pairs`)."""
    from matrix_llm.features.sharded import gather_shards, shard_batches

    out = []
    with evaluating(model) as device:
        for batch in shard_batches(rows, batch_size, collator, num_workers=num_workers):
            out.append(_features(model.get_image_features(pixel_values=batch["pixel_values"].to(device))))
    return F.normalize(gather_shards([x.float().cpu() for x in out]), dim=-1)


@torch.no_grad()
def class_embeddings(
    model: Any, tokenizer: Any, class_names: Sequence[str], templates: Sequence[str], *, max_length: int = 77
) -> torch.Tensor:
    """``(C, d)``: per class, the normalised mean of the normalised embeddings of ``template.format(name)``."""
    out = []
    with evaluating(model) as device:
        for name in class_names:
            text = tokenizer(
                [t.format(name) for t in templates],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            embeds = F.normalize(
                _features(
                    model.get_text_features(
                        input_ids=text["input_ids"], attention_mask=text["attention_mask"]
                    )
                ).float(),
                dim=-1,
            )
            out.append(F.normalize(embeds.mean(0), dim=-1).cpu())
    return torch.stack(out)


def zero_shot_accuracy(
    image_embeds: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor, unseen: Sequence[int] = ()
) -> dict[str, Any]:
    """Top-1 / top-5 accuracy of the nearest class embedding (cosine) for each image.

    With ``unseen`` (indices of classes left out of training), also generalised zero-shot learning's numbers
    (Xian et al., 2018): ``zeroshot_top1_seen`` / ``zeroshot_top1_unseen``, the mean over the seen / unseen
    classes of each class's top-1 accuracy against all the classes, their harmonic mean
    ``zeroshot_top1_harmonic``, ``zeroshot_top1_unseen_only``: the same mean for the unseen classes when only
    they are candidates (classic zero-shot), ``zeroshot_ausuc``: the area under the seen-unseen curve of
    :func:`seen_unseen_curve` (Chao et al., 2016), which no single calibration decides, and the curve itself,
    ``seen_unseen_curve = {"unseen": [...], "seen": [...]}`` (drawn by :func:`matrix_llm.plotting.plot_seen_unseen`).
    Classes without images do not count; without images of the seen or of the unseen classes, AUSUC is NaN and
    there is no curve.
    """
    scores = image_embeds @ classes.T
    top = scores.topk(min(5, classes.shape[0]), dim=1).indices
    hit = top == labels.view(-1, 1)
    out = {
        "zeroshot_top1": float(hit[:, 0].float().mean()),
        "zeroshot_top5": float(hit.any(1).float().mean()),
    }
    unseen = sorted(set(int(c) for c in unseen))
    if not unseen:
        return out
    seen = [c for c in range(classes.shape[0]) if c not in unseen]
    s, u = _per_class_mean(hit[:, 0], labels, seen), _per_class_mean(hit[:, 0], labels, unseen)
    only = torch.tensor(unseen)[scores[:, unseen].argmax(1)] == labels  # candidates: the unseen classes only
    out.update(
        zeroshot_top1_seen=s,
        zeroshot_top1_unseen=u,
        zeroshot_top1_harmonic=2 * s * u / (s + u) if s + u else 0.0,
        zeroshot_top1_unseen_only=_per_class_mean(only, labels, unseen),
        zeroshot_ausuc=float("nan"),
    )
    if torch.isin(labels, torch.tensor(unseen)).any() and torch.isin(labels, torch.tensor(seen)).any():
        xs, ys = seen_unseen_curve(scores, labels, unseen)
        out.update(
            zeroshot_ausuc=float(torch.trapezoid(ys, xs)),
            seen_unseen_curve={"unseen": xs.tolist(), "seen": ys.tolist()},
        )
    return out


def zero_shot_geometry(
    image_embeds: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor
) -> dict[str, float]:
    """``zeroshot_within_class_entropy`` (the mean over classes with at least two images of the matrix entropy of
    their image embeddings' Gram), ``zeroshot_nc1``, ``zeroshot_mir`` and ``zeroshot_hdr`` (the images against
    their classes' text embeddings as the head rows); empty with fewer than two classes among the images."""
    from matrix_llm import info
    from matrix_llm.callbacks import classification_pair_metrics

    present = torch.unique(labels)
    if present.numel() < 2:
        return {}
    feats = image_embeds.double()
    within = [info.entropy(info.gram(feats[labels == c])) for c in present if int((labels == c).sum()) >= 2]
    pair = classification_pair_metrics(feats, classes.double(), labels)
    return {
        "zeroshot_within_class_entropy": float(torch.stack(within).mean()) if within else float("nan"),
        "zeroshot_nc1": float(pair["nc1"]),
        "zeroshot_mir": float(pair["mir"]),
        "zeroshot_hdr": float(pair["hdr"]),
    }


def _per_class_mean(values: torch.Tensor, labels: torch.Tensor, among: Sequence[int]) -> float:
    """Mean over the classes ``among`` that have images of each class's mean of ``values`` (NaN if none has)."""
    means = [values[labels == c].float().mean() for c in among if bool((labels == c).any())]
    return float(torch.stack(means).mean()) if means else float("nan")


def seen_unseen_curve(
    scores: torch.Tensor, labels: torch.Tensor, unseen: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Calibrated stacking's trade-off (Chao et al., 2016): a constant ``γ`` subtracted from every seen class's
    score moves predictions from the seen to the unseen classes. Returns the curve's vertices as ``γ`` goes from
    -∞ to +∞: ``(unseen, seen)``, the per-class top-1 accuracy (as in :func:`zero_shot_accuracy`) of the unseen
    and of the seen classes among all the classes, float64, from ``(0, seen classes among themselves)`` to
    ``(unseen classes among themselves, 0)``; its area is AUSUC.

    Exact, not sampled: image ``i`` goes from its best seen class to its best unseen class when ``γ`` passes
    ``t_i`` = (best seen score - best unseen score), so the vertices are the distinct ``t_i`` in order (images
    with equal ``t_i`` switch together)."""
    unseen = sorted(set(int(c) for c in unseen))
    seen = [c for c in range(scores.shape[1]) if c not in unseen]
    if not seen or not unseen:
        raise ValueError(
            f"seen_unseen_curve: needs seen and unseen classes; got unseen {unseen} of {scores.shape[1]}"
        )
    scores, labels = scores.double(), labels.long()
    best_seen, seen_pick = scores[:, seen].max(1)
    best_unseen, unseen_pick = scores[:, unseen].max(1)
    is_unseen = torch.isin(labels, torch.tensor(unseen))
    # each image's share of its group's per-class mean: 1 / (images of its class x classes of its group with images)
    count = torch.bincount(labels, minlength=scores.shape[1]).double()
    groups = torch.where(
        is_unseen, float(len(set(labels[is_unseen].tolist()))), float(len(set(labels[~is_unseen].tolist())))
    )
    share = 1 / (count[labels] * groups)
    right_seen = (
        ~is_unseen & (torch.tensor(seen)[seen_pick] == labels)
    ).double() * share  # lost when it switches
    right_unseen = (
        is_unseen & (torch.tensor(unseen)[unseen_pick] == labels)
    ).double() * share  # won when it switches
    order = torch.argsort(best_seen - best_unseen)
    t = (best_seen - best_unseen)[order]
    last = torch.ones_like(t, dtype=torch.bool)
    last[:-1] = t[1:] != t[:-1]  # the last image of each group of equal thresholds
    switched = torch.cat(
        [torch.zeros(1, dtype=torch.long), last.nonzero().squeeze(1) + 1]
    )  # images switched so far
    zero = torch.zeros(1, dtype=torch.float64)
    won = torch.cat([zero, right_unseen[order].cumsum(0)])  # prefix sums: the unseen images' switched so far
    kept = torch.cat(
        [right_seen[order].flip(0).cumsum(0).flip(0), zero]
    )  # suffix sums: the seen not yet switched
    return won[switched], kept[switched]


def retrieval_metrics(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, caption_image: torch.Tensor | None = None
) -> dict[str, float]:
    """Image <-> text retrieval, CLIP_benchmark's protocol with open_clip's names (module docstring).

    ``caption_image[j]``: the image of caption ``j`` (default: caption ``i`` is image ``i``'s only one). Text ->
    image: the rank of each caption's image among all images. Image -> text: the rank of the best-ranked of the
    image's own captions among all captions (a hit at ``k`` when any of them is in the top ``k``). Ties keep the
    lower index first (a stable sort, as current open_clip), so identical captions of other images can outrank
    an image's own, never at random."""
    if caption_image is None:
        if image_embeds.shape != text_embeds.shape:
            raise ValueError(
                f"retrieval_metrics: paired embeddings needed; got {tuple(image_embeds.shape)} and "
                f"{tuple(text_embeds.shape)}"
            )
        caption_image = torch.arange(len(text_embeds))
    if len(caption_image) != len(text_embeds) or len(caption_image.unique()) != len(image_embeds):
        raise ValueError(
            "retrieval_metrics: every image needs a caption, and every caption its image's index"
        )
    logits = image_embeds @ text_embeds.T  # (images, captions)
    positive = caption_image.view(1, -1) == torch.arange(len(image_embeds)).view(-1, 1)
    by_text = torch.sort(logits.T, dim=1, descending=True, stable=True).indices  # captions' image rankings
    text_ranks = torch.where(by_text == caption_image.view(-1, 1))[1]
    order = torch.sort(logits, dim=1, descending=True, stable=True).indices  # images' caption rankings
    # the first of the image's own captions in its ranking
    image_ranks = torch.gather(positive, 1, order).float().argmax(dim=1)
    metrics: dict[str, float] = {}
    for name, ranks in (("image_to_text", image_ranks.numpy()), ("text_to_image", text_ranks.numpy())):
        metrics[f"{name}_mean_rank"] = float(ranks.mean() + 1)
        metrics[f"{name}_median_rank"] = float(np.floor(np.median(ranks)) + 1)
        for k in (1, 5, 10):
            metrics[f"{name}_R@{k}"] = float(np.mean(ranks < k))
    return metrics


def class_indices(classes: Sequence[str], names: Sequence[str]) -> tuple[list[int], list[str]]:
    """The indices in ``classes`` of the ``names`` that are classes, and the ``names`` that are not."""
    return [classes.index(n) for n in names if n in classes], [n for n in names if n not in classes]


def evaluate_dual_encoder(
    model: Any,
    tokenizer: Any,
    collator: Any,
    evalset: Any,
    zeroshot: tuple[Any, Sequence[str], Sequence[str]] | None,
    unseen: Sequence[str] = (),
) -> dict[str, Any]:
    """Retrieval metrics on the ``image`` / ``caption`` rows of ``evalset`` (``collator``: an
    :class:`~matrix_llm.data.image_text.ImageTextCollator`) and zero-shot accuracy, with its chance level, on
    ``zeroshot = (rows with image / label, class names, templates)``; either may be ``None``. ``unseen``: names of
    classes left out of training (:func:`zero_shot_accuracy`'s seen / unseen split), classes of the zero-shot set
    (``ValueError`` otherwise)."""
    results: dict[str, Any] = {}
    if zeroshot is not None:
        held_out, unknown = class_indices(zeroshot[1], unseen)
        if unknown:
            raise ValueError(
                f"evaluate_dual_encoder: unseen {unknown} are not classes of the zero-shot set "
                f"{list(zeroshot[1])}"
            )
    if evalset is not None:
        image_embeds, text_embeds, caption_image = encode_pairs(model, evalset, collator)
        results.update(retrieval_metrics(image_embeds, text_embeds, caption_image))
        results.update(retrieval_images=len(image_embeds), retrieval_captions=len(text_embeds))
    if zeroshot is not None:
        rows, classes, templates = zeroshot
        image_embeds = encode_images(model, rows, collator.images)
        classes_embeds = class_embeddings(
            model, tokenizer, classes, templates, max_length=collator.max_length
        )
        labels = torch.tensor(rows["label"])
        results.update(zero_shot_accuracy(image_embeds, labels, classes_embeds, held_out))
        results.update(zero_shot_geometry(image_embeds, labels, classes_embeds))
        results.update(
            zeroshot_images=len(rows),
            zeroshot_classes=len(classes),
            zeroshot_templates=len(templates),
            zeroshot_chance=1 / len(classes),
        )
    return results


LOGGED = (
    "zeroshot_top1",
    "zeroshot_top5",
    "zeroshot_top1_seen",
    "zeroshot_top1_unseen",
    "zeroshot_top1_harmonic",
    "zeroshot_top1_unseen_only",
    "zeroshot_ausuc",
    "image_to_text_R@1",
    "image_to_text_R@5",
    "image_to_text_R@10",
    "text_to_image_R@1",
    "text_to_image_R@5",
    "text_to_image_R@10",
    "image_to_text_median_rank",
    "text_to_image_median_rank",
)


class ImageTextEvalCallback(TrainerCallback):
    """Zero-shot accuracy and retrieval during training: at every evaluation (``eval_steps``, and the final
    ``trainer.evaluate()``) :func:`evaluate_dual_encoder` runs (every process encoding its shard of the images and
    captions, every process computing the metrics from the gathered embeddings) and its numbers are logged as
    ``eval_zeroshot_top1``, ``eval_image_to_text_R@1``, ... (:data:`LOGGED`), to every reporter through
    ``trainer.log`` when ``trainer`` is given (:func:`matrix_llm.callbacks.log_eval_metrics`), and into the
    evaluation's ``metrics`` (so ``metric_for_best_model: eval_zeroshot_top1`` works). Results are cached per
    optimizer step: :meth:`results` at the step of the last evaluation does not encode again.
    """

    def __init__(
        self,
        tokenizer: Any,
        collator: Any,
        evalset: Any = None,
        zeroshot: tuple[Any, Sequence[str], Sequence[str]] | None = None,
        *,
        unseen: Sequence[str] = (),
        trainer: Any = None,
    ) -> None:
        if evalset is None and zeroshot is None:
            raise ValueError(
                "ImageTextEvalCallback: nothing to measure (no retrieval pairs and no zero-shot set)"
            )
        self.tokenizer, self.collator, self.evalset, self.zeroshot = tokenizer, collator, evalset, zeroshot
        self.unseen = tuple(unseen)
        if (
            zeroshot is not None and self.unseen
        ):  # the zero-shot set may be another dataset than the training one
            _, missing = class_indices(zeroshot[1], self.unseen)
            if missing:
                logger.warning(
                    "classes left out of training %s are not classes of the zero-shot set %s: %s",
                    missing,
                    list(zeroshot[1]),
                    "no seen / unseen split"
                    if len(missing) == len(self.unseen)
                    else "the seen / unseen split counts the others",
                )
                self.unseen = tuple(n for n in self.unseen if n not in missing)
        self.trainer = trainer
        self._cache: tuple[int, dict[str, Any]] | None = None

    def results(self, model: Any, step: int) -> dict[str, Any]:
        """The measurements at optimizer step ``step`` (call on every process when several run)."""
        if self._cache is not None and self._cache[0] == step:
            return self._cache[1]
        results = self.measure(model)
        self._cache = (step, results)
        return results

    def measure(self, model: Any) -> dict[str, Any]:
        """The measurements of ``model`` as it is now, never cached (call on every process when several run)."""
        from matrix_llm.features import unwrap

        return evaluate_dual_encoder(  # each process encodes its shard; all compute the same numbers
            unwrap(model), self.tokenizer, self.collator, self.evalset, self.zeroshot, self.unseen
        )

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        from matrix_llm.callbacks import log_eval_metrics

        if model is None:
            raise ValueError("ImageTextEvalCallback.on_evaluate needs the model (the Trainer passes it)")
        fresh = self._cache is None or self._cache[0] != state.global_step
        results = self.results(model, state.global_step)
        logs = {f"eval_{k}": float(results[k]) for k in LOGGED if k in results}
        if metrics is not None:
            metrics.update(logs)
        if fresh:
            log_eval_metrics(logs, state, self.trainer)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._cache = None  # `load_best_model_at_end` may swap the weights without changing the step
        return control

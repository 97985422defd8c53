"""``matrix-llm eval zeroshot --model DIR [--data scenes]`` and ``matrix-llm eval retrieval --model DIR
[--data scenes]`` (or ``scenes-classes``): the measurements of :mod:`matrix_llm.modes.clip.evaluate` on a saved or
Hub dual encoder; each writes ``results.json`` (default ``DIR/eval/<task>/``, :class:`matrix_llm.hub.RunFolder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from matrix_llm.hub import RunFolder
from matrix_llm.modes.clip.evaluate import (
    class_embeddings,
    class_indices,
    encode_images,
    encode_pairs,
    retrieval_metrics,
    zero_shot_accuracy,
    zeroshot_set,
)

__all__ = ["main_retrieval", "main_zeroshot"]


def _load(args: Any) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, image collator)`` of a saved or Hub dual encoder (its image processor when it has one,
    else the tiny models' ``[-1, 1]`` scaling at ``vision_config.image_size``)."""
    from transformers import AutoModel, AutoTokenizer

    from matrix_llm.data.images import saved_image_collator

    model = AutoModel.from_pretrained(args.model, revision=args.revision)
    model = model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model, revision=args.revision)
    return model, tokenizer, saved_image_collator(args.model, model.config, revision=args.revision)


def _output_dir(args: Any, task: str) -> Path:
    out = Path(args.output_dir) if args.output_dir else RunFolder(args.model).eval(task)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write(args: Any, task: str, result: dict[str, Any]) -> dict[str, Any]:
    path = RunFolder(_output_dir(args, task)).write_results(result)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float))
    print(f"{task}: {shown}; wrote {path}")  # noqa: T201 - CLI output
    return result


def main_zeroshot(argv: Sequence[str]) -> dict[str, Any]:
    """``matrix-llm eval zeroshot --model DIR --data {scenes,IDX folder} [--classes ...] [--templates ...]``."""

    from matrix_llm.modes.clip.config import CLIPDataArguments
    from matrix_llm.parsing.usage import ToolParser, model_source

    parser = ToolParser(
        prog="matrix-llm eval zeroshot",
        description="Zero-shot top-1 / top-5 accuracy of a dual encoder with prompt templates.",
    )
    parser.add_argument(
        "--model", required=True, type=model_source, help="a saved `matrix-llm clip` model or a Hub CLIP id"
    )
    parser.add_argument(
        "--data", default="scenes", help="scenes / scenes-classes (held-out compositions) or an IDX folder"
    )
    parser.add_argument(
        "--classes", nargs="+", default=None, help="class names (scenes / Fashion-MNIST: built in)"
    )
    parser.add_argument("--templates", nargs="+", default=None, help="prompt templates with {}")
    parser.add_argument(
        "--unseen",
        nargs="+",
        default=(),
        help="classes left out of training: also report the "
        "seen / unseen / harmonic accuracies and AUSUC, and plot the seen-unseen curve "
        "(seen_unseen.png)",
    )
    parser.add_argument("--num_samples", type=int, default=1000, help="images")
    parser.add_argument("--image_size", type=int, default=32, help="scenes: rendered side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--revision", default=None)
    parser.add_argument("--output_dir", default=None, help="default: MODEL/eval/zeroshot")
    args = parser.parse_args(list(argv))
    model, tokenizer, images = _load(args)
    data = CLIPDataArguments(
        zeroshot_dataset=args.data,
        zeroshot_classes=args.classes,
        zeroshot_templates=args.templates,
        max_eval_samples=args.num_samples,
        image_size=args.image_size,
    )
    rows, classes, templates = zeroshot_set(data, args.seed)
    unseen, unknown = class_indices(classes, args.unseen)
    if unknown:
        parser.error(f"--unseen: {unknown} are not among the classes {classes}")
    image_embeds, labels = encode_images(model, rows, images), torch.tensor(rows["label"])
    class_embeds = class_embeddings(model, tokenizer, classes, templates)
    result: dict[str, Any] = zero_shot_accuracy(image_embeds, labels, class_embeds, unseen)
    result.update(
        chance=1 / len(classes), images=len(rows), classes=len(classes), model=args.model, data=args.data
    )
    if "seen_unseen_curve" in result:
        from matrix_llm.plotting import plot_seen_unseen

        plot_seen_unseen(result, _output_dir(args, "zeroshot") / "seen_unseen.png", unseen=args.unseen)
    return _write(args, "zeroshot", result)


def main_retrieval(argv: Sequence[str]) -> dict[str, Any]:
    """``matrix-llm eval retrieval --model DIR --data {scenes,Hub / local image-caption dataset}``."""

    from matrix_llm.data.image_text import ImageTextCollator, load_image_text_dataset
    from matrix_llm.parsing.usage import ToolParser, model_source

    parser = ToolParser(
        prog="matrix-llm eval retrieval",
        description="Image <-> text retrieval R@1/5/10 and ranks (open_clip's names) of a dual encoder.",
    )
    parser.add_argument(
        "--model", required=True, type=model_source, help="a saved `matrix-llm clip` model or a Hub CLIP id"
    )
    parser.add_argument(
        "--data",
        default="scenes",
        help="scenes, scenes-classes, a Hub id / local image-caption dataset, or a CSV / TSV / JSON(L) / parquet "
        "file of image paths and captions (rows of one image are grouped: its captions)",
    )
    parser.add_argument("--split", default="test", help="a split, or a file as for --data")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--caption_column", default="caption")
    parser.add_argument("--num_samples", type=int, default=1000, help="images")
    parser.add_argument("--max_length", type=int, default=77)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--revision", default=None)
    parser.add_argument("--output_dir", default=None, help="default: MODEL/eval/retrieval")
    args = parser.parse_args(list(argv))
    model, tokenizer, images = _load(args)
    rows = load_image_text_dataset(
        args.data,
        args.split,
        image_column=args.image_column,
        caption_column=args.caption_column,
        n=args.num_samples,
        seed=args.seed,
        group_by_image=True,
    )
    collator = ImageTextCollator(tokenizer, images, max_length=args.max_length, seed=args.seed)
    image_embeds, text_embeds, caption_image = encode_pairs(model, rows, collator)
    result: dict[str, Any] = retrieval_metrics(image_embeds, text_embeds, caption_image)
    result.update(
        protocol="CLIP_benchmark (image -> text: any of the image's captions; stable ties)",
        images=len(image_embeds),
        captions=len(text_embeds),
        model=args.model,
        data=args.data,
        split=args.split,
    )
    return _write(args, "retrieval", result)

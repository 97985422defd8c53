"""``matrix-llm classify``: an image classifier trained with CE plus optional matrix regularisers (MIR / HDR /
matrix entropy), with the neural-collapse diagnostics logged.

    matrix-llm classify --config classify/digits.yaml
    matrix-llm classify --config classify/digits.yaml --dataset_name ../shared/data/fashion-mnist --image_size 28
    accelerate launch -m matrix_llm.classify --config recipes/....yaml

Steps: parse (:mod:`matrix_llm.objectives.classification_config`) -> data (``digits``, an IDX folder, or a
Hub / local dataset; ``label_fraction`` of the training labels kept, class-balanced and seeded) -> model
(``tiny-vit`` / ``tiny-resnet`` offline, or any ``AutoModelForImageClassification`` with its image processor and
the head resized to the data's classes) -> :class:`~matrix_llm.trainer.MatrixTrainer` with eval accuracy ->
the shared run tail (:func:`matrix_llm.runner.train_and_finish`).
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from .objectives.classification_config import (
    ClassificationConfig,
    ClassificationDataArguments,
    ClassificationModelArguments,
)
from .parsing import ConfigError, format_help
from .parsing import parse_args as parse_command_line
from .runner import RunCard, run_command, train_and_finish

__all__ = ["build_data", "build_model", "main", "parse_args", "run"]

logger = logging.getLogger("matrix_llm.classify")
PROG = "matrix-llm classify"
OBJECTIVES = ("classification",)


def build_data(data_args: ClassificationDataArguments, training_args: ClassificationConfig) -> tuple[Any, Any]:
    """``(train, eval)`` with ``image`` / ``label`` columns; unlabelled training rows carry label ``-100``."""
    from .data.gsm8k import IGNORE_INDEX
    from .data.images import label_fraction_mask, load_image_dataset

    train = load_image_dataset(data_args.dataset_name, data_args.train_split, config=data_args.dataset_config)
    if data_args.max_train_samples is not None:
        train = train.select(range(min(len(train), data_args.max_train_samples)))
    if data_args.label_fraction < 1.0:
        keep = label_fraction_mask(train["label"], data_args.label_fraction, seed=data_args.label_seed)
        train = train.map(lambda row, i: {"label": row["label"] if keep[i] else IGNORE_INDEX}, with_indices=True)
        logger.info("label_fraction %.3g: %d of %d training labels kept", data_args.label_fraction, int(keep.sum()),
                    len(keep))  # fmt: skip
    evalset = None
    if data_args.eval_split is not None:
        evalset = load_image_dataset(data_args.dataset_name, data_args.eval_split, config=data_args.dataset_config)
        if data_args.max_eval_samples is not None:
            evalset = evalset.select(range(min(len(evalset), data_args.max_eval_samples)))
    return train, evalset


def build_model(model_args: ClassificationModelArguments, data_args: ClassificationDataArguments, num_labels: int,
                training_args: ClassificationConfig) -> tuple[Any, Any]:  # fmt: skip
    """``(model, collator)``: a tiny random-init classifier with the plain image collator, or a Hub / local model
    with its own image processor."""
    from .data.images import ImageCollator

    if model_args.is_tiny:
        from .tiny import build_image_classifier

        model = build_image_classifier(
            model_args.model_name_or_path, num_labels=num_labels, image_size=data_args.image_size,
            num_channels=data_args.num_channels, hidden_size=model_args.tiny_hidden_size,
            num_layers=model_args.tiny_num_layers, num_heads=model_args.tiny_num_heads, seed=training_args.seed,
        )  # fmt: skip
        return model, ImageCollator(image_size=data_args.image_size, channels=data_args.num_channels)
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    common = dict(revision=model_args.model_revision, trust_remote_code=model_args.trust_remote_code)
    processor = AutoImageProcessor.from_pretrained(model_args.model_name_or_path, **common)
    model = AutoModelForImageClassification.from_pretrained(
        model_args.model_name_or_path, num_labels=num_labels, ignore_mismatched_sizes=True, **common
    )
    channels = int(getattr(model.config, "num_channels", 3))
    return model, ImageCollator(image_size=data_args.image_size, channels=channels, processor=processor)


def _accuracy(prediction: Any) -> dict[str, float]:
    import numpy as np

    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    labels = prediction.label_ids
    labelled = labels != -100
    return {"accuracy": float((np.argmax(logits, -1)[labelled] == labels[labelled]).mean())}


def run(model_args: ClassificationModelArguments, data_args: ClassificationDataArguments,
        training_args: ClassificationConfig) -> dict:  # fmt: skip
    """Everything after parsing; returns the final metrics."""
    from transformers import set_seed

    from .trainer import MatrixTrainer

    set_seed(training_args.seed)
    train, evalset = build_data(data_args, training_args)
    labels = sorted({int(x) for x in train["label"] if int(x) >= 0} | set(evalset["label"] if evalset else []))
    num_labels = max(labels) + 1
    if training_args.eval_strategy != "no" and evalset is None:
        raise ValueError(f"`eval_strategy`: {training_args.eval_strategy} needs an eval set; set `eval_split`")
    model, collator = build_model(model_args, data_args, num_labels, training_args)
    if training_args.remove_unused_columns:
        # the collator turns the `image` column into pixel_values: the Trainer must not drop it first (the
        # setting transformers' own image-classification example asks for)
        training_args.remove_unused_columns = False
        logger.info("remove_unused_columns set to false: the collator reads the `image` column")
    trainer = MatrixTrainer(
        model=model, args=training_args, train_dataset=train, eval_dataset=evalset, data_collator=collator,
        compute_metrics=_accuracy,
    )  # fmt: skip
    metrics = train_and_finish(
        trainer,
        model_args=model_args,
        command="classify",
        card=RunCard(
            base_model=f"{model_args.model_name_or_path} (offline random init)" if model_args.is_tiny
            else model_args.model_name_or_path,
            dataset=data_args.dataset_name,
            details=((f"Labelled fraction of the training set: {data_args.label_fraction:g} (seed "
                     f"{data_args.label_seed})."),),
            run_info={"num_classes": num_labels},  # for the neural-collapse reference lines of `plot`
        ),
    )  # fmt: skip
    del trainer, model
    gc.collect()
    return metrics


def _classes(objective: Any) -> tuple[type, ...]:
    if objective is not None and objective not in OBJECTIVES:
        raise ConfigError([f"`objective`: `{PROG}` runs {list(OBJECTIVES)}; got {objective!r}"])
    return (ClassificationModelArguments, ClassificationDataArguments, ClassificationConfig)


def _help(classes) -> str:
    return format_help(PROG, classes, example=f"{PROG} --config classify/digits.yaml --matrix_mir_weight 0.1",
                       summary="Train an image classifier with CE + optional MIR / HDR / matrix-entropy terms.")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> tuple[ClassificationModelArguments, ClassificationDataArguments,
                                                         ClassificationConfig]:  # fmt: skip
    """``[--config FILE.yaml] [--field value ...]`` -> the classification mode's three dataclasses."""
    return parse_command_line(argv, _classes, prog=PROG, help_text=_help)


def main(argv: list[str] | None = None) -> int:
    """``matrix-llm classify [--config FILE.yaml] [--field value ...]``; returns the exit status."""
    return run_command(argv, prog=PROG, parse=parse_args, run=run)


if __name__ == "__main__":
    raise SystemExit(main())

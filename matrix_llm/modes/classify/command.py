"""``matrix-llm classify``: an image or text classifier trained with CE plus optional matrix regularisers (MIR /
HDR / matrix entropy), with the neural-collapse diagnostics logged.

    matrix-llm classify --config classify/digits.yaml
    matrix-llm classify --config classify/digits.yaml --dataset_name ../shared/data/fashion-mnist --image_size 28
    matrix-llm classify --config classify/text-imdb.yaml
    accelerate launch -m matrix_llm.cli classify --config recipes/....yaml

Steps: parse (:mod:`matrix_llm.modes.classify.config`) -> data (images: ``digits``, an IDX folder,
or a Hub / local dataset; texts: ``text_column`` of a Hub / local dataset; ``label_fraction`` of the training
labels kept, class-balanced and seeded) -> model (``tiny-vit`` / ``tiny-resnet`` / ``tiny-bert`` offline, or any
``AutoModelForImageClassification`` with its image processor / ``AutoModelForSequenceClassification`` with its
tokenizer, the head resized to the data's classes) -> :class:`~matrix_llm.trainer.MatrixTrainer` with eval
accuracy -> the shared run tail (:func:`matrix_llm.runner.train_and_finish`), which saves the model with its
processor or tokenizer.
"""

from __future__ import annotations

import logging
from typing import Any

from matrix_llm.modes.base import Mode
from matrix_llm.modes.classify.config import (
    TINY_TEXT_CLASSIFIERS,
    ClassificationConfig,
    ClassificationDataArguments,
    ClassificationModelArguments,
)
from matrix_llm.modes.classify.objective import ClassificationObjective
from matrix_llm.runner import RunCard, run_mode

__all__ = ["ClassificationMode", "build_data", "build_model", "main", "parse_args"]

logger = logging.getLogger("matrix_llm.modes.classify.command")
PROG = "matrix-llm classify"
STREAM_SAMPLE = 2000  # streamed rows read up front: the labels the head is sized from, tiny-bert's texts
TEXT_CARD = {
    "pipeline_tag": "text-classification",
    "auto_class": "AutoModelForSequenceClassification",
    "processor_class": "AutoTokenizer",
    "tags": ["text-classification", "neural-collapse"],
}


def _load(data_args: ClassificationDataArguments, split: str) -> Any:
    if data_args.text_column is not None:
        from matrix_llm.data.text import load_text_dataset

        return load_text_dataset(
            data_args.dataset_name,
            split,
            config=data_args.dataset_config,
            text_column=data_args.text_column,
            label_column=data_args.label_column,
        )
    from matrix_llm.data.images import MissingColumnError, load_image_dataset

    try:
        return load_image_dataset(data_args.dataset_name, split, config=data_args.dataset_config)
    except MissingColumnError as e:
        if e.kind != "label":
            raise
        raise MissingColumnError(
            data_args.dataset_name,
            "label",
            "label",
            e.columns,
            hint=": classify trains on labels (an image folder holds one sub-folder per class); `matrix-llm ssl` "
            "trains on unlabelled images",
        ) from None


def build_data(
    data_args: ClassificationDataArguments, training_args: ClassificationConfig
) -> tuple[Any, Any]:
    """``(train, eval)`` with ``image`` (or ``text``) / ``label`` columns; unlabelled training rows carry label
    ``-100``. The first images of each split are decoded (an unreadable file is named before any model loads)."""
    from matrix_llm.data.images import check_readable
    from matrix_llm.data.labels import IGNORE_INDEX, label_fraction_mask

    images = data_args.text_column is None and not data_args.skip_corrupt_images
    train = _load(data_args, data_args.train_split)
    if data_args.max_train_samples is not None:
        train = train.select(range(min(len(train), data_args.max_train_samples)))
    if images:
        check_readable(train, data_args.train_split)
    if data_args.label_fraction < 1.0:
        keep = label_fraction_mask(train["label"], data_args.label_fraction, seed=data_args.label_seed)
        train = train.map(
            lambda row, i: {"label": row["label"] if keep[i] else IGNORE_INDEX}, with_indices=True
        )
        logger.info(
            "label_fraction %.3g: %d of %d training labels kept",
            data_args.label_fraction,
            int(keep.sum()),
            len(keep),
        )
    evalset = None
    if data_args.eval_split is not None:
        evalset = _load(data_args, data_args.eval_split)
        if data_args.max_eval_samples is not None:
            evalset = evalset.select(range(min(len(evalset), data_args.max_eval_samples)))
        if images:
            check_readable(evalset, data_args.eval_split)
    return train, evalset


def _text_model(
    model_args: ClassificationModelArguments,
    data_args: ClassificationDataArguments,
    num_labels: int,
    train: Any,
    seed: int,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a text classifier: ``tiny-bert`` with a tokenizer trained on the training texts,
    or a Hub / local ``AutoModelForSequenceClassification`` (decoders get EOS as padding, as they are trained)."""
    if model_args.is_tiny:
        from matrix_llm.models.tiny import build_text_classifier, build_tokenizer

        tokenizer = build_tokenizer(train["text"], vocab_size=1024)
        model = build_text_classifier(
            tokenizer,
            num_labels=num_labels,
            hidden_size=model_args.tiny_hidden_size,
            num_layers=model_args.tiny_num_layers,
            num_heads=model_args.tiny_num_heads,
            dropout=0.1 if model_args.tiny_dropout is None else model_args.tiny_dropout,
            max_position_embeddings=data_args.max_length,
            seed=seed,
        )
        return model, tokenizer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    common = dict(revision=model_args.model_revision, trust_remote_code=model_args.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, **common)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_args.model_name_or_path, num_labels=num_labels, ignore_mismatched_sizes=True, **common
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:  # decoder classifiers find the last real token through it
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def build_model(
    model_args: ClassificationModelArguments,
    data_args: ClassificationDataArguments,
    num_labels: int,
    training_args: ClassificationConfig,
    train: Any = None,
) -> tuple[Any, Any, Any]:
    """``(model, collator, processor)``: a tiny random-init classifier with
    :func:`~matrix_llm.data.images.tiny_image_processor`, a Hub / local image model with its image processor, or a text classifier with its tokenizer
    (``train``: the training rows, for ``tiny-bert``'s tokenizer)."""
    if data_args.text_column is not None:
        from matrix_llm.data.text import TextCollator, count_truncated

        model, tokenizer = _text_model(model_args, data_args, num_labels, train, training_args.seed)
        cut = count_truncated(tokenizer, train["text"], data_args.max_length)
        if cut:
            logger.warning(
                "%d of %d training texts are longer than max_length %d tokens and are cut",
                cut,
                len(train),
                data_args.max_length,
            )
        return model, TextCollator(tokenizer, max_length=data_args.max_length), tokenizer
    from matrix_llm.data.images import ImageCollator, tiny_image_processor

    if model_args.is_tiny:
        from matrix_llm.models.tiny import build_image_classifier

        model = build_image_classifier(
            model_args.model_name_or_path,
            num_labels=num_labels,
            image_size=data_args.image_size,
            num_channels=data_args.num_channels,
            hidden_size=model_args.tiny_hidden_size,
            num_layers=model_args.tiny_num_layers,
            num_heads=model_args.tiny_num_heads,
            seed=training_args.seed,
        )
        processor = tiny_image_processor(data_args.image_size, data_args.num_channels)  # saved with the model
        collator = ImageCollator(
            image_size=data_args.image_size,
            channels=data_args.num_channels,
            processor=processor,
            skip_corrupt=data_args.skip_corrupt_images,
        )
        return model, collator, processor
    from transformers import AutoModelForImageClassification

    from matrix_llm.data.images import saved_image_collator

    common = dict(revision=model_args.model_revision, trust_remote_code=model_args.trust_remote_code)
    model = AutoModelForImageClassification.from_pretrained(
        model_args.model_name_or_path, num_labels=num_labels, ignore_mismatched_sizes=True, **common
    )
    # its image processor, or (an earlier `classify` run of a tiny model) its config's image size and channels
    collator = saved_image_collator(
        model_args.model_name_or_path, model.config, revision=model_args.model_revision
    )
    collator.skip_corrupt = data_args.skip_corrupt_images
    return model, collator, collator.processor


def _accuracy(prediction: Any) -> dict[str, float]:
    import numpy as np

    logits = (
        prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    )
    labels = prediction.label_ids
    labelled = labels != -100
    return {"accuracy": float((np.argmax(logits, -1)[labelled] == labels[labelled]).mean())}


class ClassificationMode(Mode):
    """``matrix-llm classify`` (:class:`~matrix_llm.modes.base.Mode`): accuracy is the Trainer's
    ``compute_metrics``; the run tail saves the model with its processor or tokenizer."""

    prog = PROG
    command = "classify"
    objectives = ("classification",)
    classes = (ClassificationModelArguments, ClassificationDataArguments, ClassificationConfig)
    objective_class = ClassificationObjective
    example = f"{PROG} --config classify/digits.yaml --matrix_mir_weight 0.1"
    summary = "Train an image or text classifier with CE + optional MIR / HDR / matrix-entropy terms."

    def check(self) -> list[str]:
        """A tiny model must match the data: ``tiny-bert`` classifies texts, the others images; a stream has no
        whole label column to keep a fraction of; ``labelled_per_batch`` leaves room for unlabelled rows."""
        data_args, batch = self.data_args, self.training_args.per_device_train_batch_size
        if data_args.streaming and data_args.label_fraction < 1.0:
            return ["`label_fraction`: drawn over the whole label column, which a stream does not have"]
        if data_args.labelled_per_batch >= batch:
            n = data_args.labelled_per_batch
            return [f"`labelled_per_batch`: {n} leaves no unlabelled row in a batch of {batch}; set it below"]
        model_args = self.model_args
        text_model = model_args.model_name_or_path in TINY_TEXT_CLASSIFIERS
        if model_args.is_tiny and text_model != (self.data_args.text_column is not None):
            fix = "texts: set `text_column`" if text_model else "images: unset `text_column` or use tiny-bert"
            return [f"`model_name_or_path`: {model_args.model_name_or_path} classifies {fix}"]
        if model_args.tiny_dropout is not None and model_args.model_name_or_path not in TINY_TEXT_CLASSIFIERS:
            return [f"`tiny_dropout`: tiny-bert's; {model_args.model_name_or_path} does not read it"]
        if data_args.augmented and data_args.text_column is not None:
            return [
                "`crop_min_scale` / `horizontal_flip`: image augmentations; the data are texts (`text_column`)"
            ]
        return []

    def objective(self) -> Any:
        """The objective of the config's fields, with the data's training augmentation (``crop_min_scale``,
        ``horizontal_flip``; seeded with the run's seed)."""
        from matrix_llm.data.augment import TrainingView

        data_args = self.data_args
        augment = TrainingView(
            crop_min_scale=data_args.crop_min_scale,
            flip=0.5 if data_args.horizontal_flip else 0.0,
            seed=self.training_args.seed,
        )
        kwargs = self.training_args.objective_kwargs()
        return ClassificationObjective(**kwargs, augment=augment if augment.active else None)

    def load_data(self) -> None:
        data_args = self.data_args
        if not data_args.streaming:
            self.train, self.evalset = build_data(data_args, self.training_args)
            self.sample = self.train
            return
        from matrix_llm.data.streaming import stream_splits

        text = data_args.text_column
        names = {text: "text"} if text is not None else {"image": "image"}
        names[data_args.label_column] = "label"
        self.train, self.sample, self.evalset = stream_splits(
            data_args, self.training_args, names, sample=STREAM_SAMPLE
        )

    def build(self, objective: Any) -> Any:
        from matrix_llm.trainer import MatrixTrainer

        model_args, data_args, training_args = self.model_args, self.data_args, self.training_args
        train, evalset = self.train, self.evalset
        labels = sorted(  # a stream: the labels of its first rows and of the eval rows
            {int(x) for x in self.sample["label"] if int(x) >= 0} | set(evalset["label"] if evalset else [])
        )
        self.num_labels = max(labels) + 1
        if training_args.eval_strategy != "no" and evalset is None:
            raise ValueError(
                f"`eval_strategy`: {training_args.eval_strategy} needs an eval set; set `eval_split`"
            )
        model, collator, processor = build_model(
            model_args, data_args, self.num_labels, training_args, self.sample
        )
        if training_args.remove_unused_columns:
            # the collator turns the `image` / `text` column into model inputs: the Trainer must not drop it
            # first (the setting transformers' own image-classification example asks for)
            training_args.remove_unused_columns = False
            logger.info("remove_unused_columns set to false: the collator reads the raw image / text column")
        return MatrixTrainer(
            model=model,
            args=training_args,
            train_dataset=train,
            train_sampler=self.labelled_sampler(),
            eval_dataset=evalset,
            data_collator=collator,
            compute_metrics=_accuracy,
            processing_class=processor,  # saved beside the model
            objective=objective,
        )

    def labelled_sampler(self) -> Any:
        """The :class:`~matrix_llm.data.labels.LabelledShareSampler` of ``labelled_per_batch`` (``None``: the
        Trainer's uniform draw; also when every training row is labelled, where a uniform batch is all labelled)."""
        from matrix_llm.data.labels import IGNORE_INDEX, LabelledShareSampler

        data_args, args = self.data_args, self.training_args
        if not self.labelled_share:
            return None
        labelled = [int(y) != IGNORE_INDEX for y in self.train["label"]]
        return LabelledShareSampler(
            labelled,
            args.per_device_train_batch_size,
            data_args.labelled_per_batch,
            seed=args.seed if args.data_seed is None else args.data_seed,
        )

    @property
    def labelled_share(self) -> bool:
        return bool(self.data_args.labelled_per_batch) and self.data_args.label_fraction < 1.0

    def card(self) -> RunCard:
        model_args, data_args = self.model_args, self.data_args
        name = model_args.model_name_or_path
        labelled = (
            f"Labelled fraction of the training set: {data_args.label_fraction:g} (seed {data_args.label_seed})"
            + (
                f", {data_args.labelled_per_batch} labelled rows in every training batch."
                if self.labelled_share
                else "."
            )
        )
        augmented = []
        if data_args.crop_min_scale < 1:
            augmented.append(f"random resized crop of {data_args.crop_min_scale:g} to all of the area")
        if data_args.horizontal_flip:
            augmented.append("left-right flip (p 0.5)")
        augmentation = "Training augmentation: " + (", ".join(augmented) if augmented else "none") + "."
        return RunCard(
            base_model=f"{name} (offline random init)" if model_args.is_tiny else name,
            dataset=data_args.dataset_name,
            details=(labelled,) if data_args.text_column is not None else (labelled, augmentation),
            run_info={"num_classes": self.num_labels},  # for the neural-collapse reference lines of `plot`
            card_overrides=TEXT_CARD if data_args.text_column is not None else {},
            results=self._card_results(),
        )

    def _card_results(self) -> tuple[Any, ...]:
        """Accuracy and the neural-collapse metrics of the evaluation split."""
        from matrix_llm.hub import CardResult

        task = "text-classification" if self.data_args.text_column is not None else "image-classification"
        split = self.data_args.eval_split
        named = (
            ("eval_accuracy", "accuracy", "Accuracy"),
            ("eval_mir", "mir", "Neural collapse: MIR (features vs head rows)"),
            ("eval_hdr", "hdr", "Neural collapse: HDR (features vs head rows)"),
            ("eval_matrix_entropy", "matrix_entropy", "Feature matrix entropy"),
            ("eval_head_entropy", "matrix_entropy", "Head matrix entropy"),
        )
        return tuple(CardResult(key, task, metric, name, split=split) for key, metric, name in named)


def parse_args(
    argv: list[str] | None = None,
) -> tuple[ClassificationModelArguments, ClassificationDataArguments, ClassificationConfig]:
    """``[--config FILE.yaml] [--field value ...]`` -> the classification mode's three dataclasses."""
    return ClassificationMode().parse(argv)


def main(argv: list[str] | None = None) -> int:
    """``matrix-llm classify [--config FILE.yaml] [--field value ...]``; returns the exit status."""
    return run_mode(ClassificationMode(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

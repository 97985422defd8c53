"""``matrix-llm ssl``: a vision backbone trained self-supervised (Matrix-SSL, MEC, SimCLR, Barlow Twins or M-MAE) through
:class:`~matrix_llm.trainer.MatrixTrainer`, then measured with frozen-feature probes.

    matrix-llm ssl --config demo/ssl.yaml
    matrix-llm ssl --config demo/ssl.yaml --ssl_method simclr --output_dir outputs/ssl-simclr
    matrix-llm ssl --config demo/ssl.yaml --ssl_method mmae --output_dir outputs/ssl-mmae
    matrix-llm ssl --config demo/ssl.yaml --dataset_name ../shared/data/fashion-mnist --image_size 28
    accelerate launch -m matrix_llm.cli ssl --config recipes/....yaml

Steps: parse (:mod:`matrix_llm.modes.ssl.config`) -> data (``digits``, an IDX folder, or a Hub / local image
dataset; labels optional) -> :class:`~matrix_llm.models.ssl.SSLModel` around a ``tiny-vit`` /
``tiny-resnet`` or any Hub ``AutoModel`` backbone -> MatrixTrainer -> the shared run tail, whose ``finish`` step
saves ``OUTPUT_DIR/backbone/`` (``save_pretrained``, with the Hub backbone's image processor) and, with labels and
an eval split, runs the linear probe and kNN on frozen features for the trained backbone, the same architecture
at random init and (probe) raw pixels: ``results.json``, ``report.md`` and ``metrics.png`` in ``OUTPUT_DIR``.
"""

from __future__ import annotations

import logging
from typing import Any

from matrix_llm.data.images import MissingColumnError
from matrix_llm.hub import RunFolder
from matrix_llm.modes.base import SHARDING_FIELD, Mode
from matrix_llm.modes.ssl.config import SSLConfig, SSLDataArguments, SSLModelArguments
from matrix_llm.modes.ssl.methods import METHODS
from matrix_llm.modes.ssl.objective import SSLObjective
from matrix_llm.parsing import ConfigError
from matrix_llm.runner import RunCard, run_mode, sharded_by, write_report

__all__ = ["SSLMode", "build_data", "build_model", "main", "parse_args", "probe_results"]

logger = logging.getLogger("matrix_llm.modes.ssl.command")
PROG = "matrix-llm ssl"


def build_data(data_args: SSLDataArguments) -> tuple[Any, Any]:
    """``(train, eval)`` with an ``image`` column and a ``label`` column when the data has labels: the
    ``label_column`` (null: none). Data without the default ``label`` column (a flat image folder, the usual
    self-supervised input) trains unlabelled, without the online and final probes, and the log says so once; the
    first rows of each split are decoded (an unreadable file is named before any model loads)."""
    from matrix_llm.data.images import check_readable, load_image_dataset

    label_column = data_args.label_column

    def load(split: str, limit: int | None) -> Any:
        nonlocal label_column
        common = dict(config=data_args.dataset_config, image_column=data_args.image_column)
        try:
            ds = load_image_dataset(data_args.dataset_name, split, label_column=label_column, **common)
        except MissingColumnError as e:
            if e.kind != "label" or label_column != SSLDataArguments.label_column:
                raise
            logger.warning(
                "%s: no `label` column (%s): training unlabelled, no online probe and no final linear probe "
                "or kNN; set `label_column` to the column that holds labels to have them",
                data_args.dataset_name,
                ", ".join(e.columns),
            )
            label_column = None
            ds = load_image_dataset(data_args.dataset_name, split, label_column=None, **common)
        ds = ds.select(range(min(len(ds), limit))) if limit is not None else ds
        if not data_args.skip_corrupt_images:
            check_readable(ds, split)
        return ds

    train = load(data_args.train_split, data_args.max_train_samples)
    evalset = load(data_args.eval_split, data_args.max_eval_samples) if data_args.eval_split else None
    if label_column is None:  # the eval split alone had no labels: neither has them
        train = train.remove_columns([c for c in train.column_names if c == "label"])
    return train, evalset


def _network(
    model_args: SSLModelArguments, data_args: SSLDataArguments, training_args: SSLConfig
) -> tuple[Any, Any]:
    """``(network, image processor or None)``: the backbone (``ViTMAEForPreTraining`` for ``mmae``), tiny or Hub."""
    mae = METHODS[training_args.ssl_method].inputs == "mae"
    if model_args.is_tiny:
        from matrix_llm.models.tiny import build_image_backbone, build_mae

        size = dict(
            image_size=data_args.image_size,
            num_channels=data_args.num_channels,
            hidden_size=model_args.tiny_hidden_size,
            num_layers=model_args.tiny_num_layers,
            num_heads=model_args.tiny_num_heads,
            seed=training_args.seed,
        )
        if mae:
            if model_args.model_name_or_path != "tiny-vit":
                raise ConfigError(
                    ["`model_name_or_path`: ssl_method mmae needs a ViT (tiny-vit or a Hub ViT-MAE)"]
                )
            return build_mae(**size), None
        return build_image_backbone(model_args.model_name_or_path, **size), None
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, ViTMAEForPreTraining

    common = dict(revision=model_args.model_revision, trust_remote_code=model_args.trust_remote_code)
    auto = ViTMAEForPreTraining if mae else AutoModel
    if model_args.init_from_config:
        config = AutoConfig.from_pretrained(model_args.model_name_or_path, **common)
        network = (
            auto.from_config(config, trust_remote_code=model_args.trust_remote_code)
            if not mae
            else auto(config)
        )
    else:
        network = auto.from_pretrained(model_args.model_name_or_path, **common)
    return network, AutoImageProcessor.from_pretrained(model_args.model_name_or_path, **common)


def build_model(
    model_args: SSLModelArguments, data_args: SSLDataArguments, training_args: SSLConfig, num_classes: int
) -> tuple[Any, Any, Any]:
    """``(SSLModel or MAEModel, collator, image processor)``; the collator gives ``[0, 1]`` images of
    ``image_size``, which the model augments and normalises on its device; the image processor (the Hub
    backbone's, or :func:`~matrix_llm.data.images.tiny_image_processor`) is saved beside the backbone and feeds the
    final probes."""
    from dataclasses import replace

    from matrix_llm.data.augment import MAE_VIEW, TwoViewAugment, byol_views
    from matrix_llm.data.images import ImageCollator, tiny_image_processor
    from matrix_llm.models.ssl import MAEModel, SSLModel

    network, processor = _network(model_args, data_args, training_args)
    channels = int(getattr(network.config, "num_channels", data_args.num_channels))
    # the collator gives [0, 1] images at image_size: a tiny model's through its own processor without the
    # normalisation (saved with it, normalising; the views are normalised on the device the same way)
    training_processor = None
    if processor is None:
        processor = tiny_image_processor(data_args.image_size, channels)
        training_processor = tiny_image_processor(data_args.image_size, channels, normalize=False)
    mean, std = tuple(processor.image_mean), tuple(processor.image_std)
    method = training_args.ssl_method
    crop = dict(crop_scale=(data_args.crop_min_scale, 1.0))
    views = (
        (replace(MAE_VIEW, **crop),) * 2
        if METHODS[method].inputs == "mae"
        else byol_views(crop_min_scale=data_args.crop_min_scale, jitter_strength=data_args.jitter_strength)
    )
    augment = TwoViewAugment(
        size=data_args.image_size, channels=channels, mean=mean, std=std, seed=training_args.seed, views=views
    )
    spec = METHODS[method]
    if spec.inputs == "mae":
        model = MAEModel(network, augment, num_classes=num_classes)
    else:
        model = SSLModel(
            network,
            augment,
            pooling=model_args.pooling,
            projector_hidden=model_args.projector_hidden,
            projector_dim=model_args.projector_dim,
            predictor_hidden=model_args.predictor_hidden if spec.predictor else 0,
            teacher=spec.teacher,
            num_classes=num_classes,
        )
    collator = ImageCollator(
        image_size=data_args.image_size,
        channels=channels,
        mean=0.0,
        std=1.0,
        processor=training_processor,
        skip_corrupt=data_args.skip_corrupt_images,
    )
    return model, collator, processor


def probe_results(
    backbone: Any,
    seed: int,
    train: Any,
    evalset: Any,
    collator: Any,
    *,
    raw_pixels_max_train: int | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Linear probe and kNN accuracy on frozen features: the trained backbone, the same architecture at random
    init (seeded), and the linear probe on raw pixels (:func:`~matrix_llm.modes.ssl.evaluate.raw_pixels`) of at
    most ``raw_pixels_max_train`` training images (a seeded class-balanced subset past it; ``None``: all).

    Call it on every process: each encodes its shard of the images (:mod:`matrix_llm.features.sharded`), the
    probes are fitted on the main process, which returns the results (the others return ``{}``)."""
    from matrix_llm import distributed
    from matrix_llm.models.tiny import random_init
    from matrix_llm.modes.ssl.evaluate import (
        balanced_subset,
        extract_features,
        knn_accuracy,
        linear_probe_accuracy,
        probe_solver,
        raw_pixels,
    )

    batches = {"batch_size": batch_size, "num_workers": num_workers}
    device = next(backbone.parameters()).device
    fresh = random_init(type(backbone), backbone.config, seed=seed, device=device)
    features = {
        name: [extract_features(model, rows, collator, **batches) for rows in (train, evalset)]
        for name, model in (("trained", backbone), ("random_init", fresh))
    }
    cap = len(train) if raw_pixels_max_train is None else raw_pixels_max_train
    subset = balanced_subset(train["label"], cap, seed) if cap < len(train) else None
    pixels = [raw_pixels(train.select(subset) if subset else train, collator, **batches)]
    pixels.append(raw_pixels(evalset, collator, **batches))
    if distributed.rank() != 0:
        return {}
    out: dict[str, Any] = {}
    for name, ((train_x, train_y), (test_x, test_y)) in features.items():
        out[f"probe_{name}"] = linear_probe_accuracy(train_x, train_y, test_x, test_y, device=device)
        out[f"knn_{name}"] = knn_accuracy(train_x, train_y, test_x, test_y)
    (train_x, train_y), (test_x, test_y) = pixels
    out["probe_raw_pixels"] = linear_probe_accuracy(train_x, train_y, test_x, test_y, device=device)
    out.update(
        linear_probe_solver=probe_solver(len(train)),
        raw_pixels_train_images=len(train_x),
        raw_pixels_features=train_x.shape[1],
    )
    return out


class SSLMode(Mode):
    """``matrix-llm ssl`` (:class:`~matrix_llm.modes.base.Mode`): its ``finish`` step saves
    ``OUTPUT_DIR/backbone/`` and, with labels and an eval split, runs the frozen-feature probes (on the first
    ``probe_max_train_samples`` images of a streamed training set)."""

    prog = PROG
    command = "ssl"
    objectives = ("ssl",)
    classes = (SSLModelArguments, SSLDataArguments, SSLConfig)
    objective_class = SSLObjective
    example = f"{PROG} --config demo/ssl.yaml --ssl_method mec"
    summary = "Train a vision backbone self-supervised (Matrix-SSL, MEC, SimCLR, Barlow Twins or M-MAE)."

    def check(self) -> list[str]:
        """An EMA teacher with sharded parameters (DeepSpeed ZeRO-3, FSDP) is refused before any model loads."""
        sharded = sharded_by(self.training_args)
        if not (METHODS[self.training_args.ssl_method].teacher and sharded):
            return []
        with_teacher = " / ".join(m.name for m in METHODS.values() if m.teacher)
        without = ", ".join(m.name for m in METHODS.values() if not m.teacher)
        message = (
            f"`{SHARDING_FIELD[sharded]}`: {sharded} partitions the EMA teacher's parameters, which the teacher "
            f"update reads whole; use DDP or DeepSpeed ZeRO-2 for {with_teacher}, or a method without a teacher "
            f"({without})"
        )
        return [message]

    def load_data(self) -> None:
        data_args = self.data_args
        if not data_args.streaming:
            self.train, self.evalset = build_data(data_args)
            self.sample = self.train
            return
        from matrix_llm.data.streaming import stream_splits

        names = {data_args.image_column: "image"}
        if data_args.label_column:
            names[data_args.label_column] = "label"
        default_labels = data_args.label_column == SSLDataArguments.label_column
        self.train, self.sample, self.evalset = stream_splits(
            data_args,
            self.training_args,
            names,
            optional=("label",) if default_labels else (),
            sample=data_args.probe_max_train_samples,
        )

    def build(self, objective: Any) -> Any:
        from matrix_llm.trainer import MatrixTrainer

        data_args, training_args = self.data_args, self.training_args
        self.labelled = "label" in self.sample.column_names  # a stream: its first rows
        num_classes = max(int(x) for x in self.sample["label"]) + 1 if self.labelled else 0
        model, self.collator, self.processor = build_model(
            self.model_args, data_args, training_args, num_classes
        )
        training_args.remove_unused_columns = False  # the collator reads the raw `image` column
        return MatrixTrainer(
            model=model,
            args=training_args,
            train_dataset=self.train,
            eval_dataset=self.evalset,
            data_collator=self.collator,
            objective=objective,
        )

    def card(self) -> RunCard:
        from matrix_llm.hub import CardResult

        name = self.model_args.model_name_or_path
        base = f"{name} (offline random init)" if self.model_args.is_tiny else name
        split = self.data_args.eval_split
        results = (
            CardResult(
                "probe_trained",
                "image-classification",
                "accuracy",
                "Linear-probe accuracy (frozen backbone, logistic regression)",
                split=split,
            ),
            CardResult(
                "knn_trained",
                "image-classification",
                "accuracy",
                "kNN accuracy (frozen backbone, DINO's weighted k=20, T=0.07)",
                split=split,
            ),
        )
        return RunCard(base_model=base, dataset=self.data_args.dataset_name, results=results)

    def finish(self, trainer: Any) -> dict[str, Any]:
        from matrix_llm.data.images import ImageCollator
        from matrix_llm.features import unwrap

        args = self.training_args
        backbone = unwrap(trainer.model).backbone
        measured: dict[str, Any] = {}
        if self.labelled and self.evalset is not None:  # every process encodes its shard of the images
            plain = ImageCollator(
                image_size=self.data_args.image_size,
                channels=self.collator.channels,
                processor=self.processor,
            )
            measured = probe_results(
                backbone,
                args.seed,
                self.sample,
                self.evalset,
                plain,
                raw_pixels_max_train=self.data_args.probe_max_train_samples,
                batch_size=args.per_device_eval_batch_size,
                num_workers=args.dataloader_num_workers,
            )
        if not trainer.is_world_process_zero():
            return {}
        folder = RunFolder(args.output_dir)
        if hasattr(backbone.config, "mask_ratio"):  # a ViT-MAE encoder: keep every patch as a backbone
            backbone.config.mask_ratio = 0.0
        backbone.save_pretrained(folder.backbone)
        self.processor.save_pretrained(folder.backbone)
        streamed = self.data_args.streaming  # the probes then fit on the stream's first rows
        results: dict[str, Any] = {"argv": self.argv, "train_size": None if streamed else len(self.train)}
        results.update(streamed=streamed, images_probes_fit_on=len(self.sample), **measured)
        folder.write_results(results)
        numbers = {k: v for k, v in results.items() if k.startswith(("probe_", "knn_"))}
        accuracy = ", ".join(f"{k} {v:.4f}" for k, v in numbers.items())
        details = [f"Frozen-feature accuracy on `{self.data_args.eval_split}`: {accuracy}"] if numbers else []
        return {**numbers, "details": details}

    def report(self, metrics: dict[str, Any]) -> str:
        from matrix_llm.modes.ssl.evaluate import RAW_PIXELS_SIDE

        args, data_args = self.training_args, self.data_args
        results = RunFolder(args.output_dir).read_results()
        preset = f" ({args.ssl_preset})" if args.ssl_method == "matrix_ssl" else ""
        lines = [
            f"# Self-supervised run: {args.ssl_method}{preset}",
            "",
            (
                f"Backbone `{self.model_args.model_name_or_path}`, data `{data_args.dataset_name}` "
                f"({data_args.train_split} -> {data_args.eval_split}), "
                + (
                    f"streamed for {args.max_steps} steps (the probes fit on its first "
                    f"{results['images_probes_fit_on']} images)"
                    if results.get("streamed")
                    else f"{results.get('train_size')} training images"
                )
                + f", seed {args.seed}."
            ),
            "",
        ]
        if "probe_trained" in results:
            lines += ["| frozen features | linear probe | kNN (k=20) |", "|---|---|---|"]
            lines += [
                f"| trained backbone | {results['probe_trained']:.4f} | {results['knn_trained']:.4f} |",
                (
                    f"| same architecture, random init | {results['probe_random_init']:.4f} | "
                    f"{results['knn_random_init']:.4f} |"
                ),
                f"| raw pixels | {results['probe_raw_pixels']:.4f} | |",
                "",
            ]
            pixels = results["raw_pixels_train_images"]
            subset = (
                f"a seeded class-balanced subset of {pixels} of the {results['images_probes_fit_on']} training "
                "images (`probe_max_train_samples`)"
                if pixels < results["images_probes_fit_on"]
                else f"all {pixels} training images the probes fit on"
            )
            side = f"{RAW_PIXELS_SIDE}x{RAW_PIXELS_SIDE}"
            lines += [
                (
                    f"Raw pixels: {subset}, {results['raw_pixels_features']} features each (images above {side} "
                    f"area-downsampled). Linear probes: {results['linear_probe_solver']} logistic regression "
                    "(C = 1, standardised features)."
                ),
                "",
            ]
            gain = 100 * (results["probe_trained"] - results["probe_random_init"])
            lines += [f"Linear probe: {gain:+.1f} points over the random-init backbone.", ""]
        return write_report(args.output_dir, self.command, lines, results)


def parse_args(argv: list[str] | None = None) -> tuple[SSLModelArguments, SSLDataArguments, SSLConfig]:
    """``[--config FILE.yaml] [--field value ...]`` -> the self-supervised mode's three dataclasses.

    Raises:
        ConfigError: also for DeepSpeed ZeRO-3 with an EMA teacher (refused before any model loads).
    """
    return SSLMode().parse(argv)


def main(argv: list[str] | None = None) -> int:
    """``matrix-llm ssl [--config FILE.yaml] [--field value ...]``; returns the exit status."""
    return run_mode(SSLMode(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

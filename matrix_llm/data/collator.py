"""Padding collator for completion-only causal-LM batches (the output of ``gsm8k.tokenize_dataset``).

Labels come with the examples (``-100`` on the prompt, the completion and its EOS kept), so this collator only
pads: ``input_ids`` with the pad id, ``attention_mask`` with 0 and ``labels`` with ``-100``. Because the labels
are carried explicitly and never derived from ``input_ids != pad_token_id``, EOS stays in the loss even when a
tokenizer's pad token equals its EOS token (trl#1623). This replaces TRL's removed
``DataCollatorForCompletionOnlyLM`` (trl#3827) without searching for a response template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .labels import IGNORE_INDEX

__all__ = ["CompletionCollator"]


class CompletionCollator:
    """Pad a list of ``{"input_ids", "attention_mask"?, "labels"?}`` examples into a batch of tensors.

    Args:
        tokenizer: supplies ``pad_token_id``; a tokenizer without a pad token raises ``ValueError``.
        pad_to_multiple_of: round the padded length up to a multiple of this (e.g. 8 for tensor cores).
        padding_side: ``"right"`` (training) or ``"left"`` (batched generation).

    Returns ``{"input_ids", "attention_mask"[, "labels"]}`` as ``torch.long`` tensors of shape
    ``(batch, length)``. ``labels`` is present iff every example has it; other keys are ignored.
    """

    def __init__(self, tokenizer: Any, *, pad_to_multiple_of: int | None = None, padding_side: str = "right"):
        pad_id = getattr(tokenizer, "pad_token_id", None)
        if pad_id is None:
            raise ValueError(
                "CompletionCollator needs a tokenizer with a pad token; tokenizer.pad_token is None. "
                "Set tokenizer.pad_token to a token distinct from eos, e.g. an unused reserved token "
                "(tokenizer.pad_token = '<|reserved_special_token_0|>' for Llama 3) or a new one "
                "(tokenizer.add_special_tokens({'pad_token': '<pad>'}) then model.resize_token_embeddings(len(tokenizer)))"
            )
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left'; got {padding_side!r}")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(
                f"pad_to_multiple_of must be a positive integer or None; got {pad_to_multiple_of}"
            )
        self.pad_token_id = int(pad_id)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding_side = padding_side

    def _pad(self, seq: Sequence[int], length: int, value: int) -> list[int]:
        fill = [value] * (length - len(seq))
        return list(seq) + fill if self.padding_side == "right" else fill + list(seq)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        if not features:
            raise ValueError("CompletionCollator got an empty list of examples")
        ids = [list(f["input_ids"]) for f in features]
        masks = [
            list(f["attention_mask"]) if "attention_mask" in f else [1] * len(i)
            for f, i in zip(features, ids, strict=True)
        ]
        has_labels = ["labels" in f for f in features]
        if any(has_labels) and not all(has_labels):
            raise ValueError("some examples have 'labels' and some do not; tokenise them the same way")
        labels = [list(f["labels"]) for f in features] if all(has_labels) else None
        for n, (i, m) in enumerate(zip(ids, masks, strict=True)):
            if len(m) != len(i) or (labels is not None and len(labels[n]) != len(i)):
                raise ValueError(
                    f"example {n}: input_ids, attention_mask and labels must have the same length; got "
                    f"{len(i)}, {len(m)}, {len(labels[n]) if labels is not None else '-'}"
                )
        length = max(len(i) for i in ids)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {
            "input_ids": torch.tensor(
                [self._pad(i, length, self.pad_token_id) for i in ids], dtype=torch.long
            ),
            "attention_mask": torch.tensor([self._pad(m, length, 0) for m in masks], dtype=torch.long),
        }
        if labels is not None:
            batch["labels"] = torch.tensor(
                [self._pad(lab, length, IGNORE_INDEX) for lab in labels], dtype=torch.long
            )
        return batch

"""Plain text data for the modes that read whole texts (``matrix-llm analyze`` on language models, text
classification): loading with an optional label column, and the collator that tokenises and pads.

Sources: ``synthetic`` (the offline synthetic GSM8K-style problems), ``modular-addition`` (:func:`modular_addition`,
the grokking task; its config :func:`modular_config`), a local ``.jsonl`` / ``.json`` /
``.parquet`` file or a directory holding ``{split}.jsonl``, or a Hub dataset. The text is the ``text_column``
when the rows have it; otherwise rows in a training format (GSM8K / MetaMathQA, TRL prompt-completion,
``text``) become ``prompt + completion`` with the ``qa`` template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .gsm8k.loading import load_rows, standardise_fields
from .gsm8k.prompts import format_example
from .labels import IGNORE_INDEX

__all__ = [
    "TextCollator",
    "count_truncated",
    "load_text_dataset",
    "modular_addition",
    "modular_config",
    "number_code",
]

SYNTHETIC_ROWS = 512  # rows of `synthetic` per split
MODULAR_TRAIN_FRACTION = (
    0.5  # Power et al. (2022, Fig. 1): the more of the table is trained on, the sooner it generalises
)


def number_code(n: int) -> str:
    """``n`` as a two-letter word (``0 -> "aa"``, ``27 -> "bb"``): the tiny tokenizers split digits, a letter code
    becomes one token per number, the symbols of the grokking task."""
    if not 0 <= n < 26 * 26:
        raise ValueError(f"number_code: {n} is outside [0, 676)")
    return chr(97 + n // 26) + chr(97 + n % 26)


def modular_addition(
    split: str = "train", *, modulus: int = 113, train_fraction: float = MODULAR_TRAIN_FRACTION, seed: int = 0
) -> dict[str, list]:
    """Every pair ``(a, b)`` of ``Z_p x Z_p`` as ``{"text": "<a> plus <b>", "label": (a + b) mod p}``, split at
    random (``seed``) into ``train_fraction`` of the table for ``train`` and the rest for ``test`` (Power et al.,
    2022, "Grokking"). Numbers are :func:`number_code` words."""
    import numpy as np

    if split not in ("train", "test", "validation"):
        raise ValueError(f"modular-addition: split {split!r}; it has `train` and `test`")
    if not 2 <= modulus <= 26 * 26 or not 0 < train_fraction < 1:
        raise ValueError(
            f"modular-addition: modulus in [2, 676] and train_fraction in (0, 1); got {modulus}, "
            f"{train_fraction}"
        )
    pairs = np.random.default_rng(seed).permutation(modulus * modulus)
    cut = int(round(train_fraction * len(pairs)))
    chosen = np.sort(pairs[:cut] if split == "train" else pairs[cut:])
    a, b = chosen // modulus, chosen % modulus
    return {
        "text": [f"{number_code(int(x))} plus {number_code(int(y))}" for x, y in zip(a, b, strict=True)],
        "label": [int(v) for v in (a + b) % modulus],
    }


def modular_config(config: str | None) -> tuple[int, float]:
    """``modular-addition``'s ``dataset_config``: ``"P"`` (the modulus) or ``"P:F"`` (and the share ``F`` of the
    table trained on); ``None`` = ``113`` at :data:`MODULAR_TRAIN_FRACTION`."""
    text = "113" if config is None else str(config)
    modulus, _, fraction = text.partition(":")
    try:
        return int(modulus), float(fraction) if fraction else MODULAR_TRAIN_FRACTION
    except ValueError:
        raise ValueError(
            f"modular-addition: dataset_config is the modulus or modulus:train_fraction (e.g. 113:0.3); got {text!r}"
        ) from None


def load_text_dataset(
    source: str,
    split: str = "train",
    *,
    config: str | None = None,
    text_column: str = "text",
    label_column: str | None = None,
) -> Any:
    """A ``datasets.Dataset`` with a ``text`` column (and ``label``, ints, when ``label_column`` is given).

    Raises:
        ValueError: no ``text_column`` and no training format among the columns, a missing ``label_column``
            (the columns found are listed), or an empty text.
    """
    import datasets

    if source == "synthetic":
        from .synthetic import synthetic_dataset

        ds = synthetic_dataset(SYNTHETIC_ROWS, split="test" if split in ("test", "validation") else "train")
    elif source == "modular-addition":
        modulus, fraction = modular_config(config)
        ds = datasets.Dataset.from_dict(modular_addition(split, modulus=modulus, train_fraction=fraction))
    else:
        ds = load_rows(source, split, config)
    columns = list(ds.column_names)
    if label_column is not None and label_column not in columns:
        raise ValueError(f"{source}: no label column {label_column!r}; the columns are {columns}")
    if text_column in columns:
        texts = list(ds[text_column])
    else:
        try:
            rows = standardise_fields(ds, source=str(source), any_format=True)
        except ValueError as e:
            raise ValueError(
                f"{source}: no text column {text_column!r} and no training format ({e})"
            ) from None
        texts = ["".join(format_example(row, template="qa")) for row in rows]
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{source}: row {i} has an empty or non-string text ({text!r:.40})")
    data = {"text": texts}
    if label_column is not None:
        data["label"] = [int(x) for x in ds[label_column]]
    return datasets.Dataset.from_dict(data)


def count_truncated(tokenizer: Any, texts: Sequence[str], max_length: int) -> int:
    """How many of ``texts`` are longer than ``max_length`` tokens (and will be cut by :class:`TextCollator`)."""
    return sum(len(ids) > max_length for ids in tokenizer(list(texts))["input_ids"])


class TextCollator:
    """``{"text"[, "label"]}`` rows -> ``input_ids`` / ``attention_mask`` (padded, truncated to ``max_length``:
    :func:`count_truncated` says how many) and ``labels``: the row labels when the rows have them, else with
    ``causal=True`` the input ids with padding set to ``-100`` (next-token targets)."""

    def __init__(self, tokenizer: Any, *, max_length: int = 512, causal: bool = False) -> None:
        if tokenizer.pad_token is None:  # decoder tokenizers often have none: pad with EOS (masked anyway)
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer, self.max_length, self.causal = tokenizer, max_length, causal

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        if not rows:
            raise ValueError("TextCollator: empty batch")
        texts = [r["text"] for r in rows]
        batch = dict(
            self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
        )
        if "label" in rows[0]:
            batch["labels"] = torch.tensor([int(r["label"]) for r in rows], dtype=torch.long)
        elif self.causal:
            batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        return batch

"""GSM8K loading (Hub or local files, GSM8K or MetaMathQA fields) and completion-only tokenisation."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports stay out of the scoring path
    from datasets import Dataset

from ..labels import IGNORE_INDEX
from .prompts import OPTIONAL_COLUMNS, ROW_FORMATS, check_template, conversation, format_segments, row_format

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------

_FIELD_SETS = (("question", "answer"), ("query", "response"))  # GSM8K, MetaMathQA
_LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def _local_file(source: str, split: str) -> Path | None:
    path = Path(source).expanduser()
    if path.is_dir():
        for suffix in _LOCAL_BUILDERS:
            candidate = path / f"{split}{suffix}"
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"no {split}.jsonl, {split}.json or {split}.parquet in the directory {str(path)!r}"
        )
    if path.suffix in _LOCAL_BUILDERS:
        if not path.is_file():
            raise FileNotFoundError(f"GSM8K data file not found: {str(path)!r}")
        return path
    return None


def _check_local_file(path: Path) -> None:
    """Name the file, the row and the problem before ``datasets`` does (it raises a bare ``StopIteration`` for an
    empty file and a generic ``DatasetGenerationError`` for a malformed JSON Lines row)."""
    import json

    if path.stat().st_size == 0:
        raise ValueError(
            f"{path}: the data file is empty; expected one JSON object per line with question/answer"
        )
    if path.suffix != ".jsonl":
        return
    with open(path, encoding="utf-8") as f:
        rows = 0
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{path}, row {number}: not valid JSON ({e.msg} at column {e.colno}): "
                    f"{line.strip()[:80]!r}"
                ) from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"{path}, row {number}: expected a JSON object (e.g. with question/answer fields); got "
                    f"{type(row).__name__}"
                )
            rows += 1
    if rows == 0:
        raise ValueError(f"{path}: the data file has no rows (only blank lines)")


def load_rows(source: str, split: str = "train", config: str | None = None) -> Dataset:
    """The rows of a local ``.jsonl`` / ``.json`` / ``.parquet`` file, a directory holding ``{split}.jsonl`` (or
    ``.json`` / ``.parquet``), or a Hub dataset, with all their columns (malformed local files are named)."""
    import datasets

    local = _local_file(source, split)
    if local is not None:
        _check_local_file(local)
        return datasets.load_dataset(_LOCAL_BUILDERS[local.suffix], data_files=str(local), split="train")
    return datasets.load_dataset(source, config, split=split)


def load_gsm8k(source: str = "openai/gsm8k", *, split: str = "train", config: str | None = "main") -> Dataset:
    """Load GSM8K-style data as a ``datasets.Dataset`` with exactly the columns ``question`` and ``answer``.

    Args:
        source: a Hub dataset id (default ``openai/gsm8k``), a local ``.jsonl``/``.json``/``.parquet`` file,
            or a local directory holding ``{split}.jsonl`` (or ``.json``/``.parquet``).
        split: the split to load (Hub, or the file name in a directory; ignored for a single file).
        config: the Hub config (``"main"`` for GSM8K; pass ``None`` for datasets without configs such as
            ``meta-math/MetaMathQA``). Ignored for local files.

    Rows may use GSM8K's fields (``question``, ``answer``) or MetaMathQA's (``query``, ``response``, renamed);
    other columns are dropped. Anything else raises ``ValueError`` naming the fields found and expected.
    """
    return standardise_fields(load_rows(source, split, config), source=str(source), any_format=False)


def load_sft_data(
    source: str, *, split: str = "train", config: str | None = "main", dataset_format: str | None = None
) -> Dataset:
    """Load training data in any of the row formats of :data:`~matrix_llm.data.gsm8k.ROW_FORMATS`: GSM8K
    (``question``/``answer``, or MetaMathQA's ``query``/``response``, renamed), conversational ``messages``,
    ShareGPT ``conversations``, Alpaca ``instruction``/``input``/``output``, TRL's ``prompt``/``completion`` (texts
    or message lists), or plain ``text``. The columns of the format (``dataset_format``, else the first found) are
    kept, the others dropped. Same sources and arguments as :func:`load_gsm8k`."""
    ds = load_rows(source, split, config)
    return standardise_fields(ds, source=str(source), any_format=True, dataset_format=dataset_format)


def standardise_fields(
    ds: Dataset, *, source: str, any_format: bool, dataset_format: str | None = None
) -> Dataset:
    """Keep the columns of GSM8K (MetaMathQA's renamed) or, with ``any_format``, of the format
    (:func:`sft_columns`)."""
    names = sft_columns(
        list(ds.column_names), source=source, any_format=any_format, dataset_format=dataset_format
    )
    ds = ds.select_columns(list(names))
    renamed = {old: new for old, new in names.items() if old != new}
    return ds.rename_columns(renamed) if renamed else ds


def sft_columns(
    columns: list[str], *, source: str, any_format: bool = True, dataset_format: str | None = None
) -> dict[str, str]:
    """``{column: name in the row format}`` of the columns a dataset with ``columns`` trains on: those of
    ``dataset_format`` (a :data:`ROW_FORMATS` key) when given; else GSM8K's ``question``/``answer`` (MetaMathQA's
    ``query``/``response`` renamed to them) or, with ``any_format``, those of the first :data:`ROW_FORMATS` entry
    found (with the optional columns it reads, Alpaca's ``input``); ``ValueError`` naming the columns found and
    expected otherwise."""
    if dataset_format is not None:
        if dataset_format not in ROW_FORMATS:
            raise ValueError(f"dataset_format must be one of {sorted(ROW_FORMATS)}; got {dataset_format!r}")
        missing = [c for c in ROW_FORMATS[dataset_format] if c not in columns]
        if missing:
            raise ValueError(
                f"{source}: dataset_format {dataset_format!r} needs the columns {missing}; found {columns}"
            )
        kind = dataset_format
    else:
        for q, a in _FIELD_SETS:
            if q in columns and a in columns:
                return {q: "question", a: "answer"}
        kind = row_format(columns) if any_format else None
    if kind is not None:
        optional = [c for c in OPTIONAL_COLUMNS.get(kind, ()) if c in columns]
        return {c: c for c in (*ROW_FORMATS[kind], *optional)}
    expected = " or ".join(f"({q!r}, {a!r})" for q, a in _FIELD_SETS)
    if any_format:
        expected += ", " + ", ".join(
            str(cols) for name, cols in ROW_FORMATS.items() if name != "question_answer"
        )
    raise ValueError(
        f"{source}: expected the fields {expected}; found {columns}. "
        "Rename the columns, e.g. ds.rename_columns({'problem': 'question', 'solution': 'answer'})"
    )


# --------------------------------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------------------------------


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _bos_prefix(tokenizer: Any, prompt: str, add_bos: bool | None) -> list[int]:
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if add_bos is False or bos_id is None:
        return []
    bos = getattr(tokenizer, "bos_token", None)
    if bos and prompt.startswith(bos):  # a chat template that writes the BOS text itself
        return []
    return [bos_id]


def encode_prompt(prompt: str, tokenizer: Any, *, add_bos: bool | None = None) -> list[int]:
    """Token ids of a prompt exactly as training sees it: ``[BOS] + tokens(prompt)``.

    Text is tokenised with ``add_special_tokens=False`` (so a tokenizer that appends EOS or adds BOS itself
    cannot double them), then BOS is prepended when the tokenizer defines one (``add_bos=None``), unless the
    prompt text already starts with the BOS token (chat templates that render it). ``add_bos`` forces it on or
    off. Use this for generation so evaluation prompts are tokenised like training prompts.
    """
    return _bos_prefix(tokenizer, prompt, add_bos) + _encode(tokenizer, prompt)


def _completion_ids(
    tokenizer: Any, prompt: str, prompt_ids: list[int], completion: str
) -> tuple[list[int], bool]:
    """Completion tokens as the tokenizer splits ``prompt + completion``; falls back to a separate encode.

    Returns ``(ids, merged)`` where ``merged`` says the joint tokenisation crossed the boundary.
    """
    joint = _encode(tokenizer, prompt + completion)
    n = len(prompt_ids)
    if joint[:n] == prompt_ids and len(joint) > n:
        return joint[n:], False
    return _encode(tokenizer, completion), True


def tokenize_example(
    example: Mapping[str, str],
    tokenizer: Any,
    *,
    template: str,
    max_length: int,
    add_bos: bool | None = None,
) -> dict[str, Any]:
    """Tokenise one training row (any :data:`~matrix_llm.data.gsm8k.ROW_FORMATS`; ``template`` applies to
    ``question``/``answer`` rows) for completion-only training.

    Layout: ``[BOS] prompt_tokens completion_tokens EOS``; ``labels`` are ``-100`` on BOS and the prompt and
    equal to ``input_ids`` on the completion **and its EOS** (the EOS id is appended as an id, so it is kept
    in the labels even when ``pad_token == eos_token``).

    The boundary is exact: the prompt is tokenised on its own (:func:`encode_prompt`, the same ids generation
    starts from) and the completion tokens are the tail of the tokenisation of ``prompt + completion`` when
    that tokenisation starts with the prompt's ids (the natural split, e.g. ``"▁Natalia"`` for SentencePiece,
    ``"ĠNatalia"`` for byte-level BPE); if the tokenizer merges across the boundary, the completion is
    tokenised separately and concatenated (``boundary_merged=True``).

    Sequences longer than ``max_length`` are cut on the right and flagged ``truncated=True`` (with
    ``num_tokens`` the untruncated length); :func:`tokenize_dataset` counts, reports and by default drops them.
    Raises ``ValueError`` on an empty answer or a tokenizer without EOS.
    """
    eos_id = getattr(tokenizer, "eos_token_id", None)
    if eos_id is None:
        raise ValueError("the tokenizer has no eos_token; set tokenizer.eos_token before tokenising")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2; got {max_length}")
    segments = format_segments(example, template=template, tokenizer=tokenizer)
    if conversation(example) is not None:
        input_ids, labels, merged = _segment_ids(segments, tokenizer, add_bos)
        return _cut(input_ids, labels, max_length, merged)
    (prompt, _), (completion, _) = segments
    prompt_ids = encode_prompt(prompt, tokenizer, add_bos=add_bos)
    text_prompt_ids = prompt_ids[len(_bos_prefix(tokenizer, prompt, add_bos)) :]
    completion_ids, merged = _completion_ids(tokenizer, prompt, text_prompt_ids, completion)
    completion_ids = completion_ids + [eos_id]
    input_ids = prompt_ids + completion_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids
    return _cut(input_ids, labels, max_length, merged)


def _cut(input_ids: list[int], labels: list[int], max_length: int, merged: bool) -> dict[str, Any]:
    num_tokens = len(input_ids)
    truncated = num_tokens > max_length
    if truncated:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": labels,
        "num_tokens": num_tokens,
        "truncated": truncated,
        "boundary_merged": merged,
    }


def _segment_ids(
    segments: list[tuple[str, bool]], tokenizer: Any, add_bos: bool | None
) -> tuple[list[int], list[int], bool]:
    """``(input_ids, labels, merged)`` of a rendered conversation: the whole text tokenised once, a token learned
    when it starts inside a learned segment; no EOS is appended (the chat template writes each turn's end, which is
    learned with the turn). ``merged``: a token straddles a segment boundary (it is then learned if it starts in a
    learned segment)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("conversation rows need a fast tokenizer (its offsets cut the learned turns)")
    text = "".join(t for t, _ in segments)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    bounds, start = [], 0
    for piece, learned in segments:
        bounds.append((start, start + len(piece), learned))
        start += len(piece)
    ids, labels, merged = list(encoded["input_ids"]), [], False
    for token, (begin, end) in zip(ids, encoded["offset_mapping"], strict=True):
        lo, hi, learned = next(b for b in bounds if b[0] <= begin < b[1]) if begin < len(text) else bounds[-1]
        merged = merged or end > hi
        labels.append(token if learned else IGNORE_INDEX)
    bos = _bos_prefix(tokenizer, text, add_bos)
    return bos + ids, [IGNORE_INDEX] * len(bos) + labels, merged


@dataclass
class TokenizeStats:
    """What :func:`tokenize_dataset` did: counts of kept, truncated and dropped examples."""

    num_examples: int
    num_kept: int
    num_truncated: int  # longer than max_length (their '#### N' line and EOS would be cut)
    num_dropped: int
    num_boundary_merged: int
    max_length: int
    longest: int  # untruncated length of the longest example, tokens

    def summary(self) -> str:
        return (
            f"{self.num_kept}/{self.num_examples} examples kept; {self.num_truncated} longer than "
            f"max_length={self.max_length} (longest {self.longest} tokens), {self.num_dropped} dropped"
        )


_HELPER_COLUMNS = ("num_tokens", "truncated", "boundary_merged")


def keeps(labels: list[int], truncated: bool, drop_truncated: bool) -> bool:
    """Whether a tokenised example is trained on: it has a label left, and is not cut when ``drop_truncated``."""
    if truncated and drop_truncated:
        return False
    return any(label != IGNORE_INDEX for label in labels)


class TokenizedRows:
    """``row -> tokenised example`` of a stream (:class:`~matrix_llm.data.streaming.StreamingRows`): the columns
    ``names`` (:func:`sft_columns`) renamed, :func:`tokenize_example`, the example dropped (``None``) where
    :func:`tokenize_dataset` drops it (:func:`keeps`); ``input_ids``, ``attention_mask`` and ``labels`` only."""

    def __init__(
        self, names: dict[str, str], tokenizer: Any, *, template: str, max_length: int, drop_truncated: bool
    ) -> None:
        check_template(template)
        self.names, self.tokenizer, self.template = names, tokenizer, template
        self.max_length, self.drop_truncated = max_length, drop_truncated

    def __call__(self, row: Mapping[str, Any]) -> dict[str, Any] | None:
        example = {new: row[old] for old, new in self.names.items()}
        out = tokenize_example(example, self.tokenizer, template=self.template, max_length=self.max_length)
        if not keeps(out["labels"], out["truncated"], self.drop_truncated):
            return None
        return {k: v for k, v in out.items() if k not in _HELPER_COLUMNS}


def tokenize_dataset(
    ds: Dataset,
    tokenizer: Any,
    *,
    template: str,
    max_length: int,
    num_proc: int | None = None,
    drop_truncated: bool = True,
    add_bos: bool | None = None,
) -> tuple[Dataset, TokenizeStats]:
    """Tokenise a dataset of one row format (GSM8K ``question``/``answer``, ``messages``,
    ``prompt``/``completion`` or ``text``) with :func:`tokenize_example`; returns ``(dataset, stats)``.

    The result has the columns ``input_ids``, ``attention_mask`` and ``labels`` only. Examples longer than
    ``max_length`` are counted and, with ``drop_truncated=True`` (default), dropped: right-truncation would
    cut the ``#### N`` line and EOS, teaching the model to ramble. With ``drop_truncated=False`` they are kept
    truncated. Either way a warning gives the count. Examples whose prompt alone fills ``max_length`` have no
    label left and are always dropped. An empty answer raises ``ValueError`` naming the row.
    """
    check_template(template)
    kind = row_format(ds.column_names)
    if kind is None:
        raise ValueError(
            f"tokenize_dataset expects the columns of one of {ROW_FORMATS}; found {ds.column_names} "
            "(load_gsm8k / load_sft_data rename MetaMathQA's ('query', 'response'))"
        )

    def _one(example: Mapping[str, str], idx: int) -> dict[str, Any]:
        try:
            return tokenize_example(
                example, tokenizer, template=template, max_length=max_length, add_bos=add_bos
            )
        except ValueError as err:
            first = ROW_FORMATS[kind][0]
            raise ValueError(f"row {idx}: {err} ({first}: {str(example.get(first))[:60]!r})") from err

    out = ds.map(
        _one,
        with_indices=True,
        remove_columns=list(ds.column_names),
        num_proc=num_proc,
        desc=f"Tokenizing ({kind}" + (f", {template} template)" if kind == "question_answer" else ")"),
    )
    num_tokens = out["num_tokens"]
    truncated = out["truncated"]
    num_truncated = int(sum(truncated))
    longest = max(num_tokens, default=0)

    kept = out.filter(
        lambda labels, trunc: keeps(labels, trunc, drop_truncated),
        input_columns=["labels", "truncated"],
        num_proc=num_proc,
        desc="Dropping truncated",
    )
    kept = kept.remove_columns(list(_HELPER_COLUMNS))
    stats = TokenizeStats(
        num_examples=len(out),
        num_kept=len(kept),
        num_truncated=num_truncated,
        num_dropped=len(out) - len(kept),
        num_boundary_merged=int(sum(out["boundary_merged"])),
        max_length=max_length,
        longest=longest,
    )
    if stats.num_boundary_merged:
        logger.warning(
            "%d examples: the tokenizer merged tokens across the prompt/completion boundary; their completion "
            "was tokenised separately",
            stats.num_boundary_merged,
        )
    if num_truncated:
        action = "dropped" if drop_truncated else "kept truncated (their '#### N' line and EOS are cut)"
        logger.warning(
            "%d of %d examples are longer than max_length=%d (longest: %d tokens) and were %s",
            num_truncated,
            len(out),
            max_length,
            longest,
            action,
        )
    if len(out) and not len(kept):
        raise ValueError(
            f"no example left to train on: {stats.summary()}; raise max_length (the longest example has "
            f"{longest} tokens) or keep them truncated (`--drop_truncated false`)"
        )
    return kept, stats

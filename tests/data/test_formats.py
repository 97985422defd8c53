"""Training rows in the formats TRL users bring: conversational `messages`, `prompt`/`completion`, plain `text`
(besides GSM8K's question/answer): loading, completion-only labels, and `matrix-llm sft` on each.

    .venv/bin/python -m pytest tests/data/test_formats.py -q
"""

from __future__ import annotations

import copy
import json

import pytest

from matrix_llm.data import IGNORE_INDEX, load_sft_data, tokenize_dataset, tokenize_example
from matrix_llm.data.gsm8k import load_gsm8k, row_format

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

ROWS = {
    "prompt_completion": [
        {"prompt": "Q: 2 + 3 = ?\nA:", "completion": " 5", "id": 1},
        {"prompt": "Q: 4 + 4 = ?\nA:", "completion": " 8", "id": 2},
    ],
    "text": [{"text": "Tom has 12 apples and buys 35 more: 47."}, {"text": "A box holds 6 pens."}],
    "messages": [
        {"messages": [{"role": "user", "content": "2 + 3?"}, {"role": "assistant", "content": "5"}]},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "4 + 4?"},
                {"role": "assistant", "content": "8"},
            ]
        },
    ],
}


@pytest.fixture
def chat_tokenizer(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _write(tmp_path, kind):
    path = tmp_path / f"{kind}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS[kind]))
    return path


@pytest.mark.parametrize("kind", sorted(ROWS))
def test_load_sft_data_keeps_the_format_columns(tmp_path, kind):
    ds = load_sft_data(str(_write(tmp_path, kind)))
    assert row_format(ds.column_names) == kind and "id" not in ds.column_names
    with pytest.raises(ValueError, match="expected the fields"):
        load_gsm8k(str(_write(tmp_path, kind)))  # GSM8K evaluation still needs question/answer


def _labelled_text(tokenizer, ids, labels):
    return tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX])


def test_prompt_completion_learns_the_completion_only(tiny_tokenizer):
    out = tokenize_example(ROWS["prompt_completion"][0], tiny_tokenizer, template="qa", max_length=64)
    learned = _labelled_text(tiny_tokenizer, out["input_ids"], out["labels"])
    assert learned.startswith(" 5") and "Q:" not in learned and learned.endswith(tiny_tokenizer.eos_token)


def test_text_learns_every_token(tiny_tokenizer):
    out = tokenize_example(ROWS["text"][0], tiny_tokenizer, template="qa", max_length=64)
    learned = _labelled_text(tiny_tokenizer, out["input_ids"], out["labels"])
    assert learned.replace(tiny_tokenizer.eos_token, "") == ROWS["text"][0]["text"]


def test_messages_learn_the_last_assistant_turn_only(chat_tokenizer):
    out = tokenize_example(ROWS["messages"][1], chat_tokenizer, template="qa", max_length=128)
    learned = _labelled_text(chat_tokenizer, out["input_ids"], out["labels"])
    assert learned.startswith("8<|end|>") and "4 + 4" not in learned and "Be brief" not in learned


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "last message must be the assistant"),
        ({"prompt": "x", "completion": "  "}, "completion non-empty"),
        ({"text": ""}, "non-empty string"),
    ],
)
def test_bad_rows_are_named(chat_tokenizer, row, message):
    with pytest.raises(ValueError, match=message):
        tokenize_example(row, chat_tokenizer, template="qa", max_length=64)


def test_messages_without_a_chat_template_say_so(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        tokenize_example(ROWS["messages"][0], tok, template="qa", max_length=64)


def test_tokenize_dataset_names_the_row(tmp_path, tiny_tokenizer):
    ds = load_sft_data(str(_write(tmp_path, "text")))
    tokenized, stats = tokenize_dataset(ds, tiny_tokenizer, template="qa", max_length=64)
    assert stats.num_kept == 2 and set(tokenized.column_names) == {"input_ids", "attention_mask", "labels"}


@pytest.mark.parametrize("kind", sorted(ROWS))
def test_sft_trains_on_each_format(tmp_path, kind):
    """`matrix-llm sft` end to end on a local file of that format (tiny model, whose tokenizer has a chat
    template, CE + MCE)."""
    from conftest import SFT_TINY as TINY

    from matrix_llm.modes.lm import command as sft

    rows = ROWS[kind] * 8
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = [
        *TINY,
        "--dataset_name",
        str(path),
        "--eval_split",
        "null",
        "--output_dir",
        str(tmp_path / "out"),
        "--max_steps",
        "2",
    ]
    assert sft.main(argv) == 0
    logs = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    assert any("matrix_loss" in log for log in logs)

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

MULTI_TURN = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "2 + 3?"},
    {"role": "assistant", "content": "5"},
    {"role": "user", "content": "times 2?"},
    {"role": "assistant", "content": "10"},
]
SPEAKERS = {"system": "system", "user": "human", "assistant": "gpt"}

ROWS = {
    "sharegpt": [
        {"conversations": [{"from": SPEAKERS[m["role"]], "value": m["content"]} for m in MULTI_TURN]},
        {"conversations": [{"from": "human", "value": "4 + 4?"}, {"from": "gpt", "value": "8"}]},
    ],
    "alpaca": [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {"instruction": "What is 4 + 4?", "input": "", "output": "8"},
    ],
    "conversational": [
        {"prompt": MULTI_TURN[:4], "completion": MULTI_TURN[4:]},
        {
            "prompt": [{"role": "user", "content": "4 + 4?"}],
            "completion": [{"role": "assistant", "content": "8"}],
        },
    ],
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


FORMAT = {kind: kind for kind in ROWS} | {
    "conversational": "prompt_completion"
}  # the format's ROW_FORMATS name


@pytest.mark.parametrize("kind", sorted(ROWS))
def test_load_sft_data_keeps_the_format_columns(tmp_path, kind):
    ds = load_sft_data(str(_write(tmp_path, kind)))
    assert row_format(ds.column_names) == FORMAT[kind] and "id" not in ds.column_names
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


def _runs(tokenizer, ids, labels):
    """The learned and the unlearned texts, each contiguous run of tokens decoded on its own."""
    runs, current, state = {True: [], False: []}, [], None
    for token, label in [*zip(ids, labels, strict=True), (None, None)]:
        learned = label is not None and label != IGNORE_INDEX
        if current and (token is None or learned != state):
            runs[state].append(tokenizer.decode(current))
            current = []
        if token is not None:
            current.append(token)
            state = learned
    return runs


@pytest.mark.parametrize(
    ("row", "learned"),
    [
        ({"messages": MULTI_TURN}, ["5<|end|>\n", "10<|end|>\n"]),
        (ROWS["sharegpt"][0], ["5<|end|>\n", "10<|end|>\n"]),
        (ROWS["conversational"][0], ["10<|end|>\n"]),  # the completion's turn only, as TRL
    ],
    ids=["messages", "sharegpt", "conversational"],
)
def test_every_assistant_turn_of_a_conversation_is_learned(chat_tokenizer, row, learned):
    """The hand-built expectation: the system prompt and the user turns (with the template's role headers) are not
    learned, each assistant turn is, with the end-of-turn the template writes after it; no EOS is appended.
    Mutation caught: only the last assistant turn learned."""
    out = tokenize_example(row, chat_tokenizer, template="qa", max_length=256)
    runs = _runs(chat_tokenizer, out["input_ids"], out["labels"])
    assert runs[True] == learned
    unlearned = [
        "<s><|system|>Be brief.<|end|>\n<|user|>2 + 3?<|end|>\n<|assistant|>",
        "<|user|>times 2?<|end|>\n<|assistant|>",
    ]
    if len(learned) == 1:
        unlearned = [unlearned[0] + "5<|end|>\n" + unlearned[1]]
    assert runs[False] == unlearned


GENERATION_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{% if m['role'] == 'assistant' %}{% generation %}"
    "{{ m['content'] }}<|end|>\n{% endgeneration %}{% else %}{{ m['content'] }}<|end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_a_template_with_generation_markers_gives_transformers_own_assistant_mask(tiny_tokenizer):
    """On a template with ``{% generation %}`` markers, the learned tokens are exactly those of transformers'
    ``return_assistant_tokens_mask`` (after the BOS the training rows start with)."""
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = GENERATION_TEMPLATE
    out = tokenize_example({"messages": MULTI_TURN}, tok, template="qa", max_length=256)
    reference = tok.apply_chat_template(
        MULTI_TURN, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert out["input_ids"][1:] == list(reference["input_ids"])
    assert [int(label != IGNORE_INDEX) for label in out["labels"][1:]] == list(reference["assistant_masks"])
    assert sum(reference["assistant_masks"]) > 0


def test_alpaca_rows_use_stanford_alpaca_s_prompt_with_and_without_input(tiny_tokenizer):
    from matrix_llm.data.gsm8k import format_example

    with_input, without = ROWS["alpaca"]
    prompt, completion = format_example(with_input, template="alpaca")
    assert (
        prompt
        == (
            "Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n### Instruction:\nAdd the numbers.\n\n"
            "### Input:\n2 and 3\n\n### Response:"
        )
        and completion == " 5"
    )
    prompt, _ = format_example(without, template="alpaca")
    assert "### Input" not in prompt and prompt.endswith("What is 4 + 4?\n\n### Response:")
    assert format_example(with_input, template="qa")[0] == "Question: Add the numbers.\n\n2 and 3\nAnswer:"
    out = tokenize_example(with_input, tiny_tokenizer, template="alpaca", max_length=256)
    assert _runs(tiny_tokenizer, out["input_ids"], out["labels"])[True] == [" 5" + tiny_tokenizer.eos_token]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "last message must be the assistant"),
        ({"messages": [MULTI_TURN[1], MULTI_TURN[3], MULTI_TURN[2]]}, "message 1: roles must alternate"),
        (
            {"messages": [MULTI_TURN[1], {"role": "assistant", "content": " "}]},
            r"message 1 \(assistant\): empty",
        ),
        ({"conversations": [{"from": "robot", "value": "hi"}]}, "turn 0: `from` must be one of"),
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
    run = json.loads((tmp_path / "out" / "matrix_llm_run.json").read_text())
    assert run["dataset_format"] == FORMAT[kind]


def test_a_bad_row_is_named_with_its_file_and_row(tmp_path, capsys):
    from conftest import SFT_TINY as TINY

    from matrix_llm.modes.lm import command as sft

    rows = ROWS["sharegpt"] * 4 + [
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": ""}]}
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = [*TINY, "--dataset_name", str(path), "--eval_split", "null", "--output_dir", str(tmp_path / "out")]
    assert sft.main(argv) != 0
    err = capsys.readouterr().err
    assert str(path) in err and "row 8" in err and "message 1 (assistant): empty" in err

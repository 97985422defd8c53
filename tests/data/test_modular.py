"""The grokking task's data (`modular-addition`): the full table split once, labels, one token per number.

Run: .venv/bin/python -m pytest tests/data/test_modular.py -q
"""

from __future__ import annotations

import pytest

from matrix_llm.data.text import load_text_dataset, modular_addition, number_code


def _decode(word: str) -> int:
    return (ord(word[0]) - 97) * 26 + ord(word[1]) - 97


def test_the_table_is_split_once_and_every_label_is_the_sum_mod_p():
    train, test = modular_addition("train", modulus=11), modular_addition("test", modulus=11)
    assert len(train["text"]) + len(test["text"]) == 121 and len(train["text"]) == 60  # round(0.5 * 121)
    pairs = [tuple(_decode(w) for w in t.split(" plus ")) for t in train["text"] + test["text"]]
    assert len(set(pairs)) == 121  # every pair once, in exactly one split
    assert all(
        label == (a + b) % 11 for (a, b), label in zip(pairs, train["label"] + test["label"], strict=True)
    )
    assert modular_addition("train", modulus=11) == train  # the split is fixed (seed 0)
    assert modular_addition("train", modulus=11, seed=1) != train
    with pytest.raises(ValueError, match="split 'dev'"):
        modular_addition("dev")


def test_each_number_is_one_token_of_the_tiny_tokenizer():
    from matrix_llm.models.tiny import build_tokenizer

    rows = load_text_dataset(
        "modular-addition", "train", config="113", text_column="text", label_column="label"
    )
    assert len(rows) == round(0.5 * 113 * 113) and set(rows["label"]) == set(range(113))
    tokenizer = build_tokenizer(rows["text"], vocab_size=1024)
    for n in range(113):
        assert len(tokenizer.tokenize(f"{number_code(n)} plus {number_code(n)}")) == 3, n
    assert number_code(27) == "bb"


def test_the_config_sets_the_modulus_and_the_share_of_the_table_trained_on():
    def rows(config, split="train"):
        return load_text_dataset(
            "modular-addition", split, config=config, text_column="text", label_column="label"
        )

    assert len(rows("11:0.3")) == round(0.3 * 121) and len(rows("11:0.3", "test")) == 121 - round(0.3 * 121)
    assert len(rows("11")) == round(0.5 * 121)  # the modulus alone: half of the table
    assert set(rows("11:0.3")["text"]) < set(rows("11:0.6")["text"])  # one permutation, cut further along
    for bad in ("eleven", "11:a third", "11:1.5"):
        with pytest.raises(ValueError, match="modular-addition"):
            rows(bad)

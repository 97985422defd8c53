"""GSM8K loading and tokenisation (matrix_llm/data/gsm8k.py): load_gsm8k, tokenize_example, tokenize_dataset.

Run: .venv/bin/python -m pytest tests/data/test_gsm8k_tokenize.py -q
"""

from __future__ import annotations

import json
import logging

import pytest

from matrix_llm.data.gsm8k import (
    IGNORE_INDEX,
    TEMPLATES,
    encode_prompt,
    format_example,
    load_gsm8k,
    tokenize_dataset,
    tokenize_example,
)

EXAMPLE = {
    "question": "Tom has 12 apples and buys 35 more. How many apples does he have?",
    "answer": "Tom has 12 + 35 = 47 apples.\n#### 47",
}


def _labelled(row):
    return [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != IGNORE_INDEX]


@pytest.fixture
def fresh_tokenizer():
    """A tiny tokenizer that tests may modify (the conftest one is session-scoped)."""
    from conftest import _CORPUS

    from matrix_llm.models.tiny import build_tokenizer

    return build_tokenizer(_CORPUS * 20, vocab_size=320)


# ----------------------------------------------------------------------------------------------- loading


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_load_local_jsonl_file_and_directory(gsm8k_dir):
    test = load_gsm8k(str(gsm8k_dir / "test.jsonl"))
    assert test.column_names == ["question", "answer"] and len(test) == 1319
    same = load_gsm8k(str(gsm8k_dir), split="test")
    assert same[0] == test[0] and len(same) == 1319


def test_load_metamathqa_fields_are_renamed(tmp_path):
    rows = [{"query": "What is 2 + 3?", "response": "2 + 3 = 5\nThe answer is: 5", "type": "GSM_Rephrased"}]
    ds = load_gsm8k(str(_write_jsonl(tmp_path / "metamath.jsonl", rows)))
    assert ds.column_names == ["question", "answer"]
    assert ds[0] == {"question": "What is 2 + 3?", "answer": "2 + 3 = 5\nThe answer is: 5"}


def test_load_parquet_and_json(tmp_path):
    from datasets import Dataset

    Dataset.from_list([EXAMPLE]).to_parquet(str(tmp_path / "train.parquet"))
    assert load_gsm8k(str(tmp_path / "train.parquet"))[0] == EXAMPLE
    (tmp_path / "d.json").write_text(json.dumps([EXAMPLE]), encoding="utf-8")
    assert load_gsm8k(str(tmp_path / "d.json"))[0] == EXAMPLE


def test_load_missing_fields_names_found_and_expected(tmp_path):
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"problem": "1+1?", "solution": "2"}])
    with pytest.raises(ValueError) as err:
        load_gsm8k(str(path))
    msg = str(err.value)
    assert "['problem', 'solution']" in msg and "'question', 'answer'" in msg and "'query', 'response'" in msg


def test_load_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_gsm8k(str(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError, match="validation.jsonl"):
        load_gsm8k(str(tmp_path), split="validation")


def test_load_hub_id_goes_through_datasets(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_list([EXAMPLE])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_gsm8k(split="test")[0] == EXAMPLE
    assert load_gsm8k("meta-math/MetaMathQA", config=None)[0] == EXAMPLE
    assert calls == [("openai/gsm8k", "main", "test"), ("meta-math/MetaMathQA", None, "train")]


# ----------------------------------------------------------------------------------------------- tokenize_example


@pytest.mark.parametrize("template", TEMPLATES)
def test_prompt_masked_completion_and_eos_labelled(tiny_tokenizer, template):
    tok = tiny_tokenizer
    row = tokenize_example(EXAMPLE, tok, template=template, max_length=512)
    prompt, completion = format_example(EXAMPLE, template=template, tokenizer=tok)
    ids, labels = row["input_ids"], row["labels"]
    assert len(ids) == len(labels) == len(row["attention_mask"]) == row["num_tokens"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids[-1] == labels[-1] == tok.eos_token_id
    # the prompt is exactly what generation starts from, and all of it is masked
    n_prompt = len(encode_prompt(prompt, tok))
    assert ids[:n_prompt] == encode_prompt(prompt, tok)
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt and IGNORE_INDEX not in labels[n_prompt:]
    # the labelled tokens decode to the completion text plus EOS
    assert tok.decode(_labelled(row)) == completion + tok.eos_token
    assert not row["truncated"] and not row["boundary_merged"]


def test_bos_added_once_whoever_adds_it(fresh_tokenizer):
    from tokenizers import processors

    tok = fresh_tokenizer
    plain = tokenize_example(EXAMPLE, tok, template="qa", max_length=512)["input_ids"]
    # a tokenizer that adds BOS (and EOS) itself: no duplicates, same ids
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tok.bos_token_id), ("</s>", tok.eos_token_id)]
    )
    assert tok("x").input_ids[0] == tok.bos_token_id
    assert tokenize_example(EXAMPLE, tok, template="qa", max_length=512)["input_ids"] == plain
    no_bos = tokenize_example(EXAMPLE, tok, template="qa", max_length=512, add_bos=False)["input_ids"]
    assert no_bos == plain[1:]


def test_no_bos_when_tokenizer_has_none(fresh_tokenizer):
    tok = fresh_tokenizer
    tok.bos_token = None
    row = tokenize_example(EXAMPLE, tok, template="qa", max_length=512)
    assert row["input_ids"][0] != 1 and row["labels"][-1] == tok.eos_token_id


def test_chat_prompt_with_bos_text_is_not_doubled(fresh_tokenizer):
    tok = fresh_tokenizer
    tok.chat_template = "<s>" + tok.chat_template
    ids = tokenize_example(EXAMPLE, tok, template="chat", max_length=512)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


def test_eos_kept_in_labels_when_pad_equals_eos(fresh_tokenizer):
    tok = fresh_tokenizer
    tok.pad_token = tok.eos_token
    row = tokenize_example(EXAMPLE, tok, template="qa", max_length=512)
    assert row["labels"][-1] == tok.eos_token_id == tok.pad_token_id


def test_boundary_merge_falls_back_to_separate_completion():
    """A tokenizer whose merges cross the prompt/completion boundary (': ' is one token)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    prompt, completion = format_example(EXAMPLE, template="qa")
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for ch in sorted(set(prompt + completion)):
        vocab[ch] = len(vocab)
    vocab[": "] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[(":", " ")], unk_token="<unk>"))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    row = tokenize_example(EXAMPLE, tok, template="qa", max_length=512)
    assert row["boundary_merged"]
    n_prompt = len(encode_prompt(prompt, tok))
    assert row["input_ids"][:n_prompt] == encode_prompt(prompt, tok)
    assert _labelled(row) == tok(completion, add_special_tokens=False).input_ids + [tok.eos_token_id]


def test_truncated_example_is_flagged(tiny_tokenizer):
    full = tokenize_example(EXAMPLE, tiny_tokenizer, template="qa", max_length=512)
    row = tokenize_example(EXAMPLE, tiny_tokenizer, template="qa", max_length=full["num_tokens"] - 3)
    assert row["truncated"] and row["num_tokens"] == full["num_tokens"]
    assert row["input_ids"] == full["input_ids"][:-3] and row["labels"] == full["labels"][:-3]


def test_errors(tiny_tokenizer, fresh_tokenizer):
    with pytest.raises(ValueError, match="empty completion"):
        tokenize_example({"question": "q", "answer": " \n"}, tiny_tokenizer, template="qa", max_length=64)
    fresh_tokenizer.eos_token = None
    with pytest.raises(ValueError, match="eos_token"):
        tokenize_example(EXAMPLE, fresh_tokenizer, template="qa", max_length=64)


# ----------------------------------------------------------------------------------------------- tokenize_dataset


def test_tokenize_dataset_real_gsm8k(gsm8k_dir, tiny_tokenizer):
    ds = load_gsm8k(str(gsm8k_dir / "test.jsonl")).select(range(64))
    out, stats = tokenize_dataset(ds, tiny_tokenizer, template="alpaca", max_length=2048)
    assert out.column_names == ["input_ids", "attention_mask", "labels"]
    assert len(out) == stats.num_kept == stats.num_examples == 64
    assert stats.num_truncated == stats.num_dropped == 0
    for row, ex in zip(out, ds, strict=True):
        assert tiny_tokenizer.decode(_labelled(row)) == " " + ex["answer"] + "</s>"


def test_tokenize_dataset_drops_and_reports_truncated(tiny_tokenizer, caplog):
    from datasets import Dataset

    long = {"question": EXAMPLE["question"], "answer": "Step. " * 60 + "\n#### 47"}
    ds = Dataset.from_list([EXAMPLE, long, EXAMPLE])
    limit = tokenize_example(EXAMPLE, tiny_tokenizer, template="qa", max_length=512)["num_tokens"]
    with caplog.at_level(logging.WARNING, logger="matrix_llm.data.gsm8k"):
        out, stats = tokenize_dataset(ds, tiny_tokenizer, template="qa", max_length=limit)
    assert (stats.num_examples, stats.num_kept, stats.num_truncated, stats.num_dropped) == (3, 2, 1, 1)
    assert stats.longest > limit and len(out) == 2
    assert "1 of 3 examples are longer than max_length" in caplog.text
    kept, stats = tokenize_dataset(ds, tiny_tokenizer, template="qa", max_length=limit, drop_truncated=False)
    assert stats.num_kept == 3 and stats.num_truncated == 1 and len(kept[1]["input_ids"]) == limit
    assert kept[1]["labels"][-1] != tiny_tokenizer.eos_token_id  # the cut example lost its EOS


def test_tokenize_dataset_drops_examples_whose_prompt_fills_max_length(tiny_tokenizer):
    from datasets import Dataset

    long_q = {"question": "How many? " * 80, "answer": "#### 1"}
    out, stats = tokenize_dataset(
        Dataset.from_list([long_q, EXAMPLE]),
        tiny_tokenizer,
        template="qa",
        max_length=60,
        drop_truncated=False,
    )
    assert stats.num_dropped == 1 and len(out) == 1


def test_tokenize_dataset_errors_name_the_row(tiny_tokenizer):
    from datasets import Dataset

    ds = Dataset.from_list([EXAMPLE, {"question": "Empty?", "answer": ""}])
    with pytest.raises(ValueError, match=r"row 1: empty completion"):
        tokenize_dataset(ds, tiny_tokenizer, template="qa", max_length=128)
    with pytest.raises(ValueError, match="expects the columns"):
        tokenize_dataset(Dataset.from_list([{"q": "a"}]), tiny_tokenizer, template="qa", max_length=128)


def test_tokenize_dataset_raises_when_nothing_fits(tiny_tokenizer):
    from datasets import Dataset

    with pytest.raises(ValueError, match="no example left to train on"):
        tokenize_dataset(Dataset.from_list([EXAMPLE]), tiny_tokenizer, template="qa", max_length=8)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the data file is empty"),
        ("\n\n", "has no rows"),
        ('{"question": "q", "answer": "#### 1"}\n{"question": "q2", "answer": \n', "row 2: not valid JSON"),
        ('{"question": "q", "answer": "#### 1"}\n[1, 2]\n', "row 2: expected a JSON object"),
    ],
)
def test_bad_local_files_name_the_file_and_the_row(tmp_path, content, message):
    """Mutation caught: removing the pre-check (datasets raises a bare StopIteration / a generic error)."""
    path = tmp_path / "train.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_gsm8k(str(path))
    assert str(path) in str(info.value)

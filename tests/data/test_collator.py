"""Completion-only padding collator (matrix_llm/data/collator.py).

Run: .venv/bin/python -m pytest tests/data/test_collator.py -q
"""

from __future__ import annotations

import pytest
import torch

from matrix_llm.data.collator import IGNORE_INDEX, CompletionCollator
from matrix_llm.data.gsm8k import format_example, tokenize_example

EXAMPLES = [
    {"question": "Tom has 12 apples and buys 35 more. How many apples?", "answer": "12 + 35 = 47\n#### 47"},
    {"question": "A box holds 6 pens. How many pens are in 4 boxes?", "answer": "6 * 4 = 24 pens.\n#### 24"},
    {"question": "Sara had 90 dollars and spent 15.", "answer": "#### 75"},
]


def _features(tok, template="qa"):
    rows = [tokenize_example(ex, tok, template=template, max_length=256) for ex in EXAMPLES]
    return [{k: r[k] for k in ("input_ids", "attention_mask", "labels")} for r in rows]


@pytest.fixture
def fresh_tokenizer():
    from conftest import _CORPUS

    from matrix_llm.models.tiny import build_tokenizer

    return build_tokenizer(_CORPUS * 20, vocab_size=320)


def test_no_pad_token_raises_with_the_fix(fresh_tokenizer):
    fresh_tokenizer.pad_token = None
    with pytest.raises(ValueError, match="pad token") as err:
        CompletionCollator(fresh_tokenizer)
    assert "tokenizer.pad_token" in str(err.value) and "distinct from eos" in str(err.value)


@pytest.mark.parametrize("template", ["qa", "alpaca", "chat"])
def test_right_padding_masks_prompt_and_padding_keeps_eos(tiny_tokenizer, template):
    tok = tiny_tokenizer
    feats = _features(tok, template)
    batch = CompletionCollator(tok)(feats)
    lengths = [len(f["input_ids"]) for f in feats]
    assert batch["input_ids"].shape == batch["labels"].shape == (3, max(lengths))
    assert all(t.dtype == torch.long for t in batch.values())
    for i, (f, n) in enumerate(zip(feats, lengths, strict=True)):
        ids, mask, labels = batch["input_ids"][i], batch["attention_mask"][i], batch["labels"][i]
        assert ids[:n].tolist() == f["input_ids"] and (ids[n:] == tok.pad_token_id).all()
        assert mask[:n].all() and not mask[n:].any()
        assert (labels[n:] == IGNORE_INDEX).all()  # padding masked
        assert labels[n - 1] == tok.eos_token_id  # EOS labelled
        prompt, completion = format_example(EXAMPLES[i], template=template, tokenizer=tok)
        n_prompt = sum(1 for lab in f["labels"] if lab == IGNORE_INDEX)
        assert (labels[:n_prompt] == IGNORE_INDEX).all()  # prompt masked
        # the label mask lines up with the tokens: labelled positions decode to completion + EOS
        keep = labels != IGNORE_INDEX
        assert torch.equal(labels[keep], ids[keep])
        assert tok.decode(ids[keep].tolist()) == completion + tok.eos_token


def test_left_padding(tiny_tokenizer):
    feats = _features(tiny_tokenizer)
    batch = CompletionCollator(tiny_tokenizer, padding_side="left")(feats)
    width = batch["input_ids"].shape[1]
    for i, f in enumerate(feats):
        pad = width - len(f["input_ids"])
        assert batch["input_ids"][i, pad:].tolist() == f["input_ids"]
        assert not batch["attention_mask"][i, :pad].any() and (batch["labels"][i, :pad] == IGNORE_INDEX).all()
        assert batch["labels"][i, -1] == tiny_tokenizer.eos_token_id


def test_pad_to_multiple_of(tiny_tokenizer):
    batch = CompletionCollator(tiny_tokenizer, pad_to_multiple_of=64)(_features(tiny_tokenizer))
    assert batch["input_ids"].shape[1] % 64 == 0


def test_pad_equal_to_eos_keeps_eos_in_labels(fresh_tokenizer):
    tok = fresh_tokenizer
    tok.pad_token = tok.eos_token
    feats = _features(tok)
    batch = CompletionCollator(tok)(feats)
    for i, f in enumerate(feats):
        n = len(f["input_ids"])
        assert batch["labels"][i, n - 1] == tok.eos_token_id
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all()


def test_features_without_labels_or_mask(tiny_tokenizer):
    batch = CompletionCollator(tiny_tokenizer)([{"input_ids": [5, 6, 7]}, {"input_ids": [5]}])
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_bad_inputs_raise(tiny_tokenizer):
    collate = CompletionCollator(tiny_tokenizer)
    with pytest.raises(ValueError, match="same length"):
        collate([{"input_ids": [1, 2], "labels": [1]}])
    with pytest.raises(ValueError, match="some examples have 'labels'"):
        collate([{"input_ids": [1], "labels": [1]}, {"input_ids": [1]}])
    with pytest.raises(ValueError, match="empty list"):
        collate([])
    with pytest.raises(ValueError, match="padding_side"):
        CompletionCollator(tiny_tokenizer, padding_side="middle")


def test_batch_trains_a_tiny_model(tiny_tokenizer, tiny_model):
    """The padded batch gives the model's loss over the completion tokens only, and one SGD step on it lowers
    that loss. Mutation caught: padding labels with the pad id instead of -100 (padding would then be learned)."""
    import torch.nn.functional as F

    features = _features(tiny_tokenizer)
    batch = CompletionCollator(tiny_tokenizer)(features)
    learned = sum(int(label != -100) for f in features for label in f["labels"])
    assert int((batch["labels"] != -100).sum()) == learned  # padding adds no target
    out = tiny_model(**batch)
    assert torch.isfinite(out.loss)
    logits, targets = out.logits[:, :-1], batch["labels"][:, 1:]
    manual = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, manual)
    out.loss.backward()
    grads = [p.grad for p in tiny_model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().max() > 0 for g in grads)
    with torch.no_grad():
        for p in tiny_model.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad
    assert tiny_model(**batch).loss < out.loss

"""features.heads: the classifier head and the features it sees, for encoder and decoder classifiers.

Run: .venv/bin/python -m pytest tests/features/test_heads.py -q
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from matrix_llm import features


def _check_head_of(model, batch):
    model.eval()
    with torch.no_grad(), features.capture_head_input(model, batch.get("attention_mask")) as captured:
        logits = model(**batch).logits
        assert captured.features.shape == (batch["input_ids"].shape[0], model.config.hidden_size)
        torch.testing.assert_close(captured.head(captured.features), logits)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_decoder_classifier_features_are_the_last_real_token(padding_side):
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_labels=3,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    ids = torch.tensor([[5, 6, 7, 8, 9], [11, 12, 13, 0, 0]])
    mask = (ids != 0).long()
    if padding_side == "left":
        ids, mask = (
            torch.tensor([[5, 6, 7, 8, 9], [0, 0, 11, 12, 13]]),
            torch.tensor([[1] * 5, [0, 0, 1, 1, 1]]),
        )
    assert features.classifier_head(model) is model.score
    _check_head_of(model, {"input_ids": ids, "attention_mask": mask})


def test_encoder_classifier_features_are_the_pooled_output():
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=50,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=4,
        )
    )
    ids = torch.tensor([[2, 5, 6, 0], [2, 7, 8, 9]])
    _check_head_of(model, {"input_ids": ids, "attention_mask": (ids != 0).long()})

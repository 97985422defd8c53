"""Pooled encoder features and several layers in one forward pass, on real Hub architectures (random init).

.venv/bin/python -m pytest tests/features/test_pooled_layers.py -q
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    ResNetConfig,
    ResNetModel,
    ViTConfig,
    ViTModel,
)

from matrix_llm.features import capture_layers, default_pooling, pool


def _vit():
    torch.manual_seed(0)
    cfg = ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
    )
    return ViTModel(cfg, add_pooling_layer=False).eval()


def _bert():
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
    )
    return BertModel(cfg).eval()


def test_vit_cls_and_patch_mean():
    model = _vit()
    out = model(pixel_values=torch.randn(3, 3, 16, 16))
    hidden = out.last_hidden_state  # (3, 1 + 16 patches, 32)
    assert default_pooling(out) == "cls"
    torch.testing.assert_close(pool(out, "cls"), hidden[:, 0])
    torch.testing.assert_close(pool(out, "mean", skip_first=True), hidden[:, 1:].mean(1))
    assert not torch.allclose(pool(out, "mean"), pool(out, "mean", skip_first=True))


def test_text_mean_ignores_padding():
    """Mutation caught: averaging over padding positions (the attention mask ignored)."""
    model = _bert()
    ids = torch.tensor([[1, 5, 7, 9, 2, 0, 0, 0], [1, 6, 8, 2, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    out = model(input_ids=ids, attention_mask=mask)
    pooled = pool(out, "mean", attention_mask=mask)
    for i in range(2):
        n = int(mask[i].sum())
        torch.testing.assert_close(pooled[i], out.last_hidden_state[i, :n].mean(0))
    assert default_pooling(out) == "pooler" and pool(out).shape == (2, 32)


def test_convolutional_backbone_pooler_and_feature_map_mean():
    torch.manual_seed(0)
    model = ResNetModel(
        ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
    ).eval()
    out = model(pixel_values=torch.randn(2, 3, 32, 32))
    assert default_pooling(out) == "pooler"
    torch.testing.assert_close(pool(out), out.last_hidden_state.mean(dim=(2, 3)))  # ResNet pools by averaging
    with pytest.raises(ValueError, match="class token"):
        pool(out.last_hidden_state, "cls")


def test_bad_pooling_requests_are_named():
    with pytest.raises(ValueError, match="one of"):
        pool(torch.zeros(2, 3, 4), "max")
    with pytest.raises(ValueError, match="pooler_output"):
        pool(_vit()(pixel_values=torch.randn(1, 3, 16, 16)), "pooler")
    with pytest.raises(ValueError, match="attention_mask"):
        pool(torch.zeros(2, 3, 4), "mean", attention_mask=torch.ones(2, 4))


@pytest.mark.parametrize("family", ["llama", "vit"])
def test_capture_layers_equals_output_hidden_states(family):
    """Each captured block output equals hidden_states[i + 1] of output_hidden_states=True, in one forward."""
    if family == "llama":
        torch.manual_seed(0)
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=64,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=3,
                num_attention_heads=2,
                num_key_value_heads=2,
            )
        ).eval()
        inputs = {"input_ids": torch.randint(0, 64, (2, 7))}
    else:
        model = _vit()
        inputs = {"pixel_values": torch.randn(2, 3, 16, 16)}
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    with capture_layers(model, [0, -1]) as captured:
        model(**inputs)
    assert calls == [1]  # one forward pass
    reference = model(**inputs, output_hidden_states=True).hidden_states
    handle.remove()
    assert sorted(captured) == [0, 2]
    torch.testing.assert_close(captured[0], reference[1])
    if (
        family == "vit"
    ):  # ViT's last hidden_states entry is the last block's output (the final norm comes after)
        torch.testing.assert_close(captured[2], reference[3])
    with capture_layers(model) as everything:
        model(**inputs)
    assert sorted(everything) == [0, 1, 2]
    with pytest.raises(ValueError, match="outside"), capture_layers(model, [5]):
        pass

"""features.py: same-forward capture (plain, PEFT, inner layers), shifted completion mask, head weight.

.venv/bin/python -m pytest tests/features/test_features.py -q
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from matrix_llm import features
from matrix_llm.features import diagnostics


def _batch(tok, n=2, length=10):
    ids = torch.randint(4, len(tok), (n, length), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :4] = -100
    labels[1, 8:] = -100
    return ids, labels


def test_token_features_uses_the_shifted_mask():
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    labels = torch.tensor([[-100, -100, 7, 8, 9], [-100, 4, 5, -100, -100]])
    logits = torch.randn(2, 5, 11)
    f = features.token_features(hidden, labels, logits)
    # position t predicts labels[t + 1]: rows (0,1),(0,2),(0,3) and (1,0),(1,1)
    assert f.targets.tolist() == [7, 8, 9, 4, 5]
    expected = torch.stack([hidden[0, 1], hidden[0, 2], hidden[0, 3], hidden[1, 0], hidden[1, 1]])
    assert torch.equal(f.hidden, expected)
    assert torch.equal(
        f.logits, torch.stack([logits[0, 1], logits[0, 2], logits[0, 3], logits[1, 0], logits[1, 1]])
    )
    # the count matches the Trainer's num_items_in_batch rule (labels[..., 1:] != -100)
    assert f.targets.numel() == int((labels[:, 1:] != -100).sum())


def test_token_features_shape_errors():
    with pytest.raises(ValueError, match=r"\(N, L, d\)"):
        features.token_features(torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        features.token_features(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))


def test_capture_last_layer_equals_lm_head_input(tiny_model, tiny_tokenizer):
    ids, _ = _batch(tiny_tokenizer)
    tiny_model.eval()
    with features.capture_hidden(tiny_model, -1) as cap:
        out = tiny_model(input_ids=ids, output_hidden_states=True)
    assert torch.equal(cap.hidden, out.hidden_states[-1])
    # exactly the vector the head is applied to
    torch.testing.assert_close(tiny_model.lm_head(cap.hidden), out.logits)
    # the hook is gone after the block
    assert not tiny_model.lm_head._forward_pre_hooks


@pytest.mark.parametrize("layer", [-1, 0])
def test_a_captured_graph_is_not_replaced_by_a_later_no_grad_forward(tiny_model, tiny_tokenizer, layer):
    """TRL's SFTTrainer runs a second forward under ``no_grad`` (for its metrics or the logits) after the training
    forward: the capture keeps the training forward's tensor, with its graph. Without a graph on the first capture
    (evaluation), the last forward wins. Mutation caught: the last forward always winning (the matrix loss then
    had no gradient under TRL)."""
    ids, _ = _batch(tiny_tokenizer)
    tiny_model.train()
    with features.capture_hidden(tiny_model, layer) as cap:
        tiny_model(input_ids=ids)
        with torch.no_grad():
            tiny_model(input_ids=ids[:1])
    assert cap.hidden.requires_grad and cap.hidden.shape[0] == ids.shape[0]
    with torch.no_grad(), features.capture_hidden(tiny_model, layer) as cap:
        tiny_model(input_ids=ids)
        tiny_model(input_ids=ids[:1])
    assert cap.hidden.shape[0] == 1


def test_the_last_layer_is_captured_when_the_forward_skips_the_head_module(tiny_model, tiny_tokenizer):
    """A forward that uses the LM head's weight without calling the head (TRL's fused LM head): the backbone's
    output, the vector the head would be applied to, is captured. Mutation caught: hooking the head only
    (nothing captured)."""
    ids, _ = _batch(tiny_tokenizer)
    with features.capture_hidden(tiny_model, -1) as cap:
        body = tiny_model.model(input_ids=ids).last_hidden_state
        logits = body @ tiny_model.lm_head.weight.T
    assert cap.hidden is body
    torch.testing.assert_close(logits, tiny_model(input_ids=ids).logits)
    assert not tiny_model.model._forward_hooks  # removed after the block


@pytest.mark.parametrize(("layer", "index"), [(0, 1), (1, 2), (-2, -2)])
def test_capture_inner_layers_match_hidden_states(tiny_model, tiny_tokenizer, layer, index):
    ids, _ = _batch(tiny_tokenizer)
    tiny_model.eval()
    with features.capture_hidden(tiny_model, layer) as cap:
        out = tiny_model(input_ids=ids, output_hidden_states=True)
    if layer == 1:  # the last decoder layer's output is normed in hidden_states[-1]; compare before the norm
        torch.testing.assert_close(tiny_model.model.norm(cap.hidden), out.hidden_states[index])
    else:
        torch.testing.assert_close(cap.hidden, out.hidden_states[index])


def test_capture_rejects_out_of_range_layers(tiny_model):
    for layer in (2, -3):
        with pytest.raises(ValueError, match="matrix_layer"):
            with features.capture_hidden(tiny_model, layer):
                pass


def test_capture_through_peft_and_ddp_style_wrappers(tiny_model, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(tiny_model, LoraConfig(r=2, target_modules="all-linear", lora_dropout=0.0))
    ids, _ = _batch(tiny_tokenizer)
    with features.capture_hidden(peft_model, -1) as cap:
        out = peft_model(input_ids=ids, output_hidden_states=True)
    assert torch.equal(cap.hidden, out.hidden_states[-1])
    assert cap.hidden.requires_grad  # the graph is kept: the matrix loss trains the adapter
    w = features.head_weight(peft_model)
    assert w.shape == (len(tiny_tokenizer), 64) and not w.requires_grad

    class Wrapper(torch.nn.Module):  # DeepSpeedEngine-like: .module + zero_optimization_stage
        def __init__(self, module):
            super().__init__()
            self.module = module

        def zero_optimization_stage(self):
            return 2

    assert features.unwrap(Wrapper(peft_model)) is peft_model


def test_head_weight_requires_grad_only_when_asked(tiny_model):
    assert not features.head_weight(tiny_model).requires_grad
    assert features.head_weight(tiny_model, requires_grad=True) is tiny_model.lm_head.weight


def test_diagnostics_of_identical_rows_have_rank_one():
    ent, erank = diagnostics.entropy_erank(torch.ones(6, 4))
    assert ent.item() == pytest.approx(0.0, abs=1e-5) and erank.item() == pytest.approx(1.0, abs=1e-4)
    ent, erank = diagnostics.entropy_erank(torch.eye(4))
    assert erank.item() == pytest.approx(4.0, rel=1e-4)


def test_evaluating_restores_the_mode_and_torch_s_random_state():
    """A measurement inside ``evaluating`` (eval mode, random draws) leaves the model's mode and the draws after it
    as they were, also when it raises."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5))
    torch.manual_seed(0)
    expected = torch.rand(4)
    for fails in (False, True):
        torch.manual_seed(0)
        with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
            with features.evaluating(model) as device:
                assert device == torch.device("cpu") and not model.training
                torch.rand(100)
                if fails:
                    raise RuntimeError("measurement failed")
        assert model.training
        assert torch.equal(torch.rand(4), expected)


def test_head_logits_are_the_model_s_logits_and_a_transformed_head_is_refused(tiny_model, tiny_tokenizer):
    """The logits recomputed from the LM-head input (for forwards that build none, TRL's fused head) equal the
    model's; a config that soft-caps or scales the head's output is refused rather than silently differing."""
    ids, _ = _batch(tiny_tokenizer)
    with features.capture_hidden(tiny_model, -1) as cap:
        out = tiny_model(input_ids=ids)
    torch.testing.assert_close(features.head_logits(tiny_model, cap.hidden[0]), out.logits[0])
    tiny_model.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="final_logit_softcapping"):
        features.head_logits(tiny_model, cap.hidden[0])

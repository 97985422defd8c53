"""Tests for matrix_llm.modes.lm.generation: batched greedy generation == one-at-a-time, stop strings, EOS, PEFT.

.venv/bin/python -m pytest tests/modes/lm/test_generation.py -q
"""

from __future__ import annotations

import importlib.util
import inspect

import pytest
import torch

from matrix_llm.modes.lm.generation import (
    StopOnStrings,
    generate,
    generate_vllm,
    greedy_generation_config,
    resolve_dtype,
    truncate_at_stop,
)

PROMPTS = [
    "Question: Tom has 12 apples and buys 35 more. How many apples does he have?\nAnswer:",
    "Question: A box holds 6 pens.\nAnswer:",
    "Question: Sara had 90 dollars and spent 15 dollars on a book and 20 on pens. How much is left?\nAnswer:",
    "Question: 4 boxes?\nAnswer:",
    "Question: Tom has 47 apples. He gives 12 to Sara and 5 to Ben. How many apples are left now?\nAnswer:",
]


def _gen(model, tok, **kw):
    kw.setdefault("max_new_tokens", 20)
    kw.setdefault("progress", False)
    return generate(model, tok, PROMPTS, **kw)


def _direct_ids(model, tok, prompt, max_new_tokens):
    """Plain ``model.generate`` on one unpadded prompt (BOS + text): the generated ids."""
    ids = torch.tensor([[tok.bos_token_id, *tok(prompt, add_special_tokens=False)["input_ids"]]])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return out[0, ids.shape[1] :].tolist()


def test_default_max_new_tokens_is_512():
    assert inspect.signature(generate).parameters["max_new_tokens"].default == 512


def test_batched_equals_one_at_a_time_in_prompt_order(tiny_model, tiny_tokenizer):
    model = tiny_model.eval()
    single = _gen(model, tiny_tokenizer, batch_size=1)
    batched = _gen(model, tiny_tokenizer, batch_size=3)
    assert batched.completions == single.completions
    assert batched.num_new_tokens == single.num_new_tokens
    # the prompts differ in length, so left padding was exercised; results are in prompt order
    direct = [
        tiny_tokenizer.decode(_direct_ids(model, tiny_tokenizer, p, 20), skip_special_tokens=True)
        for p in PROMPTS
    ]
    assert single.completions == direct


def test_stop_strings_and_eos_batched_equals_single(tiny_model, tiny_tokenizer):
    model = tiny_model.eval()
    free = _gen(model, tiny_tokenizer, batch_size=1, max_new_tokens=24)
    # a stop string that the model really produces, in the middle of a completion
    text = free.completions[0]
    stop = text[6:9]
    assert stop and stop in text
    eos_token = _direct_ids(model, tiny_tokenizer, PROMPTS[2], 24)[5]
    model.generation_config.eos_token_id = eos_token
    single = _gen(model, tiny_tokenizer, batch_size=1, max_new_tokens=24, stop_strings=[stop])
    batched = _gen(model, tiny_tokenizer, batch_size=4, max_new_tokens=24, stop_strings=[stop])
    assert batched.completions == single.completions
    assert batched.finish_reasons == single.finish_reasons
    assert single.completions[0] == truncate_at_stop(text, [stop])
    assert "stop" in single.finish_reasons
    assert all(stop not in c for c in single.completions)
    for r, n in zip(single.finish_reasons, single.num_new_tokens, strict=True):
        assert (r == "length") == (n == 24)
    assert "eos" in single.finish_reasons  # the chosen EOS id ends completion 2 at the latest


def test_model_generation_config_sampling_is_ignored(tiny_model, tiny_tokenizer):
    model = tiny_model.eval()
    reference = _gen(model, tiny_tokenizer, batch_size=2)
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.3
    model.generation_config.repetition_penalty = 1.8
    model.generation_config.no_repeat_ngram_size = 2
    assert _gen(model, tiny_tokenizer, batch_size=2).completions == reference.completions
    config = greedy_generation_config(model, tiny_tokenizer, max_new_tokens=7)
    assert (config.do_sample, config.num_beams, config.max_new_tokens) == (False, 1, 7)


def test_peft_wrapped_model_generates_with_its_adapter(tiny_model, tiny_tokenizer):
    """A PEFT model generates what its merged weights generate, and not what the base model does. Mutation
    caught: generating inside ``disable_adapter()`` (with LoRA's zero-initialised B that passed unnoticed)."""
    from conftest import merged_copy, nonzero_lora

    base = _gen(tiny_model.eval(), tiny_tokenizer, batch_size=2).completions
    peft_model = nonzero_lora(tiny_model).eval()
    merged = _gen(merged_copy(peft_model), tiny_tokenizer, batch_size=2).completions
    adapted = _gen(peft_model, tiny_tokenizer, batch_size=2).completions
    assert adapted == merged
    assert adapted != base


def test_tokenizer_without_pad_token_pads_with_eos(tiny_model, tiny_tokenizer):
    import copy

    model = tiny_model.eval()
    reference = _gen(model, tiny_tokenizer, batch_size=3)
    tok = copy.deepcopy(tiny_tokenizer)
    tok.pad_token = None
    assert tok.pad_token_id is None
    assert _gen(model, tok, batch_size=3).completions == reference.completions


def test_stop_criterion_ignores_stop_string_across_prompt_boundary(tiny_tokenizer):
    tok = tiny_tokenizer
    prompt = tok("Answer: 5\nQuest", add_special_tokens=False)["input_ids"]
    tail = tok("ion: next", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + tail])
    crit = StopOnStrings(tok, ["Question:"], prompt_length=len(prompt), batch_size=1)
    assert not bool(crit(ids)[0])  # "Question:" only exists across the prompt/completion boundary
    inside = tok(" Question: again", add_special_tokens=False)["input_ids"]
    crit = StopOnStrings(tok, ["Question:"], prompt_length=len(prompt), batch_size=1)
    assert bool(crit(torch.tensor([prompt + inside]))[0])
    assert crit.stopped_at == [len(inside)]


def test_truncate_at_stop_cuts_at_earliest_stop():
    assert truncate_at_stop("a #### 5\n\nQuestion: b Q: c", ["Q:", "Question:"]) == "a #### 5\n\n"
    assert truncate_at_stop("no stop", ["Question:"]) == "no stop"
    assert truncate_at_stop("x", []) == "x"


def test_resolve_dtype():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be"):
        resolve_dtype("int8")


def test_bad_arguments_raise(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="batch_size"):
        generate(tiny_model, tiny_tokenizer, ["x"], batch_size=0, progress=False)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(tiny_model, tiny_tokenizer, ["x"], max_new_tokens=0, progress=False)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_backend_without_vllm_is_a_clear_error():
    with pytest.raises(ImportError, match="pip install vllm"):
        generate_vllm("some/model", ["Question: 1?\nAnswer:"])


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllm_backend_matches_hf(tmp_path, tiny_model, tiny_tokenizer):  # pragma: no cover - needs vLLM + GPU
    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    hf = _gen(tiny_model.eval(), tiny_tokenizer, batch_size=2)
    out = generate_vllm(str(tmp_path), PROMPTS, max_new_tokens=20, dtype="float32")
    assert out.completions == hf.completions


def test_prompts_that_leave_too_little_context_are_counted_and_warned_about(
    tiny_model, tiny_tokenizer, caplog
):
    """`eval gsm8k --prompt fewshot5` on the demo model (512-token context) cut half the answers without a word."""
    import logging

    from matrix_llm.modes.lm.generation import count_over_context

    lengths = [len(tiny_tokenizer(p)["input_ids"]) + 1 for p in PROMPTS]  # + BOS
    context = tiny_model.config.max_position_embeddings
    budget = context - sorted(lengths)[2]  # the three longest prompts leave fewer than `budget` tokens
    with caplog.at_level(logging.WARNING, logger="matrix_llm.modes.lm.generation"):
        assert count_over_context(tiny_model, lengths, budget) == sum(n > sorted(lengths)[2] for n in lengths)
        assert count_over_context(tiny_model, lengths, context - max(lengths)) == 0
    (warning,) = [r.getMessage() for r in caplog.records]
    assert f"of the model's {context}-token context" in warning and f"max_new_tokens={budget}" in warning
    out = generate(tiny_model, tiny_tokenizer, PROMPTS[:2], max_new_tokens=context, progress=False)
    assert out.over_context == 2

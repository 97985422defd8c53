"""QLoRA and the other PEFT variants of `matrix-llm sft`, with TRL's field names, run for real on the CPU (bitsandbytes
0.50 quantises and runs 4-bit and 8-bit linear layers on the CPU).

.venv/bin/python -m pytest tests/modes/lm/test_qlora.py -q
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SFT_TINY
from safetensors.torch import load_file

from matrix_llm.cli import main as cli
from matrix_llm.modes.lm import command as sft
from matrix_llm.modes.lm.config import LMModelArguments


def _argv(base, out, *extra):
    """SFT_TINY's data and schedule on the saved model ``base``."""
    argv = list(SFT_TINY)
    i = argv.index("--model_name_or_path")
    argv[i + 1] = str(base)
    return [*argv, "--output_dir", str(out), "--eval_split", "null", "--use_peft", "true", *extra]


@pytest.fixture(scope="module")
def base_without_pad(tmp_path_factory):
    """A saved tiny Llama whose tokenizer has no pad token (as Llama's and Llemma's): `sft` adds one and grows the
    embeddings and the LM head by a row."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from matrix_llm.data.gsm8k import format_example
    from matrix_llm.data.synthetic import synthetic_dataset
    from matrix_llm.models.tiny import build_llama

    texts = ["".join(format_example(r, template="qa")) for r in synthetic_dataset(64, seed=0)]
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=320,
            special_tokens=["<s>", "</s>", "<unk>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    assert tok.pad_token is None
    folder = tmp_path_factory.mktemp("base")
    build_llama(tok, hidden_size=32, num_layers=2, num_heads=2, seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("bits", ["4", "8"])
def test_qlora_trains_an_adapter_on_quantised_weights_and_saves_the_new_pad_rows(
    base_without_pad, tmp_path, monkeypatch, bits, gsm8k_dir
):
    """`load_in_4bit` / `load_in_8bit`: the base's linear layers are bitsandbytes' quantised ones, LoRA trains on
    them, and the adapter holds the rows the added pad token gave the embeddings and the LM head (peft's
    trainable tokens). Loaded with `load_adapter` on the unquantised base (as `eval gsm8k --adapter` and `analyze`
    do), those rows are the trained model's, not a fresh random resize; both commands run on the adapter.
    Mutations caught: the quantisation config not passed; the new rows not given to peft; the adapter attached
    without resizing the base."""
    import bitsandbytes as bnb

    from matrix_llm.modes.lm.generation import load_adapter

    built = {}
    original = sft.build_model_and_tokenizer

    def recording(*args, **kwargs):
        built["tokenizer"], built["model"] = original(*args, **kwargs)
        return built["tokenizer"], built["model"]

    monkeypatch.setattr(sft, "build_model_and_tokenizer", recording)
    out = tmp_path / "qlora"
    extra = (
        ["--load_in_4bit", "true", "--bnb_4bit_compute_dtype", "float32"]
        if bits == "4"
        else ["--load_in_8bit", "true"]
    )
    argv = _argv(base_without_pad, out, "--lora_target_modules", "q_proj", "v_proj", "--lora_r", "4", *extra)
    assert sft.main(argv) == 0
    layer = built["model"].get_base_model().model.layers[0].self_attn.k_proj  # quantised, no adapter
    assert isinstance(layer, bnb.nn.Linear4bit if bits == "4" else bnb.nn.Linear8bitLt)
    trained = built["model"].get_base_model()
    pad = built["tokenizer"].pad_token_id
    assert pad == trained.get_input_embeddings().weight.shape[0] - 1  # the added row

    weights = load_file(str(out / "adapter_model.safetensors"))
    assert any("embed_tokens.token_adapter" in k for k in weights)
    assert any("lm_head.token_adapter" in k for k in weights)
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in weights.items())

    from transformers import AutoModelForCausalLM

    loaded = load_adapter(AutoModelForCausalLM.from_pretrained(base_without_pad, dtype=torch.float32), out)
    merged = loaded.merge_and_unload()
    for get in ("get_input_embeddings", "get_output_embeddings"):
        want = getattr(trained, get)()
        want = (
            want.token_adapter.get_merged_weights(["default"])
            if hasattr(want, "token_adapter")
            else want.weight
        )
        torch.testing.assert_close(getattr(merged, get)().weight[pad], want[pad].float())

    argv = [
        "eval",
        "gsm8k",
        "--model",
        str(base_without_pad),
        "--adapter",
        str(out),
        "--data",
        str(gsm8k_dir),
    ]
    assert cli([*argv, "--limit", "2", "--max_new_tokens", "8", "--output_dir", str(tmp_path / "eval")]) == 0
    assert (
        cli(
            [
                "analyze",
                "--model",
                str(out),
                "--data",
                "synthetic",
                "--num_samples",
                "8",
                "--output_dir",
                str(tmp_path / "analyze"),
            ]
        )
        == 0
    )


def test_dora_rslora_and_modules_to_save_reach_the_adapter(tmp_path):
    """`use_dora`, `use_rslora`, `lora_modules_to_save` (TRL's names): the saved adapter has DoRA's magnitude
    vectors and a full copy of the LM head, and its config says rsLoRA. Mutation caught: a field not passed to
    the LoraConfig."""
    out = tmp_path / "dora"
    argv = [*SFT_TINY, "--output_dir", str(out), "--eval_split", "null", "--use_peft", "true"]
    argv += ["--use_dora", "true", "--use_rslora", "true", "--lora_modules_to_save", "lm_head"]
    assert sft.main([*argv, "--lora_target_modules", "q_proj", "v_proj"]) == 0
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert any("lora_magnitude_vector" in k for k in weights)
    assert any("lm_head" in k and "lora" not in k for k in weights)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["use_dora"] and config["use_rslora"] and config["modules_to_save"] == ["lm_head"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--load_in_4bit", "true", "--load_in_8bit", "true"], "load_in_8bit"),
        (["--load_in_4bit", "true", "--use_peft", "false"], "QLoRA"),
        (["--load_in_4bit", "true", "--deepspeed", "recipes/deepspeed/zero3.json"], "ZeRO-3"),
    ],
)
def test_quantisation_problems_are_refused_before_the_model_loads(
    base_without_pad, tmp_path, capsys, monkeypatch, extra, message
):
    """Both bit widths, quantised weights without LoRA, and ZeRO-3 with quantised weights: exit 2 with the reason,
    before any model loads. Mutation caught: the ZeRO-3 check gone."""
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[3])
    monkeypatch.setattr(sft, "build_model_and_tokenizer", lambda *a, **k: pytest.fail("the model was loaded"))
    assert sft.main(_argv(base_without_pad, tmp_path / "x", *extra)) == 2
    assert message in capsys.readouterr().err


def test_the_tiny_model_cannot_be_quantised():
    with pytest.raises(Exception, match="save it first"):
        LMModelArguments(model_name_or_path="tiny", use_peft=True, load_in_4bit=True)

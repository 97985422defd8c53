"""``matrix-llm analyze`` end to end on saved models: vision (digits) and language (synthetic problems, a local
text file; a PEFT adapter directory), ``--compare``, ``analyze lmc``, and the text data loader / collator it uses.

Run: .venv/bin/python -m pytest tests/tools/test_analyze.py -q
"""

from __future__ import annotations

import csv
import json

import pytest
import torch

from matrix_llm.data.text import TextCollator, count_truncated, load_text_dataset
from matrix_llm.models.tiny import build_image_classifier
from matrix_llm.tools import analyze


def _save_vit(path, seed):
    build_image_classifier(
        "tiny-vit", num_labels=10, image_size=8, hidden_size=32, num_layers=2, seed=seed
    ).save_pretrained(path)
    return str(path)


def test_analyze_vision_model_with_compare_writes_json_csv_png(tmp_path, capsys):
    a, b = _save_vit(tmp_path / "a", 0), _save_vit(tmp_path / "b", 1)
    out = tmp_path / "out"
    assert (
        analyze.main(
            [
                "--model",
                a,
                "--compare",
                b,
                "--data",
                "digits",
                "--num_samples",
                "40",
                "--batch_size",
                "16",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads((out / "layers.json").read_text())
    # one random-init reference: b has a's architecture, so it is reused
    assert list(result["tables"]) == [a, f"{a} (random init)", b]
    for name in (a, b):
        rows = result["tables"][name]
        assert [(r["layer"], r["output"]) for r in rows] == [(0, "block"), (1, "block"), (2, "final norm")]
        for row, ref in zip(rows, result["tables"][f"{a} (random init)"], strict=True):
            assert row["diff_erank"] == pytest.approx(ref["effective_rank"] - row["effective_rank"])
            assert 1.0 <= row["effective_rank"] and 0.0 < row["nuclear_norm"] <= 1.0
    with open(out / "layers.csv") as f:
        assert len(list(csv.DictReader(f))) == 9
    assert (out / "layers.png").stat().st_size > 10_000
    assert "diff_erank" in capsys.readouterr().out


def test_analyze_lmc_writes_the_path_and_barriers(tmp_path):
    a, b = _save_vit(tmp_path / "a", 0), _save_vit(tmp_path / "b", 1)
    out = tmp_path / "lmc"
    assert (
        analyze.main(
            ["lmc", a, b, "--data", "digits", "--num_samples", "30", "--grid", "3", "--output_dir", str(out)]
        )
        == 0
    )
    result = json.loads((out / "lmc.json").read_text())
    assert [p["omega"] for p in result["path"]] == [0.0, 0.5, 1.0]
    assert {"loss", "accuracy", "matrix_entropy", "effective_rank"} <= set(result["path"][0])
    assert result["loss_barrier"] >= 0.0 and "accuracy_barrier" in result
    assert (out / "lmc.png").is_file() and (out / "lmc.csv").is_file()


def test_analyze_causal_lm_on_synthetic_and_an_encoder_on_a_text_file(tmp_path, tiny_tokenizer, tiny_model):
    tiny_model.save_pretrained(tmp_path / "lm")
    tiny_tokenizer.save_pretrained(tmp_path / "lm")
    assert (
        analyze.main(
            [
                "--model",
                str(tmp_path / "lm"),
                "--data",
                "synthetic",
                "--num_samples",
                "8",
                "--output_dir",
                str(tmp_path / "out-lm"),
                "--layers",
                "-1",
            ]
        )
        == 0
    )
    table = json.loads((tmp_path / "out-lm" / "layers.json").read_text())["tables"][str(tmp_path / "lm")]
    assert [r["layer"] for r in table] == [1]

    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(
            vocab_size=len(tiny_tokenizer),
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(tmp_path / "bert")
    tiny_tokenizer.save_pretrained(tmp_path / "bert")
    data = tmp_path / "texts.jsonl"
    data.write_text(
        "".join(json.dumps({"sentence": f"Tom has {i} apples and {i + 3} pens."}) + "\n" for i in range(6))
    )
    assert (
        analyze.main(
            [
                "--model",
                str(tmp_path / "bert"),
                "--data",
                str(data),
                "--text_column",
                "sentence",
                "--no_random_init",
                "--output_dir",
                str(tmp_path / "out-bert"),
            ]
        )
        == 0
    )
    table = json.loads((tmp_path / "out-bert" / "layers.json").read_text())["tables"][str(tmp_path / "bert")]
    assert [r["layer"] for r in table] == [0, 1, 2] and "diff_erank" not in table[0]


def test_analyze_a_peft_adapter_directory_as_its_merged_model(tmp_path, tiny_tokenizer, tiny_model):
    """An adapter directory (what `sft --use_peft` saves: no config.json) is its base model with the adapter merged
    in: the same table as the merged model saved whole, and not the base model's table."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = tmp_path / "base"
    tiny_model.save_pretrained(base)
    tiny_tokenizer.save_pretrained(base)
    loaded = AutoModelForCausalLM.from_pretrained(base)  # the adapter records where its base came from
    peft_model = get_peft_model(loaded, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # LoRA starts at B = 0 (no change): make the adapter matter
            param.data.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    peft_model.save_pretrained(tmp_path / "adapter")
    assert not (tmp_path / "adapter" / "config.json").exists()
    assert (
        analyze.adapter_base(str(tmp_path / "adapter")) == str(base)
        and analyze.adapter_base(str(base)) is None
    )
    peft_model.merge_and_unload().save_pretrained(tmp_path / "merged")
    tiny_tokenizer.save_pretrained(tmp_path / "merged")
    tables = {}
    for name in ("adapter", "merged", "base"):
        out = tmp_path / f"out-{name}"
        assert (
            analyze.main(
                [
                    "--model",
                    str(tmp_path / name),
                    "--data",
                    "synthetic",
                    "--num_samples",
                    "6",
                    "--no_random_init",
                    "--output_dir",
                    str(out),
                ]
            )
            == 0
        )
        tables[name] = json.loads((out / "layers.json").read_text())["tables"][str(tmp_path / name)]
    for got, want in zip(tables["adapter"], tables["merged"], strict=True):
        assert got.pop("output") == want.pop("output") and got == pytest.approx(want, rel=1e-5)
    assert tables["adapter"][-1]["matrix_entropy"] != pytest.approx(
        tables["base"][-1]["matrix_entropy"], rel=1e-4
    )


def test_analyze_bad_input_is_a_clear_error(tmp_path):
    a = _save_vit(tmp_path / "a", 0)
    with pytest.raises(ValueError, match="outside the model's 2 blocks"):
        analyze.main(["--model", a, "--data", "digits", "--layers", "5", "--output_dir", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="comma-separated integers"):
        analyze.main(
            ["--model", a, "--data", "digits", "--layers", "first", "--output_dir", str(tmp_path / "o")]
        )
    wider = tmp_path / "w"
    build_image_classifier(
        "tiny-vit", num_labels=10, image_size=8, hidden_size=64, num_layers=2
    ).save_pretrained(wider)
    with pytest.raises(ValueError, match="not the same architecture"):
        analyze.main(["lmc", a, str(wider), "--data", "digits", "--output_dir", str(tmp_path / "o")])


def test_load_text_dataset_formats_labels_and_errors(tmp_path, gsm8k_dir, tiny_tokenizer):
    gsm = load_text_dataset(str(gsm8k_dir), "test")
    assert gsm[0]["text"].startswith("Question: ") and "####" in gsm[0]["text"]
    (tmp_path / "texts.jsonl").write_text('{"sentence": "a film"}\n')
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "good film", "stars": 1}\n{"text": "bad film", "stars": 0}\n')
    ds = load_text_dataset(str(rows), label_column="stars")
    assert ds["label"] == [1, 0]
    with pytest.raises(ValueError, match=r"no label column 'label'; the columns are \['text', 'stars'\]"):
        load_text_dataset(str(rows), label_column="label")
    with pytest.raises(ValueError, match="no text column 'body' and no training format"):
        load_text_dataset(str(tmp_path / "texts.jsonl"), text_column="body")
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": "fine"}\n{"text": "  "}\n')
    with pytest.raises(ValueError, match="row 1 has an empty"):
        load_text_dataset(str(empty))
    collate = TextCollator(tiny_tokenizer, max_length=4, causal=True)
    texts = ["Tom has 12 apples and 35 more", "47"]
    batch = collate([{"text": t} for t in texts])
    assert batch["input_ids"].shape[1] == 4 and count_truncated(tiny_tokenizer, texts, 4) == 1
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert TextCollator(tiny_tokenizer)([{"text": "a", "label": 2}])["labels"].tolist() == [2]


def test_diff_erank_is_measured_against_a_fresh_random_init_not_the_model(tmp_path):
    """Two models of one architecture with different weights: each run's random-init table is the same (it
    depends on the architecture and seed only), differs from the model's own, and diff_erank is the difference."""
    from matrix_llm.models.tiny import random_init

    a = tmp_path / "a"
    model = build_image_classifier(
        "tiny-vit", num_labels=10, image_size=8, hidden_size=32, num_layers=2, seed=0
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("query.weight"):
                p.mul_(8.0)  # sharper attention: other token matrices than any init
    model.save_pretrained(a)
    b = _save_vit(tmp_path / "b", 5)
    tables = {}
    for path in (str(a), b):
        out = tmp_path / f"out-{len(tables)}"
        assert (
            analyze.main(
                [
                    "--model",
                    path,
                    "--data",
                    "digits",
                    "--num_samples",
                    "40",
                    "--batch_size",
                    "16",
                    "--seed",
                    "3",
                    "--output_dir",
                    str(out),
                ]
            )
            == 0
        )
        tables[path] = json.loads((out / "layers.json").read_text())["tables"]
    reference = tables[str(a)][f"{a} (random init)"]
    assert reference == tables[b][f"{b} (random init)"]
    fresh = random_init(type(model), model.config, seed=3)
    assert not torch.equal(
        fresh.vit.embeddings.patch_embeddings.projection.weight,
        model.vit.embeddings.patch_embeddings.projection.weight,
    )
    for path in (str(a), b):
        rows = tables[path][path]
        assert [r["effective_rank"] for r in rows] != [r["effective_rank"] for r in reference]
        for row, ref in zip(rows, reference, strict=True):
            assert row["diff_erank"] == pytest.approx(ref["effective_rank"] - row["effective_rank"])
        assert any(abs(r["diff_erank"]) > 1e-3 for r in rows)


def test_the_last_row_is_the_last_hidden_state_after_the_final_norm(tmp_path, tiny_tokenizer, tiny_model):
    """Diff-eRank's paper measures an LLM's last hidden state, after the final norm: row n (`final norm`) is
    exactly that (hidden_states[-1] of a Llama, computed here directly), and differs from the last block's row
    (n - 1, before the norm). A BERT encoder has no final norm, so no such row."""
    from matrix_llm import info
    from matrix_llm.tools.analysis import layer_table

    batch = tiny_tokenizer(
        ["Tom has 12 apples and buys 35 more.", "A box holds 6 pens. How many pens?"],
        return_tensors="pt",
        padding=True,
    )
    rows = layer_table(tiny_model, [dict(batch)])
    assert [(r["layer"], r["output"]) for r in rows] == [(0, "block"), (1, "block"), (2, "final norm")]
    with torch.no_grad():
        states = tiny_model(**batch, output_hidden_states=True).hidden_states
    entropies = [
        float(info.feature_entropy(h[m.bool()].double(), center=True))
        for h, m in zip(states[-1], batch["attention_mask"], strict=True)
    ]
    assert rows[2]["matrix_entropy"] == pytest.approx(sum(entropies) / len(entropies), rel=1e-9)
    assert rows[2]["effective_rank"] != pytest.approx(rows[1]["effective_rank"], rel=1e-4)
    assert [r["layer"] for r in layer_table(tiny_model, [dict(batch)], layers=[-1])] == [
        1
    ]  # asked-for blocks only

    from transformers import BertConfig, BertModel

    bert = BertModel(
        BertConfig(
            vocab_size=len(tiny_tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        )
    )
    assert [r["output"] for r in layer_table(bert, [dict(batch)])] == ["block", "block"]


def test_batches_are_collated_as_they_are_used_and_can_be_read_again():
    """`analyze` holds one collated batch at a time (not --num_samples rows of tensors) and `analyze lmc` passes over
    the same batches once per omega."""
    seen = []

    def collate(rows):
        seen.append(len(rows))
        return {"x": torch.tensor(rows)}

    batches = analyze.Batches(list(range(5)), collate, 2)
    assert len(batches) == 3 and seen == []
    first = [b["x"].tolist() for b in batches]
    assert first == [[0, 1], [2, 3], [4]] == [b["x"].tolist() for b in batches] and max(seen) == 2

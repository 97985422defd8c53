"""Padding-free packing (transformers.DataCollatorWithFlattening): attention stays within each example on the
CPU attention kernels, and the LM matrix term is computed per packed example.

    .venv/bin/python -m pytest tests/features/test_packing.py -q
"""

from __future__ import annotations

import pytest
import torch
from transformers import DataCollatorWithFlattening

from matrix_llm.data import CompletionCollator
from matrix_llm.features import packed_segments, token_features
from matrix_llm.losses.token import TokenMCELoss
from matrix_llm.modes import LMObjective


def _rows(tokenizer, n=3):
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        length = 7 + 3 * i
        ids = torch.randint(4, len(tokenizer), (length,), generator=g).tolist()
        labels = [-100] * 3 + ids[3:]  # 3 prompt tokens
        rows.append({"input_ids": ids, "attention_mask": [1] * length, "labels": labels})
    return rows


def test_packed_segments_restart_with_the_position_ids():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    assert packed_segments(pos).tolist() == [[0, 0, 0, 1, 1, 2, 2, 2, 2]]


def test_packed_logits_equal_each_example_alone(tiny_model, tiny_tokenizer):
    """The packed forward (use_cache=False, as LMObjective runs it) computes, for every example, exactly the
    logits of that example run alone (the masks transformers builds from restarting position_ids). With the
    default KV cache, transformers skips that detection and examples attend to each other: checked too."""
    rows = _rows(tiny_tokenizer)
    packed = DataCollatorWithFlattening()(rows)
    model = tiny_model.eval()
    with torch.no_grad():
        out = model(
            input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False
        ).logits[0]
        start = 0
        for row in rows:
            alone = model(input_ids=torch.tensor([row["input_ids"]])).logits[0]
            torch.testing.assert_close(
                out[start : start + len(row["input_ids"])], alone, atol=1e-5, rtol=1e-5
            )
            start += len(row["input_ids"])
        with_cache = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"]).logits[0]
    first = len(rows[0]["input_ids"])
    assert not torch.allclose(
        with_cache[first:], out[first:], atol=1e-3
    )  # the pitfall use_cache=False avoids


@pytest.mark.parametrize("formulation", ["head", "relation"])
def test_matrix_term_of_packed_rows_is_the_mean_of_per_example_terms(tiny_model, tiny_tokenizer, formulation):
    """The objective on a packed batch: lm_loss as the padded batch gives it, matrix_loss = the mean over the
    examples of each one's own MCE (mutation caught: one matrix across all packed tokens)."""
    rows = _rows(tiny_tokenizer)
    model = tiny_model.eval()
    objective = LMObjective(loss_type=formulation, loss_weight=1.0)

    def base_loss(m, batch):
        out = m(**batch)
        return out.loss, out

    packed = DataCollatorWithFlattening()(rows)
    got = objective(model, packed, base_loss=base_loss, step=0)
    padded = CompletionCollator(tiny_tokenizer)(rows)
    reference = objective(model, padded, base_loss=base_loss, step=0)
    torch.testing.assert_close(got.token_loss, reference.token_loss, atol=1e-5, rtol=1e-5)

    loss = TokenMCELoss(formulation=formulation)
    weight = model.get_output_embeddings().weight.detach()
    per_example = []
    for row in rows:
        batch = {k: torch.tensor([v]) for k, v in row.items()}
        out = model(**batch, output_hidden_states=True)
        tokens = token_features(out.hidden_states[-1], batch["labels"], out.logits)
        per_example.append(loss(tokens.hidden, tokens.targets, weight, tokens.logits).total)
    expected = torch.stack(per_example).mean()
    torch.testing.assert_close(got.metrics["matrix_loss"], expected.float(), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got.metrics["matrix_loss"], reference.metrics["matrix_loss"], atol=1e-3)


def test_packing_with_global_scope_is_refused(tiny_model, tiny_tokenizer):
    objective = LMObjective(loss_type="head", loss_weight=1.0, scope="global")
    packed = DataCollatorWithFlattening()(_rows(tiny_tokenizer))
    with pytest.raises(ValueError, match="packing"):
        objective(tiny_model, packed, base_loss=lambda m, b: (m(**b).loss, m(**b)), step=0)


def test_sft_with_packing(tmp_path):
    import json

    from conftest import SFT_TINY as TINY

    from matrix_llm.modes.lm import command as sft

    out = tmp_path / "packed"
    assert sft.main([*TINY, "--output_dir", str(out), "--packing", "true", "--eval_split", "null"]) == 0
    logs = [
        log for log in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in log
    ]
    assert len(logs) == 3 and all("matrix_loss" in log for log in logs)

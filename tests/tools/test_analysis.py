"""matrix_llm.tools.analysis: per-layer tables (Diff-eRank, Matrix Nuclear-Norm, pooled eRank) against an
independent numpy computation on ``output_hidden_states``, padding invariance, random-init references, weight
interpolation and the linear-mode-connectivity path.

Run: .venv/bin/python -m pytest tests/tools/test_analysis.py -q
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from matrix_llm.models.tiny import build_image_classifier, random_init
from matrix_llm.models.weights import interpolate_states
from matrix_llm.tools import analysis


def _vit(seed: int = 0):
    return build_image_classifier(
        "tiny-vit", num_labels=3, image_size=8, hidden_size=32, num_layers=2, seed=seed
    ).eval()


def _images(n: int = 12, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(n, 1, 8, 8, generator=g), "labels": torch.arange(n) % 3}


def _entropy(eigenvalues: np.ndarray) -> float:
    p = eigenvalues[eigenvalues > 1e-12 * eigenvalues.max()]
    p = p / p.sum()
    return float(-(p * np.log(p)).sum())


def _reference_row(tokens_per_example: list[np.ndarray]) -> dict[str, float]:
    """Diff-eRank / MNN / pooled eRank in numpy (MATH.md 6.3, 6.4), independently of matrix_llm.info."""
    entropies, nuclear, pooled = [], [], []
    for z in tokens_per_example:
        zc = z - z.mean(0)
        zh = zc / np.linalg.norm(zc, axis=1, keepdims=True)
        entropies.append(_entropy(np.linalg.eigvalsh(zh.T @ zh / len(zh))))
        nuclear.append(np.sort(np.linalg.norm(zh, axis=0))[::-1][: min(zh.shape)].sum() / len(zh))
        pooled.append(z.mean(0))
    p = np.stack(pooled)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    return {
        "matrix_entropy": float(np.mean(entropies)),
        "effective_rank": math.exp(np.mean(entropies)),
        "nuclear_norm": float(np.mean(nuclear)),
        "pooled_effective_rank": math.exp(_entropy(np.linalg.eigvalsh(p @ p.T))),
    }


def test_layer_table_matches_numpy_on_hidden_states():
    model, batch = _vit(), _images()
    table = analysis.layer_table(model, [batch])
    with torch.no_grad():
        out = model.vit(pixel_values=batch["pixel_values"], output_hidden_states=True)
    # hidden_states[0] is the embedding output, [1:] the blocks' (before ViT's final layernorm); after it: the
    # last_hidden_state, the final-norm row
    hidden = [*out.hidden_states[1:], out.last_hidden_state]
    assert [(row["layer"], row["output"]) for row in table] == [(0, "block"), (1, "block"), (2, "final norm")]
    for row in table:
        states = hidden[row["layer"]].double().numpy()
        expected = _reference_row(list(states))
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_layer_table_ignores_padding_and_batching(tiny_tokenizer, tiny_model):
    texts = ["Question: Tom has 12 apples.", "Answer: 6 * 4 = 24 pens and more words here", "#### 47"]
    tiny_tokenizer.padding_side = "right"
    padded = dict(tiny_tokenizer(texts, padding=True, return_tensors="pt"))
    singles = [dict(tiny_tokenizer([t], return_tensors="pt")) for t in texts]
    together = analysis.layer_table(tiny_model, [padded], layers=[0, -1])
    apart = analysis.layer_table(tiny_model, singles, layers=[0, -1])
    assert [r["layer"] for r in together] == [0, 1]
    for a, b in zip(together, apart, strict=True):
        for key in analysis.LAYER_METRICS:
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    with pytest.raises(ValueError, match="outside the model's 2 blocks"):
        analysis.layer_table(tiny_model, [padded], layers=[2])
    with pytest.raises(ValueError, match="no batches"):
        analysis.layer_table(tiny_model, [])


def test_random_init_is_seeded_and_diff_erank_is_the_difference():
    model = _vit(seed=3)
    a = random_init(type(model), model.config, seed=0)
    b = random_init(type(model), model.config, seed=0)
    c = random_init(type(model), model.config, seed=1)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not all(torch.equal(a.state_dict()[k], c.state_dict()[k]) for k in a.state_dict())
    batch = _images()
    table, reference = analysis.layer_table(model, [batch]), analysis.layer_table(a, [batch])
    rows = analysis.with_diff_erank(table, reference)
    for row, ref in zip(rows, reference, strict=True):
        assert row["diff_erank"] == pytest.approx(ref["effective_rank"] - row["effective_rank"])
    with pytest.raises(ValueError, match="same layers"):
        analysis.with_diff_erank(table, reference[:1])


def test_interpolate_states_end_points_midpoint_and_architecture_check():
    a, b = _vit(0).state_dict(), _vit(1).state_dict()
    for key in a:
        assert torch.equal(interpolate_states(a, b, 1.0)[key], a[key])
        assert torch.equal(interpolate_states(a, b, 0.0)[key], b[key])
    mid = interpolate_states(a, b, 0.5)
    key = next(k for k in a if a[k].is_floating_point())
    torch.testing.assert_close(mid[key], (a[key] + b[key]) / 2)
    ints = {"n": torch.tensor(3)}
    assert interpolate_states(ints, {"n": torch.tensor(7)}, 0.5)["n"].item() == 3  # from A, not averaged
    wider = build_image_classifier(
        "tiny-vit", num_labels=3, image_size=8, hidden_size=64, num_layers=2
    ).state_dict()
    with pytest.raises(ValueError, match="not the same architecture"):
        interpolate_states(a, wider, 0.5)


def _loss_accuracy(model, batch) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(pixel_values=batch["pixel_values"]).logits
    loss = torch.nn.functional.cross_entropy(logits, batch["labels"]).item()
    return loss, (logits.argmax(-1) == batch["labels"]).float().mean().item()


def test_lmc_path_end_points_are_the_two_models_and_a_model_with_itself_has_no_barrier():
    model_a, model_b, batch = _vit(0), _vit(1), _images(24)
    out = analysis.lmc_path(model_a, model_b, [batch], grid=[0.0, 0.5, 1.0])
    assert [p["omega"] for p in out["path"]] == [0.0, 0.5, 1.0]
    for point, model in ((out["path"][0], model_b), (out["path"][-1], model_a)):
        loss, accuracy = _loss_accuracy(model, batch)
        assert point["loss"] == pytest.approx(loss, rel=1e-5)
        assert point["accuracy"] == pytest.approx(accuracy)
    mid = interpolate_states(model_a.state_dict(), model_b.state_dict(), 0.5)
    model_b.load_state_dict(mid)
    assert out["path"][1]["loss"] == pytest.approx(_loss_accuracy(model_b, batch)[0], rel=1e-5)
    line = (out["path"][0]["loss"] + out["path"][-1]["loss"]) / 2
    assert out["loss_barrier"] == pytest.approx(max(0.0, out["path"][1]["loss"] - line), abs=1e-9)
    same = analysis.lmc_path(model_a, model_a, [batch], grid=[0.0, 0.5, 1.0])
    assert same["loss_barrier"] == pytest.approx(0.0, abs=1e-6)
    assert len({round(p["matrix_entropy"], 6) for p in same["path"]}) == 1
    with pytest.raises(ValueError, match="at least 2 values"):
        analysis.lmc_path(model_a, model_a, [batch], grid=[0.5])


def test_lmc_path_on_a_causal_lm_uses_next_token_targets(tiny_tokenizer, tiny_model):
    batch = dict(
        tiny_tokenizer(["Question: Tom has 12 apples.", "#### 47"], padding=True, return_tensors="pt")
    )
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    out = analysis.lmc_path(tiny_model, tiny_model, [batch], grid=[0.0, 1.0])
    with torch.no_grad():
        reference = tiny_model(**batch).loss.item()  # transformers shifts the labels itself
    assert out["path"][0]["loss"] == pytest.approx(reference, rel=1e-5)

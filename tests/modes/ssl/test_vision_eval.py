"""matrix_llm.modes.ssl.evaluate: the linear probe scores held-out rows, kNN votes with its k nearest, the features are
the class token of a ViT, and `eval probe` / `eval knn` measure a random-init reference that is not the model.

Run: .venv/bin/python -m pytest tests/modes/ssl/test_vision_eval.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from matrix_llm.data.images import ImageCollator, load_image_dataset
from matrix_llm.models.tiny import build_image_backbone, random_init
from matrix_llm.modes.ssl.evaluate import extract_features, knn_accuracy, linear_probe_accuracy


def test_the_linear_probe_is_scored_on_the_held_out_rows():
    """Test rows = the training rows with every label moved to the next class: a probe that fits its training
    set perfectly scores 0 on them (1 if it were scored on its training rows, or fitted on the test rows)."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 15)
    x = np.eye(3)[y] * 6 + rng.normal(scale=0.3, size=(45, 3))
    assert linear_probe_accuracy(x, y, x, y) == 1.0
    assert linear_probe_accuracy(x, y, x, (y + 1) % 3) == 0.0
    assert linear_probe_accuracy(x, y, x[:6], np.array([1, 0, 0, 0, 0, 0])) == pytest.approx(5 / 6)


def test_knn_votes_with_its_k_nearest_neighbours():
    """The nearest training point is class 0, the next four are class 1: k = 1 says 0, k = 5 says 1."""
    train = np.array([[1.0, 0.0], [0.95, 0.31], [0.95, -0.31], [0.9, 0.44], [0.9, -0.44], [-1.0, 0.0]])
    labels = np.array([0, 1, 1, 1, 1, 0])
    test = np.array([[1.0, 0.01]])
    assert knn_accuracy(train, labels, test, np.array([0]), k=1) == 1.0
    assert knn_accuracy(train, labels, test, np.array([1]), k=5, temperature=1.0) == 1.0
    assert (
        knn_accuracy(train, labels, test, np.array([0]), k=6, temperature=1.0) == 0.0
    )  # k = 6: still 4 of 1


def test_frozen_features_are_the_class_token_of_a_vit():
    vit = build_image_backbone("tiny-vit", image_size=8, num_channels=1, hidden_size=32, seed=0)
    rows = load_image_dataset("digits", "test").select(range(10))
    collator = ImageCollator(image_size=8, channels=1)
    feats, labels = extract_features(vit, rows, collator)
    with torch.no_grad():
        hidden = vit.eval()(
            pixel_values=collator([rows[i] for i in range(10)])["pixel_values"]
        ).last_hidden_state
    np.testing.assert_allclose(feats, hidden[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(feats, hidden.mean(1).numpy(), atol=1e-3)
    assert labels.tolist() == rows["label"]


def test_a_vit_mae_encoder_sees_every_patch_when_its_features_are_extracted():
    """Hugging Face's ViTMAEModel masks at random in eval mode too: with its training ratio (0.75) the features
    would come from a random quarter of each image and differ from call to call."""
    from matrix_llm.models.tiny import build_mae

    encoder = build_mae(image_size=8, num_channels=1, hidden_size=32, seed=0).vit
    assert encoder.config.mask_ratio == 0.75
    rows = load_image_dataset("digits", "test").select(range(10))
    collator = ImageCollator(image_size=8, channels=1)
    feats, _ = extract_features(encoder, rows, collator)
    again, _ = extract_features(encoder, rows, collator)
    np.testing.assert_array_equal(feats, again)
    assert encoder.config.mask_ratio == 0.75  # restored: training goes on masking
    encoder.config.mask_ratio = 0.0
    with torch.no_grad():
        hidden = encoder.eval()(pixel_values=collator([rows[i] for i in range(10)])["pixel_values"])
    assert hidden.last_hidden_state.shape[1] == 17  # 16 patches + CLS
    np.testing.assert_allclose(feats, hidden.last_hidden_state[:, 0].numpy(), rtol=1e-4, atol=1e-5)


def _dead_backbone(path):
    """A saved ViT whose weights are all 0: constant features, so its probe and kNN are at the level of one
    class, far below any random init."""
    vit = build_image_backbone("tiny-vit", image_size=8, num_channels=1, hidden_size=32, seed=1)
    with torch.no_grad():
        for p in vit.parameters():
            p.zero_()
    vit.save_pretrained(path)
    return vit


@pytest.mark.parametrize("task", ["probe", "knn"])
def test_eval_measures_the_model_and_a_fresh_random_init_of_its_architecture(tmp_path, task):
    from matrix_llm.modes.ssl.evaluate import knn_accuracy as knn
    from matrix_llm.tools.eval import main as eval_main

    dead = _dead_backbone(tmp_path / "dead")
    assert (
        eval_main(
            [
                task,
                "--model",
                str(tmp_path / "dead"),
                "--data",
                "digits",
                "--max_train_samples",
                "300",
                "--seed",
                "4",
                "--output_dir",
                str(tmp_path / task),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / task / "results.json").read_text())
    train = load_image_dataset("digits", "train").select(range(300))
    test = load_image_dataset("digits", "test")
    collator = ImageCollator(image_size=8, channels=1)
    score = linear_probe_accuracy if task == "probe" else knn
    expected = {}
    for name, model in (("trained", dead), ("random_init", random_init(type(dead), dead.config, seed=4))):
        expected[name] = score(
            *extract_features(model, train, collator), *extract_features(model, test, collator)
        )
    assert result["trained"] == pytest.approx(expected["trained"]) and result["trained"] < 0.2
    assert result["random_init"] == pytest.approx(expected["random_init"]) and result["random_init"] > 0.25


def test_eval_probe_reads_the_features_of_the_pooling_it_is_given(tmp_path):
    """`--pooling mean` probes the mean over a ViT's tokens (its results say so); the default, the class token,
    probes other features."""
    from matrix_llm.tools.eval import main as eval_main

    vit = build_image_backbone("tiny-vit", image_size=8, num_channels=1, hidden_size=32, seed=2)
    vit.save_pretrained(tmp_path / "vit")
    train = load_image_dataset("digits", "train").select(range(300))
    test = load_image_dataset("digits", "test")
    collator = ImageCollator(image_size=8, channels=1)
    results = {}
    for pooling in ("cls", "mean"):
        flags = ["--pooling", pooling] if pooling == "mean" else []
        argv = ["probe", "--model", str(tmp_path / "vit"), "--data", "digits", "--max_train_samples", "300"]
        assert eval_main([*argv, *flags, "--output_dir", str(tmp_path / pooling)]) == 0
        results[pooling] = json.loads((tmp_path / pooling / "results.json").read_text())
        expected = linear_probe_accuracy(
            *extract_features(vit, train, collator, pooling=pooling),
            *extract_features(vit, test, collator, pooling=pooling),
        )
        assert results[pooling]["trained"] == pytest.approx(expected)
    assert results["mean"]["pooling"] == "mean" and results["cls"]["pooling"] == "default"
    assert results["mean"]["trained"] != results["cls"]["trained"]

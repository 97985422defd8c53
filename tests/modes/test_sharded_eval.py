"""End-of-run evaluation at scale: features extracted batch by batch, each process on its shard and gathered in
order (matrix_llm.features.sharded), the raw-pixel baseline on a seeded class-balanced subset, and the torch linear
probe that takes over from scikit-learn on large sets.

Run: .venv/bin/python -m pytest tests/modes/test_sharded_eval.py -q   (the two-process test: -m slow)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import REPO

from matrix_llm.data.images import ImageCollator, load_image_dataset
from matrix_llm.features.sharded import shard_bounds
from matrix_llm.models.tiny import build_image_backbone
from matrix_llm.modes.ssl import evaluate
from matrix_llm.modes.ssl.command import probe_results


def test_the_shards_cover_the_rows_once_in_order():
    for n in (0, 1, 7, 10, 301):
        for world in (1, 2, 3, 8):
            bounds = [shard_bounds(n, world, r) for r in range(world)]
            assert [i for a, b in bounds for i in range(a, b)] == list(range(n))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


def test_the_raw_pixel_subset_is_class_balanced_seeded_and_all_rows_below_the_cap():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 4)
    subset = evaluate.balanced_subset(labels, 30, seed=0)
    assert subset == sorted(set(subset)) and len(subset) == 30
    assert Counter(labels[subset].tolist()) == {0: 13, 1: 13, 2: 4}  # the small class whole, the rest shared
    assert evaluate.balanced_subset(labels, 30, seed=0) == subset
    assert evaluate.balanced_subset(labels, 30, seed=1) != subset
    assert evaluate.balanced_subset(labels, 84, seed=0) == list(range(84))


def _digit_features(seed=0):
    vit = build_image_backbone("tiny-vit", image_size=16, num_channels=1, hidden_size=64, seed=seed)
    collator = ImageCollator(image_size=16, channels=1)
    return [
        *evaluate.extract_features(vit, load_image_dataset("digits", "train"), collator),
        *evaluate.extract_features(vit, load_image_dataset("digits", "test"), collator),
    ]


def test_the_torch_probe_agrees_with_scikit_learn_on_the_same_features():
    """Both minimise scikit-learn's L2 logistic regression objective on standardised features: on frozen ViT features
    and on raw digits pixels (a constant pixel column included) they agree within 1 point, at C = 1 and C = 0.01."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = [digits.data[:1200], digits.target[:1200], digits.data[1200:], digits.target[1200:]]
    assert (digits.data[:1200].std(0) == 0).any()
    for features in (_digit_features(), pixels):
        for c in (1.0, 0.01):
            scikit = evaluate.linear_probe_accuracy(*features, c=c, solver="sklearn")
            torch_ = evaluate.linear_probe_accuracy(*features, c=c, solver="torch", device="cpu")
            assert abs(scikit - torch_) <= 0.01, (c, scikit, torch_)
    # chunks of rows: the same optimum as one chunk
    assert evaluate.torch_linear_probe(*pixels, chunk=97) == pytest.approx(
        evaluate.torch_linear_probe(*pixels)
    )


def test_the_solver_switches_to_torch_above_the_stated_size(monkeypatch):
    assert evaluate.probe_solver(evaluate.SKLEARN_MAX_ROWS) == "sklearn"
    assert evaluate.probe_solver(evaluate.SKLEARN_MAX_ROWS + 1) == "torch"
    assert evaluate.probe_solver(10, "torch") == "torch"
    with pytest.raises(ValueError, match="auto, sklearn or torch"):
        evaluate.probe_solver(10, "liblinear")
    used = []
    monkeypatch.setattr(evaluate, "SKLEARN_MAX_ROWS", 100)
    monkeypatch.setattr(evaluate, "torch_linear_probe", lambda *a, **k: used.append(len(a[0])) or 0.5)
    x, y = np.eye(4)[np.arange(120) % 4], np.arange(120) % 4
    assert evaluate.linear_probe_accuracy(x, y, x, y) == 0.5 and used == [120]
    assert evaluate.linear_probe_accuracy(x[:100], y[:100], x, y) == 1.0 and used == [120]


class _Largest:
    """An image collator that records the largest batch it was handed."""

    def __init__(self, inner):
        self.inner, self.largest, self.image_size = inner, 0, inner.image_size

    def __call__(self, rows):
        self.largest = max(self.largest, len(rows))
        return self.inner(rows)


def test_the_end_of_run_probes_never_collate_more_than_a_batch():
    """The raw-pixel baseline once collated the whole training split into one tensor (770 GB on ImageNet): now every
    image, raw pixels included, goes through batches of `batch_size`, and the raw-pixel probe fits on the capped
    subset."""
    vit = build_image_backbone("tiny-vit", image_size=8, num_channels=1, hidden_size=32, seed=1)
    train = load_image_dataset("digits", "train").select(range(200))
    test = load_image_dataset("digits", "test").select(range(90))
    collator = _Largest(ImageCollator(image_size=8, channels=1))
    results = probe_results(vit, 3, train, test, collator, raw_pixels_max_train=60, batch_size=32)
    assert collator.largest == 32
    assert results["raw_pixels_train_images"] == 60 and results["raw_pixels_features"] == 64
    subset = train.select(evaluate.balanced_subset(train["label"], 60, 3))
    expected = evaluate.linear_probe_accuracy(
        *evaluate.raw_pixels(subset, collator), *evaluate.raw_pixels(test, collator)
    )
    assert results["probe_raw_pixels"] == pytest.approx(expected)


def test_raw_pixels_above_32_are_area_downsampled():
    rows = [{"image": np.full((64, 64), 10 * i, np.uint8), "label": i} for i in range(3)]
    collator = ImageCollator(image_size=64, channels=1)
    pixels, labels = evaluate.raw_pixels(rows, collator)
    full = collator(rows)["pixel_values"]
    assert pixels.shape == (3, 32 * 32) and labels.tolist() == [0, 1, 2]
    np.testing.assert_allclose(pixels, torch.nn.functional.avg_pool2d(full, 2).flatten(1).numpy(), atol=1e-6)


@pytest.mark.slow
def test_two_processes_give_the_numbers_of_one(tmp_path):
    """tests/distributed/sharded_eval_worker.py on 1 and on 2 real processes (gloo): the SSL probes, kNN and raw-pixel
    probe and CLIP's retrieval (one or two captions per image) and zero-shot numbers are the same, and each process
    decoded about half of the images."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    worker = str(REPO / "tests" / "distributed" / "sharded_eval_worker.py")
    for name, launch in (
        ("one", [sys.executable, worker]),
        (
            "two",
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", worker],
        ),
    ):
        (tmp_path / name).mkdir()
        subprocess.run([*launch, str(tmp_path / name)], check=True, env=env, cwd=REPO, timeout=600)
    one = json.loads((tmp_path / "one" / "rank0.json").read_text())
    ranks = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert (
        ranks[0]["ssl"] == one["ssl"] and ranks[1]["ssl"] == {}
    )  # the probes are fitted on the main process
    assert ranks[0]["clip"] == one["clip"] == ranks[1]["clip"]
    assert one["clip"]["retrieval_captions"] == 91 and one["ssl"]["raw_pixels_train_images"] == 100
    for key in ("ssl_rows", "clip_rows"):
        assert sum(r[key] for r in ranks) == one[key]
        assert abs(ranks[0][key] - ranks[1][key]) <= 6, key  # at most one row more per pass over a split

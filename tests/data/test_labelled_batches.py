"""LabelledShareSampler: every batch holds the same number of labelled rows, an epoch is one pass over the
unlabelled rows, and the order is seeded by the seed and the epoch.

    .venv/bin/python -m pytest tests/data/test_labelled_batches.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from matrix_llm.data.labels import LabelledShareSampler


def _batches(sampler: LabelledShareSampler, batch_size: int) -> list[list[int]]:
    order = list(sampler)
    assert len(order) == len(sampler)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def test_every_batch_holds_the_labelled_rows_asked_for_and_an_epoch_covers_the_unlabelled_once():
    labelled = np.zeros(103, dtype=bool)
    labelled[[3, 17, 40, 41, 90]] = True  # 5 labelled, 98 unlabelled
    sampler = LabelledShareSampler(labelled, batch_size=16, per_batch=4, seed=1)
    batches = _batches(sampler, 16)
    assert len(batches) == 9  # ceil(98 / 12)
    assert [sum(labelled[i] for i in b) for b in batches] == [4] * 9
    rest = [i for b in batches for i in b if not labelled[i]]
    assert sorted(rest) == np.flatnonzero(~labelled).tolist()  # each unlabelled row once
    uses = np.bincount([i for b in batches for i in b if labelled[i]], minlength=103)[labelled]
    assert uses.sum() == 36 and uses.max() - uses.min() <= 1  # 36 draws from 5 rows: reused in turn


def test_the_order_is_seeded_by_the_seed_and_the_epoch():
    labelled = np.arange(60) % 6 == 0
    a, b = LabelledShareSampler(labelled, 8, 2, seed=0), LabelledShareSampler(labelled, 8, 2, seed=0)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    again = list(a)
    assert again != first and len(again) == len(first)  # a new order
    assert sorted(i for i in again if not labelled[i]) == sorted(i for i in first if not labelled[i])
    assert list(LabelledShareSampler(labelled, 8, 2, seed=1)) != first


@pytest.mark.parametrize(
    ("labelled", "per_batch", "match"),
    [
        ([True, False] * 8, 0, r"`per_batch` must be in \[1, batch_size - 1\] = \[1, 7\]; got 0"),
        ([True, False] * 8, 8, r"got 8"),
        ([False] * 16, 2, "got 0 labelled, 16 unlabelled"),
        ([True] * 16, 2, "got 16 labelled, 0 unlabelled"),
    ],
)
def test_impossible_shares_are_refused(labelled, per_batch, match):
    with pytest.raises(ValueError, match=match):
        LabelledShareSampler(labelled, 8, per_batch)

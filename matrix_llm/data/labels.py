"""Labels every mode shares: :data:`IGNORE_INDEX`, the label of rows and positions no loss sees (a prompt, padding,
an unlabelled image), and :func:`label_fraction_mask`, the seeded class-balanced share of labels a
semi-supervised run keeps, and :class:`LabelledShareSampler`, the training order in which every batch holds a fixed
number of labelled rows. A leaf: it imports nothing of matrix_llm.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["IGNORE_INDEX", "LabelledShareSampler", "label_fraction_mask"]

IGNORE_INDEX = -100  # PyTorch's cross-entropy default ignore_index


def label_fraction_mask(labels: Sequence[int], fraction: float, *, seed: int = 0) -> np.ndarray:
    """Which examples keep their label: ``fraction`` of each class (at least one), drawn with ``seed``."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label_fraction_mask: `fraction` must be in (0, 1]; got {fraction!r}")
    labels = np.asarray(labels)
    keep = np.zeros(len(labels), dtype=bool)
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep[rng.choice(idx, size=max(1, round(fraction * len(idx))), replace=False)] = True
    return keep


class LabelledShareSampler(Sampler[int]):
    """Training indices in which every batch of ``batch_size`` holds ``per_batch`` labelled rows (FixMatch's
    labelled / unlabelled batch split, Sohn et al. 2020, in one batch): each batch is ``per_batch`` labelled rows,
    taken in turn from a reshuffled pass over the labelled ones (which are reused as often as needed), then
    ``batch_size - per_batch`` unlabelled rows; an epoch is one shuffled pass over the unlabelled rows. Seeded by
    ``seed`` and the epoch (:meth:`set_epoch`, which the Trainer calls through accelerate's data loader), so every
    epoch draws a new order and a run repeats. With few labels a uniform draw gives a batch of 64 about 0.6
    labelled rows at 1 %: the cross-entropy then sees a label or none.

    Args:
        labelled: per row, whether it keeps its label.
        batch_size: the per-device batch the DataLoader cuts this order into.
        per_batch: labelled rows in each batch, ``1 <= per_batch < batch_size``.
        seed: the seed of the order.
    """

    def __init__(self, labelled: Sequence[bool], batch_size: int, per_batch: int, *, seed: int = 0) -> None:
        labelled = np.asarray(labelled, dtype=bool)
        if not 1 <= per_batch < batch_size:
            raise ValueError(
                f"LabelledShareSampler: `per_batch` must be in [1, batch_size - 1] = [1, {batch_size - 1}]; "
                f"got {per_batch!r}"
            )
        self.labelled, self.unlabelled = np.flatnonzero(labelled), np.flatnonzero(~labelled)
        if not len(self.labelled) or not len(self.unlabelled):
            raise ValueError(
                f"LabelledShareSampler: needs labelled and unlabelled rows; got {len(self.labelled)} labelled, "
                f"{len(self.unlabelled)} unlabelled"
            )
        self.batch_size, self.per_batch, self.seed, self.epoch = batch_size, per_batch, seed, 0
        self.batches = math.ceil(len(self.unlabelled) / (batch_size - per_batch))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches * self.per_batch + len(self.unlabelled)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        rest = rng.permutation(self.unlabelled)
        passes = math.ceil(self.batches * self.per_batch / len(self.labelled))
        labelled = np.concatenate([rng.permutation(self.labelled) for _ in range(passes)])
        step = self.batch_size - self.per_batch
        for b in range(self.batches):
            yield from labelled[b * self.per_batch : (b + 1) * self.per_batch].tolist()
            yield from rest[b * step : (b + 1) * step].tolist()

"""Labels every mode shares: :data:`IGNORE_INDEX`, the label of rows and positions no loss sees (a prompt, padding,
an unlabelled image), and :func:`label_fraction_mask`, the seeded class-balanced share of labels a
semi-supervised run keeps. A leaf: it imports nothing of matrix_llm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["IGNORE_INDEX", "label_fraction_mask"]

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

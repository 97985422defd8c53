"""Weight-space arithmetic on state dicts, shared by ``matrix-llm analyze lmc`` (the path between two checkpoints)
and ``matrix-llm clip``'s WiSE-FT sweep (between the weights before and after fine-tuning)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["interpolate_states"]


def interpolate_states(a: Mapping[str, Tensor], b: Mapping[str, Tensor], omega: float) -> dict[str, Tensor]:
    """``ω·a + (1-ω)·b`` for every floating-point tensor; integer buffers (position ids, BN counters) from ``a``.

    Raises:
        ValueError: the two state dicts do not have the same keys and shapes (different architectures).
    """
    problems = sorted(set(a) ^ set(b))[:5]
    problems += [
        f"{k}: {tuple(a[k].shape)} vs {tuple(b[k].shape)}" for k in a if k in b and a[k].shape != b[k].shape
    ][:5]
    if problems:
        raise ValueError(
            "interpolate_states: the two checkpoints are not the same architecture (first differences: "
            + "; ".join(problems)
            + ")"
        )
    return {k: torch.lerp(b[k], a[k].to(b[k].dtype), omega) if a[k].is_floating_point() else a[k] for k in a}

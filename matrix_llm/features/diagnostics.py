"""Matrix diagnostics of representations, shared by the objectives and the callbacks (no gradients).

:func:`entropy_erank` is the quantity every mode logs as ``matrix_entropy`` / ``effective_rank``: the von
Neumann entropy of the trace-normalised cosine Gram of the ``(n, d)`` rows (on the cheaper side,
:func:`matrix_llm.info.feature_entropy`) and its exp, so runs of different modes and losses compare directly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from matrix_llm import info

__all__ = ["entropy_erank"]


def entropy_erank(features: Tensor) -> tuple[Tensor, Tensor]:
    """Matrix entropy and effective rank of the rows of ``features (n, d)``, in float32 at least, detached."""
    z = features.detach()
    with torch.no_grad():
        ent = info.feature_entropy(z if z.dtype == torch.float64 else z.float())
    return ent, ent.exp()

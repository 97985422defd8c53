"""Matrix analysis of trained models (the library behind ``matrix-llm analyze``): per-layer tables and the
linear-mode-connectivity path between two checkpoints.

Per layer (:func:`layer_table`), over a fixed set of batches, for each block of the model's layer stack
(``output: block``, rows ``0 .. n-1``; the last block's output comes before the model's final norm) and, when all
blocks are measured and the model has a final norm, for that norm's output (``output: final norm``, row ``n``:
the model's last hidden state, what Diff-eRank reports for an LLM):

- ``matrix_entropy`` / ``effective_rank``: Diff-eRank's dataset-level quantities (Wei et al., NeurIPS 2024;
  docs/formulations.md): the tokens (patches, spatial positions) of one example form an ``(L, d)`` matrix,
  centred then row-normalised; ``H`` is its matrix entropy, averaged over the examples; ``eRank = exp(mean H)``.
- ``nuclear_norm``: the Matrix Nuclear-Norm (Li et al. 2024) of the same per-example matrix, averaged.
- ``pooled_effective_rank``: ``exp`` of the matrix entropy of the examples' mean-pooled rows (one row per
  example): what :class:`~matrix_llm.callbacks.MatrixMetricsCallback` logs during training.
- ``diff_erank`` (with a reference table, e.g. of the same architecture at random init,
  :func:`~matrix_llm.models.tiny.random_init`): ``eRank(reference) - eRank(model)``, larger for better-trained models.

:func:`lmc_path` evaluates ``θ(ω) = ω·θ_A + (1-ω)·θ_B`` on a grid of ``ω`` (Frankle et al., ICML 2020): loss,
accuracy and the last layer's matrix entropy, and the barriers (the largest gap to the straight line between the
end points).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from matrix_llm import features, info
from matrix_llm.data.labels import IGNORE_INDEX
from matrix_llm.features import diagnostics
from matrix_llm.models.weights import interpolate_states

__all__ = ["LAYER_METRICS", "layer_table", "lmc_path", "with_diff_erank"]

LAYER_METRICS = ("matrix_entropy", "effective_rank", "nuclear_norm", "pooled_effective_rank")


def _to(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _examples(states: Tensor, mask: Tensor | None) -> list[Tensor]:
    """One ``(L, d)`` token matrix per example of a block output (``(N, L, d)``, or ``(N, C, H, W)`` maps)."""
    if states.dim() == 4:  # convolutional feature maps: the spatial positions are the tokens
        states = states.flatten(2).mT
    if states.dim() != 3:
        raise ValueError(
            f"analysis: expected block outputs (N, L, d) or (N, C, H, W); got {tuple(states.shape)}"
        )
    if mask is None or mask.shape != states.shape[:2]:
        return list(states)
    return [s[m.bool()] for s, m in zip(states, mask, strict=True)]


class _LayerSums:
    """Running sums of the per-example quantities of one layer, and its pooled rows."""

    def __init__(self) -> None:
        self.entropy = 0.0
        self.nuclear = 0.0
        self.count = 0
        self.pooled: list[Tensor] = []

    def add(self, states: Tensor, mask: Tensor | None) -> None:
        for tokens in _examples(states.detach().double(), mask):
            self.entropy += float(info.feature_entropy(tokens, center=True))
            self.nuclear += float(info.matrix_nuclear_norm(tokens))
            self.count += 1
            self.pooled.append(tokens.mean(0))

    def row(self, layer: int) -> dict[str, float]:
        mean_entropy = self.entropy / self.count
        return {
            "layer": layer,
            "matrix_entropy": mean_entropy,
            "effective_rank": math.exp(mean_entropy),
            "nuclear_norm": self.nuclear / self.count,
            "pooled_effective_rank": float(diagnostics.entropy_erank(torch.stack(self.pooled))[1]),
        }


def _forward_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k != "labels"}


@torch.no_grad()
def layer_table(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    *,
    layers: Sequence[int] | None = None,
    desc: str | None = None,
) -> list[dict[str, Any]]:
    """The per-layer metrics (module docstring) of ``model`` over ``batches``: one dict per block, in order, then
    the final norm's (``layers=None`` only).

    Raises:
        ValueError: no batches, a layer index out of range, or a model whose block stack cannot be found.
    """
    sums: dict[int, _LayerSums] = {}
    with features.evaluating(model) as device:
        total = len(batches) if hasattr(batches, "__len__") else None
        for batch in tqdm(batches, total=total, desc=desc or "layers", disable=desc is None, leave=False):
            batch = _to(batch, device)
            with features.capture_layers(model, layers, final_norm=layers is None) as hidden:
                model(**_forward_inputs(batch))
            for index, states in hidden.items():
                sums.setdefault(index, _LayerSums()).add(states, batch.get("attention_mask"))
    if not sums:
        raise ValueError("layer_table: no batches (the data gave no examples)")
    blocks = len(features.decoder_layers(model))
    return [{**sums[i].row(i), "output": "final norm" if i == blocks else "block"} for i in sorted(sums)]


def with_diff_erank(
    table: list[dict[str, float]], reference: list[dict[str, float]]
) -> list[dict[str, float]]:
    """``table`` with ``diff_erank = eRank(reference) - eRank(model)`` per layer (same layers in both)."""
    if [r["layer"] for r in table] != [r["layer"] for r in reference]:
        raise ValueError("with_diff_erank: the two tables do not have the same layers")
    return [
        {**row, "diff_erank": ref["effective_rank"] - row["effective_rank"]}
        for row, ref in zip(table, reference, strict=True)
    ]


def _loss_and_hits(outputs: Any, labels: Tensor, causal: bool) -> tuple[float, int, int]:
    """Summed cross-entropy, correct predictions and counted targets of one batch (labels ``-100`` skipped)."""
    logits = outputs.logits.float()
    if causal:  # next-token prediction: position t predicts label t+1
        logits, labels = logits[:, :-1], labels[:, 1:]
    logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    keep = labels != IGNORE_INDEX
    if not bool(keep.any()):
        return 0.0, 0, 0
    loss = torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum")
    return float(loss), int((logits[keep].argmax(-1) == labels[keep]).sum()), int(keep.sum())


@torch.no_grad()
def _evaluate(model: nn.Module, batches: Iterable[Mapping[str, Any]], causal: bool) -> dict[str, float]:
    device = next(model.parameters()).device
    loss = hits = count = 0
    pooled = []
    for batch in batches:
        batch = _to(batch, device)
        with features.capture_layers(model, [-1]) as hidden:
            outputs = model(**_forward_inputs(batch))
        (states,) = hidden.values()
        mask = batch.get("attention_mask")
        pooled += [tokens.double().mean(0) for tokens in _examples(states, mask)]
        if "labels" in batch:
            s, h, c = _loss_and_hits(outputs, batch["labels"], causal)
            loss, hits, count = loss + s, hits + h, count + c
    entropy, erank = diagnostics.entropy_erank(torch.stack(pooled))
    out = {"matrix_entropy": float(entropy), "effective_rank": float(erank)}
    if count:
        out.update(loss=loss / count, accuracy=hits / count)
    return out


def _barrier(path: list[dict[str, float]], key: str, sign: float) -> float:
    """Largest ``sign * (value - straight line between the end points)`` along the path (0 when convex)."""
    at_a, at_b = path[-1], path[0]  # ω ascending: path[0] is B (ω = 0), path[-1] is A (ω = 1)
    return max(sign * (p[key] - (p["omega"] * at_a[key] + (1 - p["omega"]) * at_b[key])) for p in path)


def lmc_path(
    model_a: nn.Module, model_b: nn.Module, batches: Iterable[Mapping[str, Any]], *, grid: Sequence[float]
) -> dict[str, Any]:
    """Loss, accuracy and last-layer matrix entropy along ``ω·θ_A + (1-ω)·θ_B`` for ``ω`` in ``grid``.

    Returns ``{"path": [{"omega", "loss", "accuracy", "matrix_entropy", "effective_rank"}, ...] (ω ascending),
    "loss_barrier", "accuracy_barrier"}``; loss and accuracy (and the barriers) need ``labels`` in the batches
    (next-token targets for a causal LM, class labels for a classifier).
    """
    omegas = sorted(float(w) for w in grid)
    if len(omegas) < 2 or omegas[0] < 0 or omegas[-1] > 1:
        raise ValueError(f"lmc_path: `grid` needs at least 2 values in [0, 1]; got {list(grid)}")
    batches = batches if hasattr(batches, "__len__") else list(batches)  # several passes: one per omega
    if not len(batches):
        raise ValueError("lmc_path: no batches (the data gave no examples)")
    state_a, state_b = features.unwrap(model_a).state_dict(), features.unwrap(model_b).state_dict()
    interpolate_states(state_a, state_b, 0.0)  # the architecture check, before any work
    work = copy.deepcopy(features.unwrap(model_a)).eval()
    causal = callable(getattr(work, "can_generate", None)) and work.can_generate()
    path = []
    for omega in tqdm(omegas, desc="interpolation", leave=False):
        work.load_state_dict(interpolate_states(state_a, state_b, omega))
        path.append({"omega": omega, **_evaluate(work, batches, causal)})
    out: dict[str, Any] = {"path": path}
    if "loss" in path[0] and omegas[0] == 0.0 and omegas[-1] == 1.0:
        out.update(
            loss_barrier=_barrier(path, "loss", 1.0), accuracy_barrier=_barrier(path, "accuracy", -1.0)
        )
    return out

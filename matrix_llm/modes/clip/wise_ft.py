"""WiSE-FT for ``matrix-llm clip`` (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022): the
weights ``θ(α) = α·θ_fine-tuned + (1-α)·θ_start`` measured for every ``α`` of ``wise_ft_alphas`` after training.

Fine-tuning a pretrained CLIP tends to cost zero-shot accuracy on other data (open_clip #740, #826); the open_clip
maintainers' answer is this interpolation (in Wortsman et al.'s ImageNet runs the mixtures keep most of the
fine-tuned gain and recover zero-shot accuracy under distribution shift; not measured here). The sweep measures each mixture as the end of the run does (zero-shot accuracy on the zero-shot set,
retrieval on the evaluation split), writes the rows to ``results.json`` (``wise_ft``), a table to ``report.md`` and
the curves to ``wise_ft.png``; the saved model stays the fine-tuned one (``α = 1``), and
:func:`~matrix_llm.models.weights.interpolate_states` of the two saved state dicts gives any mixture.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from matrix_llm import features
from matrix_llm.models.weights import interpolate_states

__all__ = ["PANELS", "snapshot", "wise_ft_report", "wise_ft_sweep"]

# the curves of wise_ft.png: (panel title, result keys drawn in it)
PANELS = (
    ("zero-shot top-1", ("zeroshot_top1",)),
    ("retrieval R@1", ("image_to_text_R@1", "text_to_image_R@1")),
)


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A CPU copy of ``model``'s state dict (the weights the sweep starts from)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@torch.no_grad()
def wise_ft_sweep(
    model: nn.Module,
    start: Mapping[str, Tensor],
    alphas: Sequence[float],
    measure: Callable[[nn.Module], Mapping[str, Any]],
) -> list[dict[str, float]]:
    """``measure(model)`` with ``model``'s weights (unwrapped from DDP / accelerate) set to ``α·θ_model +
    (1-α)·start`` for each ``α``; one row per distinct ``α``, ascending (``{"alpha": α, metric: value, ...}``, the
    numbers of ``measure``). ``model`` holds its own weights again afterwards, also when a measurement fails.

    Raises:
        ValueError: an ``α`` outside [0, 1], or ``start`` of another architecture.
    """
    bad = [a for a in alphas if not 0 <= a <= 1]
    if bad or not alphas:
        raise ValueError(f"wise_ft_sweep: every alpha must lie in [0, 1]; got {list(alphas)}")
    model = features.unwrap(model)
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start = {k: v.to(final[k].device) if k in final else v for k, v in start.items()}
    interpolate_states(final, start, 1.0)  # the architecture check, before any work
    rows = []
    try:
        for alpha in tqdm(sorted(set(alphas)), desc="WiSE-FT", leave=False):
            model.load_state_dict(interpolate_states(final, start, float(alpha)))
            numbers = {k: float(v) for k, v in measure(model).items() if isinstance(v, (int, float))}
            rows.append({"alpha": float(alpha), **numbers})
    finally:
        model.load_state_dict(final)
    return rows


def wise_ft_report(rows: Sequence[Mapping[str, float]], folder: Path) -> list[str]:
    """The report's WiSE-FT section (a table of the panels' metrics per ``α``) and ``folder/wise_ft.png``."""
    from matrix_llm.plotting import plot_lines

    keys = [k for _, names in PANELS for k in names if k in rows[0]]
    if not keys:
        return []
    alphas = [r["alpha"] for r in rows]
    panels = [
        (title, {k: (alphas, [r[k] for r in rows]) for k in names if k in rows[0]})
        for title, names in PANELS
        if any(k in rows[0] for k in names)
    ]
    plot_lines(
        panels,
        folder / "wise_ft.png",
        xlabel="α (0: the start, 1: the fine-tuned weights)",
        title="WiSE-FT: α·fine-tuned + (1-α)·start",
    )
    lines = [
        "",
        "## WiSE-FT (weights α·fine-tuned + (1-α)·start)",
        "",
        "| α | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    lines += [f"| {r['alpha']:g} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |" for r in rows]
    return [*lines, "", "![WiSE-FT](wise_ft.png)"]

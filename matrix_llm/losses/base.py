"""The return type shared by every loss module (and every objective): a total plus named parts."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["LossOutput"]


@dataclass(frozen=True)
class LossOutput:
    """What every loss module returns.

    Attributes:
        total (Tensor): the scalar to add to the task loss; carries the autograd graph.
        parts (dict[str, Tensor]): named scalar tensors for logging, detached, keyed by flat snake_case
            names (``"mce"``, ``"entropy"``, ``"uniformity"``, ...). The trainer logs each of them.
    """

    total: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.total, Tensor) or self.total.dim() != 0:
            shape = tuple(self.total.shape) if isinstance(self.total, Tensor) else type(self.total).__name__
            raise ValueError(f"LossOutput.total must be a scalar tensor; got {shape}")
        for name, value in self.parts.items():
            if not isinstance(value, Tensor) or value.dim() != 0:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"LossOutput.parts[{name!r}] must be a scalar tensor; got {shape}")


# ------------------------------------------------------------------------------------------------------------------
# small shared helpers for the loss modules (input checks); no formulas live here


def check_matrix(
    fn: str, name: str, x: object, *, rows: int | None = None, cols: int | None = None
) -> Tensor:
    """Check that ``x`` is a floating-point ``(rows, cols)`` tensor; return it."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: `{name}` must be a torch.Tensor; got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{fn}: `{name}` must have shape (n, d); got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{fn}: `{name}` must be a floating-point tensor; got {x.dtype}")
    if rows is not None and x.shape[0] != rows:
        raise ValueError(f"{fn}: `{name}` must have {rows} rows; got shape {tuple(x.shape)}")
    if cols is not None and x.shape[1] != cols:
        raise ValueError(f"{fn}: `{name}` must have {cols} columns; got shape {tuple(x.shape)}")
    return x


def check_labels(fn: str, labels: object, *, n: int, name: str = "labels") -> Tensor:
    """Check that ``labels`` is an integer ``(n,)`` tensor (values are checked by :func:`check_finite_and_range`)."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{fn}: `{name}` must be a torch.Tensor; got {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"{fn}: `{name}` must have shape ({n},); got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{fn}: `{name}` must be an integer (long) tensor; got {labels.dtype}")
    return labels


def check_finite_and_range(
    fn: str, features: dict[str, Tensor], labels: Tensor | None = None, num_classes: int | None = None
) -> None:
    """Raise ``ValueError`` naming the tensor with NaN/Inf, or labels outside ``[0, num_classes)``.

    One device synchronisation in the good case (all conditions are reduced to one flag first). The flag of a
    tensor is its float32 (or float64) sum being non-finite: NaN and Inf always reach the sum, which costs less
    than an elementwise ``isfinite`` (no boolean tensor); a sum that overflows from finite values is then
    counted elementwise and passes.
    """
    bad = torch.zeros((), dtype=torch.bool)
    flags: list[tuple[str, Tensor]] = []
    for name, x in features.items():
        flag = ~torch.isfinite(x.sum(dtype=torch.promote_types(x.dtype, torch.float32)))
        flags.append((name, flag))
        bad = bad.to(flag.device) | flag
    label_flag = None
    if labels is not None and labels.numel() > 0:
        label_flag = (labels.min() < 0) | (labels.max() >= num_classes)
        bad = bad.to(label_flag.device) | label_flag
    if not bool(bad):
        return
    for name, flag in flags:
        if bool(flag):
            x = features[name]
            n_nan = int(torch.isnan(x).sum())
            n_inf = int(torch.isinf(x).sum())
            if n_nan or n_inf:
                raise ValueError(
                    f"{fn}: `{name}` contains non-finite values ({n_nan} NaN, {n_inf} Inf of {x.numel()})"
                )
    if label_flag is None or not bool(label_flag):
        return
    lo, hi = int(labels.min()), int(labels.max())  # type: ignore[union-attr]
    raise ValueError(
        f"{fn}: `labels` must lie in [0, {num_classes}); got values in [{lo}, {hi}]. Select the positions to use "
        "first (e.g. labels != -100 after the causal shift)."
    )


def detached_parts(**parts: Tensor) -> dict[str, Tensor]:
    """Scalar parts for logging: detached."""
    return {name: value.detach() for name, value in parts.items()}

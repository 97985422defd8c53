"""Collectives for losses: an autograd-aware gather that is the identity on one process.

This is the only module that calls ``torch.distributed`` for losses (DESIGN.md, "Layers"). A batch-level
matrix loss (a covariance or Gram over the *global* batch) needs the features of every rank *with*
their gradients; :func:`all_gather_with_grad` provides that. It is never the right tool for metrics:
use ``accelerate``'s ``gather_for_metrics`` there (it also drops the samples duplicated to even out the
last batch).

Gradient semantics of :func:`all_gather_with_grad`
    Every rank gets the concatenation ``X = cat([x_0, ..., x_{W-1}])`` and computes some loss ``L_r(X)``
    on it. The backward pass sums the incoming gradients over ranks (an ``all_reduce``) and hands each
    rank the slice of its own rows, i.e. rank ``r`` receives ``d(sum_s L_s)/d x_r``.

    When all ranks compute the same loss ``L(X)`` and the data-parallel wrapper (DDP, Accelerate,
    DeepSpeed, FSDP) *averages* parameter gradients over the ``W`` ranks, this makes the resulting
    parameter gradient exactly the single-process gradient of ``L`` on the concatenated batch: every
    rank sees ``W * dL/dx_r``, and the average over ranks divides by ``W`` again. Equivalently, the
    gradient of ``(1/W) * sum_r L_r`` with respect to ``x_r`` equals the single-process gradient
    ``dL/dx_r``; ``tests/test_distributed.py`` checks this on two gloo processes.

Per-rank batch sizes may differ (the last batch of an epoch, a variable number of completion tokens):
sizes are gathered first, every tensor is padded to the largest size, gathered, and un-padded.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_gather_no_grad", "all_gather_with_grad", "is_distributed", "rank", "world_size"]


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group; 1 without an initialised process group."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Rank of this process in the default group; 0 without an initialised process group."""
    return dist.get_rank() if is_distributed() else 0


def _check_input(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} expects a torch.Tensor; got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError(
            f"{name} expects a tensor with at least one dimension (gathered along dim 0); got a scalar"
        )


def _gather_sizes(x: Tensor) -> list[int]:
    """First-dimension sizes of ``x`` on every rank (one small collective)."""
    size = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _gather_padded(x: Tensor, sizes: list[int]) -> Tensor:
    """Concatenate ``x`` of every rank along dim 0, where rank ``r`` holds ``sizes[r]`` rows."""
    x = x.contiguous()
    max_rows = max(sizes)
    if x.shape[0] < max_rows:
        pad = x.new_zeros((max_rows - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad], dim=0)
    buffers = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(buffers, x)
    return torch.cat([buf[:n] for buf, n in zip(buffers, sizes, strict=True)], dim=0)


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        sizes = _gather_sizes(x)
        ctx.sizes = sizes
        ctx.rank = rank()
        return _gather_padded(x, sizes)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:  # type: ignore[override]
        # Each rank computed its own loss on the same concatenation: the gradient for this rank's rows
        # is the sum over ranks of the gradients for those rows (reduce-scatter semantics).
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` over all ranks along dim 0, keeping the autograd graph.

    Args:
        x (Tensor): ``(n_r, *)`` on rank ``r``; ``n_r`` may differ between ranks (even be 0), the
            trailing dimensions, dtype and device must agree.

    Returns:
        Tensor: ``(sum_r n_r, *)``, rank 0's rows first. On one process (no initialised process group,
        or a world of size 1) ``x`` itself is returned.

    The backward pass all-reduces (sums) the output gradient and returns this rank's slice; see the
    module docstring for why that reproduces the single-process gradient under data-parallel gradient
    averaging. Never use this for metrics.
    """
    _check_input(x, "all_gather_with_grad")
    if world_size() == 1:
        return x
    return _AllGatherWithGrad.apply(x)


def all_gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` over all ranks along dim 0 without gradients (e.g. integer labels).

    Same shapes and ordering as :func:`all_gather_with_grad`; the result is detached. Identity on one
    process.
    """
    _check_input(x, "all_gather_no_grad")
    if world_size() == 1:
        return x.detach()
    with torch.no_grad():
        return _gather_padded(x.detach(), _gather_sizes(x))

"""Frozen-feature extraction at any dataset size: every process encodes its own contiguous shard of the rows, batch
by batch through a ``DataLoader``, and the per-process features are gathered back into the rows' order.

Peak memory is one batch of inputs plus the feature matrix itself, whatever the number of rows; with ``W``
processes each encodes ``N / W`` rows (the shards differ by at most one row, and :func:`gather_shards` handles
the uneven sizes). On one process (no initialised process group) this is a plain batched loop. Used by every
end-of-run evaluation that encodes a dataset: the SSL probes and kNN, CLIP's zero-shot and retrieval.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from matrix_llm import distributed

__all__ = ["gather_shards", "shard_batches", "shard_bounds"]


def shard_bounds(n: int, world: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """``(start, stop)``: the contiguous slice of ``n`` rows that process ``rank`` of ``world`` encodes; the first
    ``n % world`` processes take one row more. Concatenated in rank order the slices are ``range(n)``."""
    world = distributed.world_size() if world is None else world
    rank = distributed.rank() if rank is None else rank
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class _Slice(Dataset):
    """Rows ``start:stop`` of anything indexable by an integer (a ``datasets.Dataset``, a list of dicts)."""

    def __init__(self, rows: Any, start: int, stop: int) -> None:
        self.rows, self.start, self.stop = rows, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> Any:
        return self.rows[self.start + i]


def shard_batches(
    rows: Any,
    batch_size: int,
    collate: Callable[[list[Any]], Any] = list,
    *,
    num_workers: int = 0,
    desc: str | None = None,
) -> Iterator[Any]:
    """This process's shard of ``rows`` (:func:`shard_bounds`), in order, as ``collate(list of at most
    batch_size rows)``; ``num_workers`` DataLoader workers decode ahead of the model. ``desc``: a progress bar."""
    if batch_size < 1:
        raise ValueError(f"shard_batches: batch_size must be >= 1; got {batch_size}")
    start, stop = shard_bounds(len(rows))
    loader = DataLoader(
        _Slice(rows, start, stop),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate,
        num_workers=num_workers,
    )
    yield from tqdm(loader, desc=desc, disable=desc is None or distributed.rank() != 0, leave=False)


def gather_shards(x: Tensor | Sequence[Tensor]) -> Tensor:
    """The per-process pieces of a result (one tensor, or a list of batch results to concatenate first) joined
    along dim 0 in rank order, on every process (CPU, ``x``'s dtype); ``x`` itself on one process. Under NCCL the
    pieces travel through the GPU."""
    if not isinstance(x, Tensor):
        x = torch.cat(list(x)) if len(x) else torch.empty(0)
    if distributed.world_size() == 1:
        return x
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else x.device
    return distributed.all_gather_no_grad(x.to(device)).cpu()

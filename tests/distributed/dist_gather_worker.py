"""Two-process (gloo, CPU) check of ``matrix_llm.distributed.all_gather_with_grad``; run by tests/distributed/test_distributed.py.

    python tests/distributed/dist_gather_worker.py OUT_DIR

Forks 2 processes that rendezvous through a file in OUT_DIR (no ports). Every rank holds an uneven slice
(5 and 3 rows) of a float64 batch, computes batch-level losses on the gathered features and back-propagates
``loss / world_size`` (what data-parallel gradient averaging does); it then saves, per case, its gradient
and the single-process gradient of the same loss on the concatenated batch (its own rows) to
``OUT_DIR/rank{r}.pt``. The pytest side compares them.
"""

from __future__ import annotations

import gc
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SIZES = (5, 3)  # rows per rank: deliberately uneven
D = 4


def _slice(full: torch.Tensor, r: int) -> torch.Tensor:
    start = sum(SIZES[:r])
    return full[start : start + SIZES[r]]


def _grads(fn, tensors: list[torch.Tensor], r: int, scale: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``fn`` on this rank's slices of ``tensors``; return (loss, grads of the slices)."""
    leaves = [_slice(t, r).clone().requires_grad_(True) for t in tensors]
    loss = fn(*leaves)
    (loss * scale).backward()
    return loss.detach(), [leaf.grad.detach().clone() for leaf in leaves]


def _reference(fn, tensors: list[torch.Tensor], r: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Single-process loss and gradient on the full batch; this rank's rows of the gradient."""
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    loss = fn(*leaves)
    loss.backward()
    return loss.detach(), [_slice(leaf.grad, r).detach().clone() for leaf in leaves]


def _run(r: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=r, world_size=world)
    from matrix_llm import info
    from matrix_llm.distributed import all_gather_no_grad, all_gather_with_grad, rank, world_size
    from matrix_llm.losses import (
        BarlowTwinsLoss,
        CLIPLoss,
        CrossModalMCELoss,
        MatrixSSLLoss,
        MECLoss,
        NTXentLoss,
        TokenMCELoss,
    )

    torch.manual_seed(0)  # same full data on every rank
    n = sum(SIZES)
    z = torch.randn(n, D, dtype=torch.float64)
    z2 = torch.randn(n, D, dtype=torch.float64)
    p1 = torch.randn(n, D, dtype=torch.float64)
    p2 = torch.randn(n, D, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 3, 1, 2, 3])
    head = torch.randn(5, D, dtype=torch.float64)
    logits = torch.randn(n, 5, dtype=torch.float64)

    out: dict[str, object] = {"world_size": world_size(), "rank": rank()}
    out["full"] = z
    out["gathered"] = all_gather_with_grad(_slice(z, r)).detach()
    out["gathered_labels"] = all_gather_no_grad(_slice(labels, r))

    def mce_cov(x: torch.Tensor) -> torch.Tensor:
        c = info.covariance(x) + 0.5 * torch.eye(D, dtype=x.dtype)
        return info.mce(torch.eye(D, dtype=x.dtype) / D, c)

    def entropy_cov(x: torch.Tensor) -> torch.Tensor:
        return info.entropy(info.covariance(x))

    ssl_global = MatrixSSLLoss(preset="exact", gather=True)
    ssl_local = MatrixSSLLoss(preset="exact", gather=False)
    tok_global = TokenMCELoss(formulation="head", scope="global")
    tok_local = TokenMCELoss(formulation="head", scope="local")
    align_global = TokenMCELoss(formulation="alignment", scope="global")
    align_local = TokenMCELoss(formulation="alignment", scope="local")

    mec_global, mec_local = MECLoss(gather=True), MECLoss(gather=False)
    simclr_global, simclr_local = NTXentLoss(gather=True), NTXentLoss(gather=False)
    barlow_global, barlow_local = BarlowTwinsLoss(gather=True), BarlowTwinsLoss(gather=False)
    clip_global, clip_local = CLIPLoss(gather=True), CLIPLoss(gather=False)
    xmce_global, xmce_local = CrossModalMCELoss(gather=True), CrossModalMCELoss(gather=False)
    scale = torch.tensor(2.0, dtype=torch.float64)

    cases = {
        # name: (distributed fn, single-process fn, tensors)
        "mce_covariance": (lambda x: mce_cov(all_gather_with_grad(x)), mce_cov, [z]),
        "entropy_covariance": (lambda x: entropy_cov(all_gather_with_grad(x)), entropy_cov, [z]),
        "matrix_ssl_global": (
            lambda a, b: ssl_global(a, b, _slice(p1, r), _slice(p2, r)).total,
            lambda a, b: ssl_local(a, b, p1, p2).total,
            [z, z2],
        ),
        "mec_global": (
            lambda a, b: mec_global(a, b, _slice(p1, r), _slice(p2, r)).total,
            lambda a, b: mec_local(a, b, p1, p2).total,
            [z, z2],
        ),
        "nt_xent_global": (
            lambda a, b: simclr_global(a, b).total,
            lambda a, b: simclr_local(a, b).total,
            [z, z2],
        ),
        "barlow_twins_global": (
            lambda a, b: barlow_global(a, b).total,
            lambda a, b: barlow_local(a, b).total,
            [z, z2],
        ),
        "clip_global": (
            lambda a, b: clip_global(a, b, scale).total,
            lambda a, b: clip_local(a, b, scale).total,
            [z, z2],
        ),
        "clip_caption_keys_global": (  # same-caption pairs on both ranks: keys gathered with the features
            lambda a, b: clip_global(a, b, scale, _slice(labels, r)).total,
            lambda a, b: clip_local(a, b, scale, labels).total,
            [z, z2],
        ),
        "crossmodal_mce_global": (
            lambda a, b: xmce_global(a, b).total,
            lambda a, b: xmce_local(a, b).total,
            [z, z2],
        ),
        "token_mce_global": (
            lambda h: tok_global(h, _slice(labels, r), head).total,
            lambda h: tok_local(h, labels, head).total,
            [z],
        ),
        "token_mce_alignment_global": (
            lambda lg: align_global(_slice(z, r), _slice(labels, r), head, lg).total,
            lambda lg: align_local(z, labels, head, lg).total,
            [logits],
        ),
    }
    for name, (dist_fn, ref_fn, tensors) in cases.items():
        loss, grads = _grads(dist_fn, tensors, r, scale=1.0 / world)
        ref_loss, ref_grads = _reference(ref_fn, tensors, r)
        out[name] = {"loss": loss, "ref_loss": ref_loss, "grads": grads, "ref_grads": ref_grads}

    # Rank-dependent losses L_r = (r + 1) * f(X): the gradient of x_r must be sum_s (s + 1) * df/dx_r,
    # which tells "sum over ranks" (reduce-scatter) apart from "own rank only".
    _, grads = _grads(lambda x: (r + 1) * mce_cov(all_gather_with_grad(x)), [z], r, scale=1.0)
    _, ref_grads = _reference(mce_cov, [z], r)
    weight = sum(s + 1 for s in range(world))
    out["rank_weighted"] = {"grads": grads, "ref_grads": [g * weight for g in ref_grads]}

    # FSDP2 holds a parameter as a DTensor sharded on dim 0: features.full_weight gathers it whole (detached)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from matrix_llm.features import full_weight

    whole = torch.randn(6, D, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    sharded = torch.nn.Parameter(distribute_tensor(whole, init_device_mesh("cpu", (world,)), [Shard(0)]))
    gathered = full_weight(sharded, requires_grad=True)
    out["full_weight_dtensor"] = {
        "local_rows": sharded.to_local().shape[0],
        "whole": whole,
        "gathered": gathered if type(gathered) is torch.Tensor else None,
        "requires_grad": gathered.requires_grad,
    }

    torch.save(out, os.path.join(out_dir, f"rank{r}.pt"))
    del out, cases
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def main(out_dir: str) -> None:
    import matrix_llm.losses  # noqa: F401  (imported once here; the forked ranks inherit it)

    world = len(SIZES)
    init_file = os.path.join(out_dir, "rendezvous")
    # fork: the ranks start without re-importing torch (this parent has done no torch work yet)
    mp.start_processes(_run, args=(world, init_file, out_dir), nprocs=world, join=True, start_method="fork")


if __name__ == "__main__":
    main(sys.argv[1])

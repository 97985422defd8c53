"""Tests for matrix_llm.distributed (single process here, two gloo processes in the slow test).

.venv/bin/python -m pytest tests/distributed/test_distributed.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from matrix_llm.distributed import all_gather_no_grad, all_gather_with_grad, rank, world_size

WORKER = Path(__file__).with_name("dist_gather_worker.py")
REPO = Path(__file__).resolve().parents[2]


def test_world_size_and_rank_fall_back_without_process_group():
    assert world_size() == 1
    assert rank() == 0


def test_all_gather_with_grad_is_identity_on_one_process():
    x = torch.randn(3, 2, requires_grad=True)
    y = all_gather_with_grad(x)
    assert y is x
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(3, 2))


def test_all_gather_no_grad_detaches_on_one_process():
    x = torch.randn(3, 2, requires_grad=True)
    y = all_gather_no_grad(x)
    assert not y.requires_grad
    torch.testing.assert_close(y, x.detach())


@pytest.mark.parametrize("fn", [all_gather_with_grad, all_gather_no_grad])
def test_gather__error_scalar_or_not_tensor(fn):
    with pytest.raises(ValueError, match="at least one dimension"):
        fn(torch.tensor(1.0))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn([1.0, 2.0])


@pytest.mark.slow
def test_all_gather_with_grad_two_gloo_processes_matches_single_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"worker failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    sizes = (5, 3)
    for r in range(2):
        out = torch.load(tmp_path / f"rank{r}.pt", weights_only=False)
        assert out["world_size"] == 2 and out["rank"] == r
        torch.testing.assert_close(out["gathered"], out["full"], rtol=0, atol=0)
        torch.testing.assert_close(out["gathered_labels"], torch.tensor([0, 1, 2, 0, 3, 1, 2, 3]))
        names = (
            "mce_covariance",
            "entropy_covariance",
            "matrix_ssl_global",
            "mec_global",
            "nt_xent_global",
            "barlow_twins_global",
            "clip_global",
            "clip_caption_keys_global",
            "crossmodal_mce_global",
            "token_mce_global",
        )
        for name in (*names, "token_mce_alignment_global"):
            case = out[name]
            torch.testing.assert_close(case["loss"], case["ref_loss"], rtol=1e-12, atol=1e-12, msg=name)
            for g, ref in zip(case["grads"], case["ref_grads"], strict=True):
                assert g.shape[0] == sizes[r], name
                torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12, msg=name)
        for g, ref in zip(out["rank_weighted"]["grads"], out["rank_weighted"]["ref_grads"], strict=True):
            torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12)
        # an FSDP2-style DTensor parameter (3 of 6 rows on each rank) comes back whole, a plain detached tensor
        dt = out["full_weight_dtensor"]
        assert dt["local_rows"] == 3 and dt["gathered"] is not None and not dt["requires_grad"]
        torch.testing.assert_close(dt["gathered"], dt["whole"], rtol=0, atol=0)


@pytest.mark.slow
def test_the_objectives_the_commands_build_give_the_single_process_gradient(tmp_path):
    """Not the loss classes but the objectives `matrix-llm ssl` (matrix_ssl, mec, simclr, barlow_twins, mmae's TCR) and
    `matrix-llm clip` (InfoNCE, + covariance MCE) build from their configs: on 2 gloo processes holding 7 and 5
    rows, each rank's loss is the loss of the whole batch and its gradient the single-process gradient of its rows
    (the two-process training tests compare the ranks with each other only, which DDP makes equal whatever the
    loss). For M-MAE this is why `ssl_tcr_weight = w` on W processes equals the official code's `lamb = W w`
    (docs/formulations.md)."""
    env = dict(
        os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", HF_HUB_OFFLINE="1"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(REPO / "tests" / "distributed" / "objective_gather_worker.py"),
            str(tmp_path),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    for r in range(2):
        out = torch.load(tmp_path / f"rank{r}.pt", weights_only=False)
        assert out["world_size"] == 2
        names = [k for k in out if k != "world_size"]
        assert sorted(names) == [
            "clip_infonce",
            "clip_mce",
            "ssl_barlow_twins",
            "ssl_matrix_ssl",
            "ssl_mec",
            "ssl_mmae",
            "ssl_simclr",
        ]
        for name in names:
            case = out[name]
            torch.testing.assert_close(case["loss"], case["ref_loss"], rtol=1e-9, atol=1e-10, msg=name)
            for g, ref in zip(case["grads"], case["ref_grads"], strict=True):
                torch.testing.assert_close(g, ref, rtol=1e-7, atol=1e-10, msg=name)

"""Tests for matrix_llm.distributed (single process here, two gloo processes in the slow test).

.venv/bin/python -m pytest tests/test_distributed.py -q
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
REPO = Path(__file__).resolve().parents[1]


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
        names = ("mce_covariance", "entropy_covariance", "matrix_ssl_global", "mec_global", "nt_xent_global",
                 "clip_global", "clip_caption_keys_global", "crossmodal_mce_global", "token_mce_global")
        for name in (*names, "token_mce_alignment_global"):
            case = out[name]
            torch.testing.assert_close(case["loss"], case["ref_loss"], rtol=1e-12, atol=1e-12, msg=name)
            for g, ref in zip(case["grads"], case["ref_grads"], strict=True):
                assert g.shape[0] == sizes[r], name
                torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12, msg=name)
        for g, ref in zip(out["rank_weighted"]["grads"], out["rank_weighted"]["ref_grads"], strict=True):
            torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12)

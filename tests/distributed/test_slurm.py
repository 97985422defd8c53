"""recipes/slurm/node_launch.sh fails fast and clearly where a multi-node launch would otherwise hang: a machine
rank outside the job, a launch outside an allocation, a node that never joins (the rendezvous timeout). The
training runs through the SLURM template are in tests/modes/lm/test_sft.py.

    .venv/bin/python -m pytest tests/distributed/test_slurm.py -q
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import free_port, slurm_env

REPO = Path(__file__).resolve().parents[2]
NODE_LAUNCH = ["bash", str(REPO / "recipes" / "slurm" / "node_launch.sh")]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"SLURM_NODEID": "2"}, "SLURM_NODEID=2 is not a machine rank of this 2-node job (0 to 1)"),
        ({"SLURM_NODEID": "-1"}, "SLURM_NODEID=-1 is not a machine rank"),
        ({"SLURM_NNODES": "<unset>"}, "not inside a SLURM allocation"),
        ({"SLURM_NNODES": "two"}, "SLURM_NNODES=two is not a positive number of nodes"),
        ({"GPUS_PER_NODE": "0"}, "GPUS_PER_NODE=0 is not a positive number"),
        ({"ACCELERATE_CONFIG": "<unset>"}, "set ACCELERATE_CONFIG"),
    ],
    ids=["rank-past-the-end", "negative-rank", "no-allocation", "bad-node-count", "no-gpus", "no-profile"],
)
def test_a_wrong_launch_setting_fails_at_once_with_its_name(overrides, message):
    """A wrong machine rank would have the other node wait for a peer that never joins (measured: a static
    rendezvous with --machine_rank 2 of 2 waits out its whole timeout); the launcher refuses it before
    `accelerate launch` starts."""
    start = time.monotonic()
    proc = subprocess.run(
        [*NODE_LAUNCH, "-m", "matrix_llm.cli", "sft"],
        env=slurm_env(**overrides),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert time.monotonic() - start < 30


@pytest.mark.slow
def test_a_node_that_never_joins_fails_at_the_rendezvous_timeout(tmp_path):
    """Only node 0 of 2 starts: its `accelerate launch` gives up after RDZV_TIMEOUT seconds with torch's
    "1/2 clients joined" instead of waiting forever."""
    env = slurm_env(RDZV_TIMEOUT="5", MAIN_PROCESS_PORT=str(free_port()))
    start = time.monotonic()
    proc = subprocess.run(
        [*NODE_LAUNCH, str(REPO / "tests" / "distributed" / "dist_gather_worker.py"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "1/2 clients joined" in proc.stderr, proc.stderr[-3000:]
    assert time.monotonic() - start < 90

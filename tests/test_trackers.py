"""The matrix metrics reach every installed tracker (`report_to`), read back from what the tracker wrote, offline:
TensorBoard's event file, wandb's offline run file (`WANDB_MODE=offline`), trackio's local database.

.venv/bin/python -m pytest tests/test_trackers.py -q -m slow
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("tracker_worker.py")
KEYS = ("lm_loss", "matrix_loss", "matrix_entropy", "probe_mir")


def _tensorboard(out: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run,) = {p.parent for p in out.rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(run))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _wandb(out: Path) -> dict[str, list[float]]:
    """The history items of wandb's offline run file: a LevelDB-style log (32 KiB blocks of records with a 7-byte
    header: crc32, length, type 1 full / 2 first / 3 middle / 4 last) after a 7-byte ``:W&B`` header, each record a
    ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    (path,) = out.rglob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    values: dict[str, list[float]] = {}
    pos, chunk = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "history":
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    values.setdefault(key, []).append(json.loads(item.value_json))
    return values


def _trackio(out: Path) -> dict[str, list[float]]:
    (db,) = out.rglob("matrix-llm-tests.db")
    values: dict[str, list[float]] = {}
    with sqlite3.connect(db) as conn:
        for (metrics,) in conn.execute("SELECT metrics FROM metrics ORDER BY id"):
            for key, value in json.loads(metrics).items():
                values.setdefault(key, []).append(value)
    return values


READERS = {"tensorboard": _tensorboard, "wandb": _wandb, "trackio": _trackio}


@pytest.mark.slow
@pytest.mark.parametrize("tracker", sorted(READERS))
def test_the_matrix_metrics_reach_the_tracker(tracker, tmp_path):
    """Two logged steps with MatrixMetricsCallback: the tracker holds ``train/lm_loss``, ``train/matrix_loss``,
    ``train/matrix_entropy`` and ``train/probe_mir`` with the values of the run's log history. Every tracker of
    the `logging` extra is installed by `make install`: a missing one fails rather than skips."""
    assert importlib.util.find_spec(tracker), f"{tracker} is not installed (the `logging` extra)"
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        WANDB_MODE="offline",
        WANDB_DIR=str(tmp_path),
        WANDB_SILENT="true",
        TRACKIO_DIR=str(tmp_path / "trackio"),
        TOKENIZERS_PARALLELISM="false",
    )
    proc = subprocess.run(
        [sys.executable, str(WORKER), tracker, str(tmp_path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    history = json.loads((tmp_path / "log_history.json").read_text())
    seen = READERS[tracker](tmp_path)
    for key in KEYS:
        logged = [log[key] for log in history if key in log]
        assert len(logged) == 2, (key, history)
        assert seen.get(f"train/{key}") == pytest.approx(logged, rel=1e-6), (key, sorted(seen))


def test_the_logging_extra_is_the_trackers_read_back_here():
    """pyproject's `logging` extra, the trackers the pre-flight check points at it, and the ones tested above are
    the same three."""
    import re

    import tomllib

    from matrix_llm.runner import LOGGING_EXTRA

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "logging"
    ]
    assert {re.split(r"[<>=!~\[ ]", d)[0] for d in extra} == set(READERS) == set(LOGGING_EXTRA)

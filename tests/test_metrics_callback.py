"""MatrixMetricsCallback: neural-collapse closed forms, per-layer metrics, LM pair metrics, any Trainer, an
unchanged training trajectory, clear errors, and the same values on 2 real CPU ranks as in one process.

    .venv/bin/python -m pytest tests/test_metrics_callback.py -q
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainingArguments

from matrix_llm.callbacks import MatrixMetricsCallback, classification_pair_metrics
from matrix_llm.data.images import ImageCollator, digits_dataset
from matrix_llm.models.tiny import build_image_classifier
from matrix_llm.modes import ClassificationConfig
from matrix_llm.trainer import MatrixTrainer

REPO = Path(__file__).resolve().parents[1]


def _etf(c):
    return math.sqrt(c / (c - 1)) * (torch.eye(c, dtype=torch.float64) - 1.0 / c)


@pytest.mark.parametrize("c", [3, 4, 10])
def test_pair_metrics_at_neural_collapse_equal_the_closed_forms(c):
    """Features at their class means, means a simplex ETF, head rows aligned (4 per class)."""
    etf = _etf(c)
    labels = torch.arange(c).repeat(4)
    m = classification_pair_metrics(etf[labels], etf, labels)
    closed_mir = 1 / (c - 1) + (c - 2) * math.log(c - 2) / ((c - 1) * math.log(c - 1))
    assert m["mir"].item() == pytest.approx(closed_mir, abs=1e-9)
    assert m["hdr"].item() == pytest.approx(0.0, abs=1e-9)
    assert m["head_entropy"].item() == pytest.approx(math.log(c - 1), abs=1e-9)
    assert m["class_mean_entropy"].item() == pytest.approx(math.log(c - 1), abs=1e-9)
    assert m["nc1"].item() == pytest.approx(0.0, abs=1e-9)
    noisy = etf[labels] + 0.1 * torch.randn(
        len(labels), c, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    assert classification_pair_metrics(noisy, etf, labels)["nc1"].item() > 1e-3  # within-class spread counts


def _digits_trainer(tmp_path, callbacks=(), trainer_cls=MatrixTrainer, args_cls=ClassificationConfig, **kw):
    train = digits_dataset("train").select(range(256))
    model = build_image_classifier(
        "tiny-vit", num_labels=10, image_size=16, hidden_size=32, num_layers=2, num_heads=2
    )
    base = dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=2,
        max_steps=4,
        per_device_train_batch_size=32,
        learning_rate=3e-3,
        seed=0,
        remove_unused_columns=False,
    )
    base.update(kw)
    trainer = trainer_cls(
        model=model, args=args_cls(**base), train_dataset=train, data_collator=ImageCollator(image_size=16)
    )
    return trainer, train


def test_per_layer_and_pair_metrics_are_logged_and_training_is_unchanged(tmp_path):
    """Mutations caught: logging from on_step_end without restoring `control.should_log` (it cancelled the
    Trainer's own step log: seen while writing this), and leaving the model in eval mode."""
    plain, _ = _digits_trainer(tmp_path / "a")
    plain.train()
    watched, train = _digits_trainer(tmp_path / "b")
    cb = MatrixMetricsCallback([train[i] for i in range(64)], trainer=watched, every=1)
    watched.add_callback(cb)
    watched.train()
    losses = [
        [(e["step"], e["loss"], e["ce_loss"]) for e in t.state.log_history if "loss" in e]
        for t in (plain, watched)
    ]
    assert len(losses[0]) == 2 and losses[0] == losses[1]  # same trajectory, the Trainer's own logs intact
    probe = [e for e in watched.state.log_history if "probe_mir" in e]
    assert [e["step"] for e in probe] == [1, 2, 3, 4]
    keys = set(probe[-1])
    assert {
        "probe_layer0_matrix_entropy",
        "probe_layer1_effective_rank",
        "probe_hdr",
        "probe_nc1",
        "probe_head_entropy",
        "probe_class_mean_entropy",
    } <= keys
    assert watched.model.training  # mode restored


def test_works_with_a_plain_transformers_trainer(tmp_path):
    trainer, train = _digits_trainer(tmp_path, trainer_cls=Trainer, args_cls=TrainingArguments)
    trainer.add_callback(
        MatrixMetricsCallback([train[i] for i in range(32)], trainer=trainer, every=2, layers=[-1])
    )
    trainer.train()
    logged = [e for e in trainer.state.log_history if "probe_mir" in e]
    assert (
        len(logged) == 2
        and "probe_layer1_matrix_entropy" in logged[0]
        and "probe_layer0_matrix_entropy" not in logged[0]
    )


def test_lm_pair_metrics(tiny_model, tiny_tokenizer):
    ids = torch.randint(4, len(tiny_tokenizer), (3, 12), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :4] = -100
    rows = [
        {"input_ids": ids[i], "attention_mask": torch.ones(12, dtype=torch.long), "labels": labels[i]}
        for i in range(3)
    ]
    collate = lambda rs: {k: torch.stack([r[k] for r in rs]) for k in rs[0]}  # noqa: E731
    cb = MatrixMetricsCallback(rows, trainer=None, collator=collate)
    m = cb.compute(tiny_model)
    assert 0.0 < m["probe_mir"] <= 1.0 and m["probe_hdr"] >= 0.0
    assert {"probe_layer0_matrix_entropy", "probe_layer1_matrix_entropy"} <= set(m)


def test_bad_probes_are_named(tmp_path):
    trainer, train = _digits_trainer(tmp_path)
    one_class = [r for r in (train[i] for i in range(200)) if r["label"] == 3][:4]
    with pytest.raises(ValueError, match="at least 2 classes"):
        MatrixMetricsCallback(one_class, trainer=trainer).compute(trainer.model)
    with pytest.raises(ValueError, match="outside"):
        MatrixMetricsCallback([train[i] for i in range(8)], trainer=trainer, layers=[7]).compute(
            trainer.model
        )
    with pytest.raises(ValueError, match="at least 2 rows"):
        MatrixMetricsCallback([train[0]], trainer=trainer)


def _classify(out, nproc, batch, *extra):
    cmd = (
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(nproc),
            "-m",
            "matrix_llm.modes.classify.command",
        ]
        if nproc > 1
        else [sys.executable, "-m", "matrix_llm.modes.classify.command"]
    )
    cmd += [
        "--config",
        "classify/digits.yaml",
        "--output_dir",
        str(out),
        "--max_steps",
        "4",
        "--logging_steps",
        "2",
        "--per_device_train_batch_size",
        str(batch),
        "--matrix_probe_samples",
        "48",
        "--max_train_samples",
        "512",
        "--eval_strategy",
        "no",
        "--disable_tqdm",
        "true",
        "--use_cpu",
        "true",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".venv" / "torch_extensions"))
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    info = json.loads((out / "matrix_llm_run.json").read_text())
    return (info["world_size"], info["distributed_type"]), {e["step"]: e for e in history if "probe_mir" in e}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ddp", "zero3"])
def test_two_ranks_log_the_values_of_one_process(tmp_path, backend):
    """2 ranks (DDP, or DeepSpeed ZeRO-3 with the head partitioned) x batch 32 train like 1 process x batch 64
    (CE, no regulariser); the probe, run on every rank on the same rows (under ZeRO-3 a collective forward and a
    gathered head), logs the same values at the same steps as the single process."""
    extra = [] if backend == "ddp" else ["--deepspeed", str(REPO / "recipes" / "deepspeed" / "zero3.json")]
    if backend == "zero3":
        pytest.importorskip("deepspeed")
    (world2, kind), ranks = _classify(tmp_path / backend, 2, 32, *extra)
    (world1, _), single = _classify(tmp_path / "single", 1, 64)
    assert (world2, world1) == (2, 1)
    assert kind.endswith("DEEPSPEED" if backend == "zero3" else "MULTI_CPU")
    assert sorted(ranks) == sorted(single) == [2, 4]
    for step in (2, 4):
        for key, value in single[step].items():
            if key.startswith("probe_"):
                assert ranks[step][key] == pytest.approx(value, rel=1e-4, abs=1e-5), (step, key)


def test_collapsed_features_give_undefined_mir_hdr_not_an_error():
    """Rank-1 features (a collapsed representation) make MIR / HDR 0/0: NaN, and the other metrics still come."""
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    head = torch.eye(3, 4, dtype=torch.float64)
    collapsed = torch.ones(6, 4, dtype=torch.float64)
    m = classification_pair_metrics(collapsed, head, labels)
    assert torch.isnan(m["mir"]) and torch.isnan(m["hdr"])
    assert torch.isfinite(m["head_entropy"])


def test_only_the_undefined_ratio_becomes_nan(monkeypatch):
    """Another error from ``info.mir_hdr`` (a bad input, not a collapse) still ends the call: only the 0/0 is NaN."""
    from matrix_llm import info

    def broken(k1, k2):
        raise ValueError("mir_hdr: a bad Gram")

    monkeypatch.setattr(info, "mir_hdr", broken)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="a bad Gram"):
        classification_pair_metrics(torch.randn(6, 4, dtype=torch.float64), torch.eye(3, 4), labels)

"""MatrixTrainer's mode-agnostic parts: objectives of models without labels, extra batch keys, objective
callbacks, the public metrics channel and scheduled (not-every-call) metrics.

    .venv/bin/python -m pytest tests/test_trainer_protocol.py -q
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaModel, TrainerCallback

from matrix_llm.config import MatrixTrainingArguments
from matrix_llm.modes import Objective, ObjectiveOutput
from matrix_llm.trainer import MatrixTrainer


def _args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
        max_steps=2,
        learning_rate=1e-3,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        seed=0,
    )
    base.update(kw)
    return MatrixTrainingArguments(**base)


def _encoder():
    """A real Hub architecture whose forward has no `labels` argument (a bare backbone)."""
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    return LlamaModel(config)


def _data(n=4, length=8, extra=False):
    g = torch.Generator().manual_seed(0)
    rows = {"input_ids": torch.randint(0, 64, (n, length), generator=g).tolist()}
    if extra:
        rows["target_scale"] = [float(i + 1) for i in range(n)]  # not a forward argument of LlamaModel
    return Dataset.from_dict(rows)


def _collate(rows):
    batch = {"input_ids": torch.tensor([r["input_ids"] for r in rows])}
    if "target_scale" in rows[0]:
        batch["target_scale"] = torch.tensor([r["target_scale"] for r in rows])
    return batch


class Spread(Objective):
    """A toy self-supervised objective on the pooled features of a bare backbone (no labels, no base_loss)."""

    name = "spread"

    def __init__(self, input_names=(), every=1):
        self.input_names = tuple(input_names)
        self.every = every
        self.seen_keys: list[set] = []
        self.calls = {"train": 0, "eval": 0}

    def __call__(self, model, inputs, *, base_loss, step=None):
        self.seen_keys.append(set(inputs))
        self.calls["train" if model.training else "eval"] += 1
        feats = model(input_ids=inputs["input_ids"]).last_hidden_state.mean(1)
        scale = inputs.get("target_scale", torch.ones(feats.shape[0])).float()
        loss = ((feats.norm(dim=1) - scale) ** 2).mean()
        metrics = {"feature_norm": feats.norm(dim=1).mean().detach()}
        if step is None or step % self.every == 0:  # a scheduled metric: only on some calls
            metrics["scheduled"] = torch.tensor(float(step or 0))
        return ObjectiveOutput(token_loss=None, batch_loss=loss, metrics=metrics)


class _Logs(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


def test_evaluate_runs_the_objective_for_a_model_without_labels(tmp_path):
    """Mutation caught: removing MatrixTrainer.prediction_step (Trainer.prediction_step then calls the model
    without compute_loss: no eval_loss, the objective never runs in evaluation)."""
    objective = Spread()
    trainer = MatrixTrainer(
        model=_encoder(),
        args=_args(tmp_path),
        objective=objective,
        train_dataset=_data(),
        eval_dataset=_data(),
        data_collator=_collate,
    )
    assert trainer.label_names == []  # really a model without labels
    metrics = trainer.evaluate()
    assert objective.calls["eval"] == 2 and "eval_loss" in metrics
    assert metrics["eval_feature_norm"] > 0


def test_input_names_survive_remove_unused_columns(tmp_path):
    """Mutation caught: dropping MatrixTrainer._set_signature_columns_if_needed (the Trainer removes
    `target_scale`, which LlamaModel.forward does not name)."""
    objective = Spread(input_names=("target_scale",))
    trainer = MatrixTrainer(
        model=_encoder(),
        args=_args(tmp_path),
        objective=objective,
        train_dataset=_data(extra=True),
        data_collator=_collate,
    )
    trainer.train()
    assert objective.seen_keys and all("target_scale" in keys for keys in objective.seen_keys)
    plain = Spread()
    MatrixTrainer(
        model=_encoder(),
        args=_args(tmp_path / "b"),
        objective=plain,
        train_dataset=_data(extra=True),
        data_collator=_collate,
    ).train()
    assert all("target_scale" not in keys for keys in plain.seen_keys)  # the Trainer's default, unchanged


class _Momentum(TrainerCallback):
    """What an EMA-teacher objective contributes: an update after every optimizer step, logged publicly."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)
        self.trainer.record_metrics({"teacher_momentum": 0.99 + 0.001 * state.global_step}, mode="train")


class WithCallback(Spread):
    def callbacks(self, trainer):
        self.callback = _Momentum(trainer)
        return [self.callback]


def test_objective_callbacks_and_the_public_metrics_channel(tmp_path):
    """The objective's callbacks are added and run after each optimizer step; what they record through
    `record_metrics` is logged with the step's metrics; scheduled metrics appear only on their steps."""
    objective = WithCallback(every=2)
    logs = _Logs()
    trainer = MatrixTrainer(
        model=_encoder(),
        args=_args(tmp_path, max_steps=3),
        objective=objective,
        train_dataset=_data(n=6),
        data_collator=_collate,
        callbacks=[logs],
    )
    trainer.train()
    assert objective.callback.steps == [1, 2, 3]
    train_logs = [log for log in logs.logs if "loss" in log]
    assert [log["teacher_momentum"] for log in train_logs] == pytest.approx([0.991, 0.992, 0.993])
    assert [("scheduled" in log) for log in train_logs] == [True, False, True]  # steps 0 and 2
    assert all("feature_norm" in log for log in train_logs)
    with pytest.raises(ValueError, match="mode"):
        trainer.record_metrics({"x": 1.0}, mode="test")

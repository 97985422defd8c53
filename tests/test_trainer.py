"""MatrixTrainer: one forward pass, logging, gradient-accumulation scaling, PEFT.

.venv/bin/python -m pytest tests/test_trainer.py -q
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from matrix_llm.features import token_features
from matrix_llm.losses.token import TokenMCELoss
from matrix_llm.modes.lm.config import LMConfig
from matrix_llm.trainer import MatrixTrainer

SEQ = 24


def _dataset(tokenizer, n=4, seed=0):
    """``n`` fixed-length rows with a varying number of completion tokens (so token counts differ per row)."""
    g = torch.Generator().manual_seed(seed)
    vocab = len(tokenizer)
    rows = []
    for i in range(n):
        ids = torch.randint(4, vocab, (SEQ,), generator=g)
        attn = torch.ones(SEQ, dtype=torch.long)
        labels = ids.clone()
        prompt = 4 + 2 * i  # prompt tokens: masked
        labels[:prompt] = -100
        pad = i  # right padding: masked, not attended
        if pad:
            ids[SEQ - pad :] = tokenizer.pad_token_id
            attn[SEQ - pad :] = 0
            labels[SEQ - pad :] = -100
        rows.append({"input_ids": ids, "attention_mask": attn, "labels": labels})
    return rows


def _args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
        max_steps=1,
        optim="sgd",
        learning_rate=1.0,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        weight_decay=0.0,
        seed=0,
        data_seed=0,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        matrix_loss_type="head",
        matrix_loss_weight=0.0,
    )
    base.update(kw)
    return LMConfig(**base)


def _run(model, tokenizer, data, args, **kw):
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = MatrixTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, **kw)
    trainer.train()
    delta = {n: (p.detach() - before[n]) for n, p in model.named_parameters()}
    return trainer, delta


def _max_abs_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _max_abs(a):
    return max(v.abs().max().item() for v in a.values())


def test_plain_ce_gradient_accumulation_matches_full_batch(tiny_model, tiny_tokenizer, tmp_path):
    """Weight 0: (batch 4, GA 1) and (batch 2, GA 2) give the same SGD update (token-level normalisation)."""
    data = _dataset(tiny_tokenizer)
    model_a = copy.deepcopy(tiny_model)
    model_b = copy.deepcopy(tiny_model)
    _, delta_a = _run(model_a, tiny_tokenizer, data, _args(tmp_path / "a"))
    _, delta_b = _run(
        model_b,
        tiny_tokenizer,
        data,
        _args(tmp_path / "b", per_device_train_batch_size=2, gradient_accumulation_steps=2),
    )
    assert _max_abs(delta_a) > 1e-4
    assert _max_abs_diff(delta_a, delta_b) < 1e-5


def _reference_update(model, data, *, weight, micro_batches, layer=-1, ce="token_mean"):
    """-(grad of the CE + weight * mean over micro-batches of the head MCE); ``ce="token_mean"``: the token mean
    over all rows; ``"micro_batch_mean"``: the mean over micro-batches of each one's token mean."""
    model = copy.deepcopy(model)
    model.train()
    mce = TokenMCELoss(formulation="head")
    total_tokens = sum(int((r["labels"][1:] != -100).sum()) for r in data)
    loss = 0.0
    for rows in micro_batches:
        batch = {k: torch.stack([data[i][k] for i in rows]) for k in data[0]}
        out = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        )
        logits = out.logits[:, :-1]
        targets = batch["labels"][:, 1:]
        ce_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
        if ce == "token_mean":
            loss = loss + ce_sum / total_tokens
        else:
            loss = loss + ce_sum / int((targets != -100).sum()) / len(micro_batches)
        feats = token_features(out.hidden_states[layer], batch["labels"])
        w = model.get_output_embeddings().weight.detach()
        loss = loss + weight * mce(feats.hidden, feats.targets, w).total / len(micro_batches)
    model.zero_grad()
    loss.backward()
    return {n: -p.grad.detach().clone() for n, p in model.named_parameters()}


def _order(data, seed=0):
    """The sample order the Trainer's RandomSampler uses with ``data_seed``."""
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.randperm(len(data), generator=g).tolist()


def test_matrix_term_is_the_mean_of_micro_batch_terms_under_ga(tiny_model, tiny_tokenizer, tmp_path):
    """Weight > 0, GA 2: the update equals -(grad CE_mean + w * mean_i grad MCE_i): the matrix share of the
    update does not grow with the number of accumulation steps."""
    data = _dataset(tiny_tokenizer)
    weight = 0.5
    model = copy.deepcopy(tiny_model)
    args = _args(
        tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2, matrix_loss_weight=weight
    )
    _, delta = _run(model, tiny_tokenizer, data, args)
    order = _order(data)
    ref = _reference_update(tiny_model, data, weight=weight, micro_batches=[order[:2], order[2:]])
    assert _max_abs_diff(delta, ref) < 2e-5
    # and the naive sum (inflated GA x) is measurably different
    inflated = _reference_update(tiny_model, data, weight=2 * weight, micro_batches=[order[:2], order[2:]])
    assert _max_abs_diff(delta, inflated) > 1e-4


def test_when_the_trainer_divides_the_loss_itself_the_matrix_term_is_still_the_micro_batch_mean(
    tiny_model, tiny_tokenizer, tmp_path
):
    """The other accumulation branch: a model without loss kwargs (``model_accepts_loss_kwargs = False``), so the
    LM loss is each micro-batch's own token mean and Trainer.training_step divides the whole loss by the
    accumulation steps; MatrixTrainer then leaves the matrix term unscaled (s = 1). The update must be
    -(grad of mean_i CE_i + w * mean_i MCE_i). Mutation caught: always dividing the matrix term by the
    accumulation steps (it would then be divided twice)."""
    data = _dataset(tiny_tokenizer)
    weight = 0.5
    model = copy.deepcopy(tiny_model)
    args = _args(
        tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2, matrix_loss_weight=weight
    )
    trainer = MatrixTrainer(model=model, args=args, train_dataset=data, processing_class=tiny_tokenizer)
    trainer.model_accepts_loss_kwargs = False  # as for a model whose forward takes no **kwargs
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    delta = {n: p.detach() - before[n] for n, p in model.named_parameters()}
    order = _order(data)
    ref = _reference_update(
        tiny_model, data, weight=weight, micro_batches=[order[:2], order[2:]], ce="micro_batch_mean"
    )
    assert _max_abs_diff(delta, ref) < 2e-5
    halved = _reference_update(
        tiny_model, data, weight=weight / 2, micro_batches=[order[:2], order[2:]], ce="micro_batch_mean"
    )
    assert _max_abs_diff(delta, halved) > 1e-4


def test_matrix_term_at_ga1_is_the_full_batch_term(tiny_model, tiny_tokenizer, tmp_path):
    data = _dataset(tiny_tokenizer)
    model = copy.deepcopy(tiny_model)
    _, delta = _run(model, tiny_tokenizer, data, _args(tmp_path, matrix_loss_weight=0.5))
    ref = _reference_update(tiny_model, data, weight=0.5, micro_batches=[_order(data)])
    assert _max_abs_diff(delta, ref) < 2e-5


class _Logs(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


@pytest.mark.parametrize("ga", [1, 2])
def test_logs_every_part_and_total_is_consistent(tiny_model, tiny_tokenizer, tmp_path, ga):
    data = _dataset(tiny_tokenizer, n=8)
    cb = _Logs()
    args = _args(
        tmp_path,
        per_device_train_batch_size=4 // ga,
        gradient_accumulation_steps=ga,
        matrix_loss_weight=0.3,
        learning_rate=1e-3,
        max_steps=2,
        eval_strategy="steps",
        eval_steps=2,
        per_device_eval_batch_size=4,
    )
    trainer = MatrixTrainer(
        model=tiny_model,
        args=args,
        train_dataset=data,
        eval_dataset=data[:4],
        processing_class=tiny_tokenizer,
        callbacks=[cb],
    )
    trainer.train()
    train_logs = [log for log in cb.logs if "loss" in log]
    assert len(train_logs) == 2
    for log in train_logs:
        for key in ("loss", "lm_loss", "matrix_loss", "matrix_entropy", "effective_rank"):
            assert key in log and math.isfinite(log[key]), (key, log)
        # the Trainer's `loss` is the optimised weighted total: lm_loss + w * matrix_loss
        assert log["loss"] == pytest.approx(log["lm_loss"] + 0.3 * log["matrix_loss"], rel=1e-4)
        assert 1.0 <= log["effective_rank"] <= 64 + 1e-3
    eval_logs = [log for log in cb.logs if "eval_loss" in log]
    assert eval_logs
    ev = eval_logs[-1]
    for key in ("eval_lm_loss", "eval_matrix_loss", "eval_matrix_entropy", "eval_effective_rank"):
        assert key in ev and math.isfinite(ev[key])
    assert ev["eval_loss"] == pytest.approx(ev["eval_lm_loss"] + 0.3 * ev["eval_matrix_loss"], rel=1e-4)
    # nothing of the train metrics leaks into eval and vice versa
    assert not any(k.startswith("eval_") for log in train_logs for k in log)


@pytest.mark.parametrize("loss_type", ["none", "head"])
def test_diagnostics_every_k_steps(tiny_model, tiny_tokenizer, tmp_path, loss_type):
    """The diagnostics cost an eigendecomposition of their own: computed every k-th step whatever the loss."""
    data = _dataset(tiny_tokenizer, n=8)
    cb = _Logs()
    args = _args(
        tmp_path,
        matrix_loss_type=loss_type,
        matrix_loss_weight=0.1,  # > 0: weight 0 skips the matrix term (test_weight_zero_is_plain_ce)
        matrix_metrics_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        max_steps=4,
    )
    trainer = MatrixTrainer(model=tiny_model, args=args, train_dataset=data, callbacks=[cb])
    trainer.train()
    logs = [log for log in cb.logs if "loss" in log]
    assert [("matrix_entropy" in log) for log in logs] == [True, False, True, False]  # steps 0 and 2 computed
    if loss_type == "none":  # plain CE
        assert all("matrix_loss" not in log for log in logs)
        assert all(log["loss"] == pytest.approx(log["lm_loss"], rel=1e-5) for log in logs)
    else:  # the matrix loss itself is computed and logged every step
        assert all(math.isfinite(log["matrix_loss"]) for log in logs)


def test_none_matches_the_plain_trainer(tiny_model, tiny_tokenizer, tmp_path):
    from transformers import Trainer, TrainingArguments

    data = _dataset(tiny_tokenizer)
    model_a = copy.deepcopy(tiny_model)
    _, delta_a = _run(model_a, tiny_tokenizer, data, _args(tmp_path / "a", matrix_loss_type="none"))
    model_b = copy.deepcopy(tiny_model)
    before = {n: p.detach().clone() for n, p in model_b.named_parameters()}
    plain = _args(tmp_path / "b").to_dict()
    plain = {
        k: v
        for k, v in plain.items()
        if not k.startswith("matrix_") and k in TrainingArguments.__dataclass_fields__
    }
    plain = {k: v for k, v in plain.items() if TrainingArguments.__dataclass_fields__[k].init}
    Trainer(model=model_b, args=TrainingArguments(**plain), train_dataset=data).train()
    delta_b = {n: p.detach() - before[n] for n, p in model_b.named_parameters()}
    assert _max_abs_diff(delta_a, delta_b) < 1e-6


def test_inner_layer_is_captured_from_the_same_forward(tiny_model, tiny_tokenizer, tmp_path):
    """matrix_layer=0 uses decoder layer 0's output (= hidden_states[1]); GA 1 reference update matches."""
    data = _dataset(tiny_tokenizer)
    model = copy.deepcopy(tiny_model)
    _, delta = _run(model, tiny_tokenizer, data, _args(tmp_path, matrix_loss_weight=0.5, matrix_layer=0))
    ref = _reference_update(tiny_model, data, weight=0.5, micro_batches=[_order(data)], layer=1)
    assert _max_abs_diff(delta, ref) < 2e-5


def test_bad_layer_is_a_clear_error(tiny_model, tiny_tokenizer, tmp_path):
    args = _args(tmp_path, matrix_layer=7)
    trainer = MatrixTrainer(model=tiny_model, args=args, train_dataset=_dataset(tiny_tokenizer))
    with pytest.raises(ValueError, match="matrix_layer"):
        trainer.train()


@pytest.mark.parametrize("loss_type", ["relation", "alignment"])
def test_other_formulations_train(tiny_model, tiny_tokenizer, tmp_path, loss_type):
    cb = _Logs()
    args = _args(tmp_path, matrix_loss_type=loss_type, matrix_loss_weight=0.5, learning_rate=1e-2)
    trainer = MatrixTrainer(
        model=tiny_model, args=args, train_dataset=_dataset(tiny_tokenizer), callbacks=[cb]
    )
    trainer.train()
    log = next(log for log in cb.logs if "loss" in log)
    assert math.isfinite(log["matrix_loss"]) and log["loss"] == pytest.approx(
        log["lm_loss"] + 0.5 * log["matrix_loss"], rel=1e-4
    )


def test_peft_model_trains_adapter_with_matrix_loss(tiny_model, tiny_tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        tiny_model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0)
    )
    cb = _Logs()
    args = _args(
        tmp_path, matrix_loss_weight=0.5, learning_rate=1e-2, max_steps=2, per_device_train_batch_size=2
    )
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainer = MatrixTrainer(model=model, args=args, train_dataset=_dataset(tiny_tokenizer), callbacks=[cb])
    trainer.train()
    params = dict(model.named_parameters())
    assert all(n.count("lora_") for n in trainable)
    assert any((params[n] - v).abs().max() > 0 for n, v in trainable.items() if "lora_A" in n)
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    log = next(log for log in cb.logs if "loss" in log)
    assert math.isfinite(log["matrix_loss"]) and math.isfinite(log["effective_rank"])


def test_objective_skips_the_matrix_term_below_two_tokens(tiny_model, tiny_tokenizer, monkeypatch):
    """... but still fetches the head weight: under ZeRO-3 that is a collective every rank must join in every
    step, also a rank whose micro-batch has fewer than 2 completion tokens."""
    from matrix_llm import features
    from matrix_llm.modes import LMObjective

    calls = []
    real = features.head_weight
    monkeypatch.setattr(features, "head_weight", lambda *a, **k: calls.append(1) or real(*a, **k))
    objective = LMObjective(loss_type="head", loss_weight=1.0)
    ids = torch.randint(4, len(tiny_tokenizer), (1, 8))
    labels = torch.full_like(ids, -100)
    labels[0, -1] = ids[0, -1]  # one completion token

    def base_loss(model, inputs):
        out = model(**inputs)
        return out.loss, out

    out = objective(tiny_model, {"input_ids": ids, "labels": labels}, base_loss=base_loss, step=0)
    assert out.batch_loss is None and math.isnan(out.metrics["matrix_loss"].item())
    assert math.isfinite(out.token_loss.item()) and calls == [1]
    with pytest.raises(ValueError, match="labels"):
        objective(tiny_model, {"input_ids": ids}, base_loss=base_loss)


def test_weight_zero_is_plain_ce(tiny_model, tiny_tokenizer, tmp_path, monkeypatch):
    """matrix_loss_weight 0 never builds or calls the matrix loss (plain CE at CE's cost), whatever the type.
    Mutation caught: building TokenMCELoss whenever matrix_loss_type != "none"."""
    calls = []
    monkeypatch.setattr(TokenMCELoss, "forward", lambda self, *a, **k: calls.append(1))
    cb = _Logs()
    args = _args(
        tmp_path,
        matrix_loss_type="alignment",
        matrix_loss_weight=0.0,
        max_steps=2,
        per_device_train_batch_size=2,
    )
    trainer = MatrixTrainer(
        model=tiny_model, args=args, train_dataset=_dataset(tiny_tokenizer), callbacks=[cb]
    )
    assert trainer.objective.matrix_loss is None
    trainer.train()
    assert calls == []
    assert all("matrix_loss" not in log for log in cb.logs)


def test_unknown_objective_name(tmp_path):
    with pytest.raises(ValueError, match="`objective`"):
        _args(tmp_path, objective="ssl-not-yet")


def test_predict_does_not_leak_into_the_next_evaluation_logs(tiny_model, tiny_tokenizer, tmp_path):
    """`predict` runs compute_loss but never logs: what it recorded must not enter the next `evaluate` means."""
    data = _dataset(tiny_tokenizer, n=4)
    other = _dataset(tiny_tokenizer, n=4, seed=1)
    args = _args(tmp_path, matrix_loss_type="head", matrix_loss_weight=0.3, per_device_eval_batch_size=4)
    trainer = MatrixTrainer(model=tiny_model, args=args, eval_dataset=data)
    alone = trainer.evaluate()
    trainer.predict(other)
    after_predict = trainer.evaluate()
    for key in ("eval_lm_loss", "eval_matrix_loss", "eval_matrix_entropy"):
        assert after_predict[key] == pytest.approx(alone[key], rel=1e-6), key


def test_the_objective_does_not_compute_the_loss_s_own_entropy_parts():
    from matrix_llm.modes import LMObjective

    assert LMObjective(loss_type="alignment").matrix_loss.diagnostics is False


def test_evaluating_every_step_does_not_change_the_training_run(tiny_model, tiny_tokenizer, tmp_path):
    """With dropout on, training with an evaluation after every step ends at the same weights as without
    (each evaluation's DataLoader draws its base seed from torch's generator; the trainer restores the state)."""
    for module in tiny_model.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.5
    data = _dataset(tiny_tokenizer, n=8)
    kw = dict(max_steps=4, per_device_train_batch_size=2, learning_rate=0.1, matrix_loss_weight=0.3)
    deltas = {}
    for strategy in ("no", "steps"):
        model = copy.deepcopy(tiny_model)
        args = _args(
            tmp_path / strategy, eval_strategy=strategy, eval_steps=1, per_device_eval_batch_size=4, **kw
        )
        trainer, deltas[strategy] = _run(model, tiny_tokenizer, data, args, eval_dataset=data[:4])
    assert sum(1 for e in trainer.state.log_history if "eval_loss" in e) == 4
    assert _max_abs(deltas["no"]) > 1e-4
    assert _max_abs_diff(deltas["no"], deltas["steps"]) == 0.0


class _LogsThroughTheTrainer(TrainerCallback):
    """A user's callback that logs its own numbers with ``trainer.log`` (not matrix_llm's ``log_entry``)."""

    def __init__(self):
        self.trainer = None

    def on_step_end(self, args, state, control, **kwargs):
        pending = control.should_log
        self.trainer.log({"my_metric": float(state.global_step)})
        control.should_log = pending
        return control


def test_a_callback_logging_through_the_trainer_leaves_the_step_metrics_to_the_step_entry(
    tiny_model, tiny_tokenizer, tmp_path
):
    """A callback's ``trainer.log`` entry comes before the Trainer's own step entry: the queued ``lm_loss`` /
    ``matrix_loss`` wait for the step entry instead of going out with the callback's. Mutation caught: every
    ``log()`` call taking the queued metrics."""
    logs, user = _Logs(), _LogsThroughTheTrainer()
    args = _args(tmp_path, matrix_loss_weight=0.3, max_steps=2, learning_rate=1e-3)
    trainer = MatrixTrainer(
        model=tiny_model,
        args=args,
        train_dataset=_dataset(tiny_tokenizer, n=8),
        processing_class=tiny_tokenizer,
        callbacks=[user, logs],
    )
    user.trainer = trainer
    trainer.train()
    mine = [log for log in logs.logs if "my_metric" in log]
    steps = [log for log in logs.logs if "loss" in log]
    assert len(mine) == len(steps) == 2
    assert all("lm_loss" not in log and "matrix_loss" not in log for log in mine)
    assert all("lm_loss" in log and "matrix_loss" in log for log in steps)

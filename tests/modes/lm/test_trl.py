"""MatrixSFTTrainer (TRL's SFTTrainer with the LM objective) and the objective inside a user's own Trainer.

Every update is checked against the one computed by hand from ``lm_loss + w * mce`` on the batches the trainer
used (recorded), with SGD at learning rate 1 (the update is minus the gradient).

.venv/bin/python -m pytest tests/modes/lm/test_trl.py -q
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

pytest.importorskip("trl")

import trl_worker as setup  # noqa: E402  (tests/modes/lm/trl_worker.py)

from matrix_llm import LMObjective, MatrixMetricsCallback, MatrixSFTTrainer  # noqa: E402
from matrix_llm.features import token_features  # noqa: E402
from matrix_llm.losses.token import TokenMCELoss  # noqa: E402
from matrix_llm.trainer import MatrixTrainer  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tok():
    return setup.tokenizer()


@pytest.fixture
def net(tok):
    return setup.model(tok)


class _Recorded:
    """Mixed into a trainer: the tensors of every training micro-batch, as compute_loss received them."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self.batches.append({k: v.detach().clone() for k, v in inputs.items() if torch.is_tensor(v)})
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


class RecordedSFT(_Recorded, MatrixSFTTrainer):
    batches: list


def _train(trainer_cls, net, tok, args, weight, **kw):
    """Train; return the trainer (with ``batches``) and the parameter update."""
    trainer = trainer_cls(
        model=net,
        args=args,
        train_dataset=kw.pop("train_dataset", setup.dataset()),
        processing_class=tok,
        objective=LMObjective(loss_type=kw.pop("loss_type", "head"), loss_weight=weight),
        **kw,
    )
    trainer.batches = []
    trained = [
        (n, p) for n, p in trainer.model.named_parameters() if p.requires_grad
    ]  # a PEFT model's adapter
    before = {n: p.detach().clone() for n, p in trained}
    trainer.train()
    return trainer, {n: p.detach() - before[n] for n, p in trained}


def _by_hand(model, batches, weight, loss_type="head"):
    """Minus the gradient of ``sum_i CE_sum_i / N + w * mean_i MCE_i`` (N: the completion tokens of all
    micro-batches, as ``num_items_in_batch``) on the original (unpatched) model."""
    model = copy.deepcopy(model)
    model.train()
    # TRL turned on (reentrant) activation checkpointing, which passes no gradient to a copy without its input hooks
    (model.get_base_model() if hasattr(model, "get_base_model") else model).gradient_checkpointing_disable()
    mce = TokenMCELoss(formulation=loss_type)
    total = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    loss = 0.0
    for b in batches:
        out = model(
            input_ids=b["input_ids"], attention_mask=b.get("attention_mask"), output_hidden_states=True
        )
        logits, targets = out.logits[:, :-1], b["labels"][:, 1:]
        loss = (
            loss
            + F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
            / total
        )
        feats = token_features(out.hidden_states[-1], b["labels"], out.logits)
        head = model.get_output_embeddings().weight
        loss = loss + weight * mce(feats.hidden, feats.targets, head.detach(), feats.logits).total / len(
            batches
        )
    model.zero_grad()
    loss.backward()
    return {n: -p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("loss_type", ["head", "relation"])
def test_the_matrix_term_reaches_the_gradient_as_computed_by_hand(net, tok, tmp_path, loss_type):
    """One SGD step of MatrixSFTTrainer on TRL's prompt-completion format (completion-only labels) with weight 0.5
    equals the step computed by hand from lm_loss + 0.5 * mce on the same batch, and differs from weight 0.
    ``relation`` needs logits, which TRL's fused LM head never builds: they are the head applied to the completion
    positions. One forward per micro-batch: TRL is not asked for outputs it would compute in a second forward.
    Mutations caught: the naive ``class X(MatrixTrainer, SFTTrainer)`` (the hidden states of TRL's extra ``no_grad``
    forward, no gradient: weight 0.5 gave the weight-0 update bit for bit); TRL's outputs always asked for."""
    original = copy.deepcopy(net)
    forwards = []
    net.model.register_forward_hook(lambda *_: forwards.append(1))
    trainer, delta = _train(RecordedSFT, net, tok, setup.config(tmp_path / "w"), 0.5, loss_type=loss_type)
    (batch,) = trainer.batches
    assert len(forwards) == 1
    assert (batch["labels"] == -100).any(), "TRL's collator masks the prompt"
    assert _max_diff(delta, _by_hand(original, trainer.batches, 0.5, loss_type)) < 2e-5
    _, plain = _train(RecordedSFT, copy.deepcopy(original), tok, setup.config(tmp_path / "0"), 0.0)
    assert _max_diff(delta, plain) > 1e-3


def test_gradient_accumulation_takes_the_mean_of_the_micro_batch_terms(net, tok, tmp_path):
    """GA 2 x 4 rows: the update is minus the gradient of (token-mean CE over the 8 rows + w * mean of the two
    micro-batches' MCE), so the matrix term's weight relative to the LM loss does not change with the
    accumulation steps; at w = 0 it equals 1 x 8 rows. Mutation caught: the matrix term not divided by the
    accumulation steps (TRL's loss is scaled for GA by num_items_in_batch, so the Trainer does not divide)."""
    original = copy.deepcopy(net)
    args = setup.config(tmp_path / "ga", per_device_train_batch_size=4, gradient_accumulation_steps=2)
    trainer, delta = _train(RecordedSFT, net, tok, args, 0.5)
    assert len(trainer.batches) == 2
    assert _max_diff(delta, _by_hand(original, trainer.batches, 0.5)) < 2e-5
    assert _max_diff(delta, _by_hand(original, trainer.batches, 1.0)) > 1e-4  # the un-divided sum
    _, ga0 = _train(RecordedSFT, copy.deepcopy(original), tok, args, 0.0)
    _, full0 = _train(RecordedSFT, copy.deepcopy(original), tok, setup.config(tmp_path / "full"), 0.0)
    assert _max_diff(ga0, full0) < 1e-5


class _Logs(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


@pytest.mark.parametrize("packing", [False, True])
def test_logged_loss_is_lm_loss_plus_weighted_matrix_loss_under_trl_collation(net, tok, tmp_path, packing):
    """Completion-only rows and TRL's packing (padding-free, restarting position_ids): the step's entry has TRL's
    keys and ours, and ``loss = lm_loss + w * matrix_loss``."""
    logs = _Logs()
    trainer, _ = _train(RecordedSFT, net, tok, setup.config(tmp_path, packing=packing), 0.5, callbacks=[logs])
    if packing:
        (batch,) = trainer.batches
        assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1  # padding-free
    (step,) = [log for log in logs.logs if "loss" in log]
    for key in ("entropy", "mean_token_accuracy", "num_tokens", "lm_loss", "matrix_loss", "matrix_entropy"):
        assert key in step, key
    assert step["loss"] == pytest.approx(step["lm_loss"] + 0.5 * step["matrix_loss"], rel=1e-5)


def test_the_probe_entry_keeps_away_from_trl_s_step_keys(net, tok, tmp_path):
    """MatrixMetricsCallback on MatrixSFTTrainer and on TRL's own SFTTrainer: the probe logs its own entry
    (``probe_*`` only) and TRL's ``entropy`` / ``mean_token_accuracy`` stay in the step's entry. Mutation
    caught: the probe logging through ``trainer.log`` (TRL merges its queued step metrics into whatever is
    logged first, the probe's entry)."""
    from trl import SFTTrainer

    probe = [tok(r["prompt"] + r["completion"]) for r in setup.ROWS[:4]]
    for cls in (MatrixSFTTrainer, SFTTrainer):
        logs = _Logs()
        kwargs = {"objective": LMObjective(loss_weight=0.1)} if cls is MatrixSFTTrainer else {}
        trainer = cls(
            model=copy.deepcopy(net),
            args=setup.config(tmp_path / cls.__name__, max_steps=2),
            train_dataset=setup.dataset(),
            processing_class=tok,
            callbacks=[logs],
            **kwargs,
        )
        trainer.add_callback(MatrixMetricsCallback(probe, trainer=trainer, every=1))
        trainer.train()
        steps = [log for log in logs.logs if "loss" in log]
        probes = [log for log in logs.logs if any(k.startswith("probe_") for k in log)]
        assert len(steps) == 2 and len(probes) == 2, cls.__name__
        for log in steps:
            assert "entropy" in log and "mean_token_accuracy" in log, (cls.__name__, log)
        for log in probes:
            assert not {"entropy", "mean_token_accuracy", "lm_loss"} & set(log), (cls.__name__, log)


def test_peft_adapter_gets_the_matrix_gradient(net, tok, tmp_path):
    """A PEFT model (LoRA with non-zero B, so that both A and B get gradients): only the adapter trains, and its
    update equals the hand-computed one on the same batch; weight 0 gives another."""
    from conftest import nonzero_lora

    adapted = nonzero_lora(net)
    original = copy.deepcopy(
        adapted
    )  # before TRL patches the forward (a copy after it would run the original)
    spare = copy.deepcopy(adapted)
    trainer, delta = _train(RecordedSFT, adapted, tok, setup.config(tmp_path / "w"), 0.5)
    assert delta and all("lora_" in n for n in delta)
    assert _max_diff(delta, _by_hand(original, trainer.batches, 0.5)) < 2e-5
    _, plain = _train(RecordedSFT, spare, tok, setup.config(tmp_path / "0"), 0.0)
    assert _max_diff(delta, plain) > 1e-4


class OwnTrainer(Trainer):
    """A user's own Trainer: it computes the CE itself from the logits (token mean)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        logits = outputs.logits[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
        return (loss, outputs) if return_outputs else loss


class MatrixOwnTrainer(_Recorded, MatrixTrainer, OwnTrainer):
    batches: list


def test_the_objective_in_a_user_s_own_trainer(net, tok, tmp_path):
    """``class MatrixOwnTrainer(MatrixTrainer, OwnTrainer)``: the user's loss plus the matrix term, and the update
    equals the hand-computed one (the README's recipe for people who keep their own trainer)."""
    from transformers import TrainingArguments

    from matrix_llm.data import CompletionCollator

    rows = []
    for r in setup.ROWS:
        prompt = tok(r["prompt"])["input_ids"]
        ids = prompt + tok(r["completion"])["input_ids"]
        rows.append({"input_ids": ids, "labels": [-100] * len(prompt) + ids[len(prompt) :]})
    args = TrainingArguments(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        max_steps=1,
        optim="sgd",
        learning_rate=1.0,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        per_device_train_batch_size=8,
        remove_unused_columns=False,
    )
    original = copy.deepcopy(net)
    trainer, delta = _train(
        MatrixOwnTrainer, net, tok, args, 0.5, train_dataset=rows, data_collator=CompletionCollator(tok)
    )
    (batch,) = trainer.batches
    model = copy.deepcopy(original)
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
    )
    logits = out.logits[:, :-1]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1))
    feats = token_features(out.hidden_states[-1], batch["labels"])
    loss = loss + 0.5 * TokenMCELoss()(feats.hidden, feats.targets, model.lm_head.weight.detach()).total
    loss.backward()
    assert _max_diff(delta, {n: -p.grad for n, p in model.named_parameters()}) < 2e-5


@pytest.mark.slow
def test_two_processes_equal_one_process_with_their_micro_batches(net, tok, tmp_path):
    """Two gloo processes x 2 rows = one process x 2 rows x GA 2 (the same micro-batches: accelerate gives rank r
    the r-th batch of the sampler's order): both ranks hold the same parameters, equal to the single process's
    (the CE is the token mean over both ranks, the matrix term the mean of the ranks' terms). Mutation caught:
    the matrix term added before the parent's ``x num_processes`` (it would be doubled)."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO), str(Path(__file__).parent)]),
        OMP_NUM_THREADS="1",
        GLOO_SOCKET_IFNAME="lo",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, str(Path(setup.__file__)), str(tmp_path), "0.5"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert _max_diff(ranks[0]["params"], ranks[1]["params"]) == 0
    args = setup.config(tmp_path / "one", per_device_train_batch_size=2, gradient_accumulation_steps=2)
    original = copy.deepcopy(net)
    _train(RecordedSFT, net, tok, args, 0.5)
    one = dict(net.named_parameters())
    assert _max_diff(ranks[0]["params"], {n: p.detach() for n, p in one.items()}) < 2e-5
    start = dict(original.named_parameters())
    assert _max_diff(ranks[0]["params"], {n: p.detach() for n, p in start.items()}) > 1e-3

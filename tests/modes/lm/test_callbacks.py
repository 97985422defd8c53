"""Tests for matrix_llm.modes.lm.callback.GSM8KEvalCallback: plain Trainer, CLI consistency, DDP and ZeRO-3 (2 processes).

.venv/bin/python -m pytest tests/modes/lm/test_callbacks.py -q              # all (the 2-process ones are `slow`)
.venv/bin/python -m pytest tests/modes/lm/test_callbacks.py -q -m "not slow"
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_evaluation import make_scorable_items

from matrix_llm.modes.lm.callback import GSM8KEvalCallback
from matrix_llm.modes.lm.evaluate import evaluate_gsm8k, read_jsonl, write_jsonl

REPO = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).resolve().parent / "gsm8k_callback_worker.py"
MAX_NEW = 12


def _trainer(model, tok, tmp_path, callbacks=(), **kw):
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from matrix_llm.data.gsm8k import tokenize_dataset
    from matrix_llm.data.synthetic import synthetic_dataset

    ds, _ = tokenize_dataset(synthetic_dataset(4, seed=0), tok, template="qa", max_length=256)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        save_strategy="no",
        disable_tqdm=True,
        **kw,
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=ds,
        eval_dataset=ds,
        data_collator=DataCollatorForSeq2Seq(tok, padding=True),
        processing_class=tok,
        callbacks=list(callbacks),
    )


@pytest.fixture
def items(tiny_model, tiny_tokenizer):
    return make_scorable_items(tiny_model, tiny_tokenizer, 6, max_new_tokens=MAX_NEW)


@pytest.mark.parametrize("pass_trainer", [True, False])
def test_logged_values_equal_a_direct_evaluation(tmp_path, tiny_model, tiny_tokenizer, items, pass_trainer):
    direct = evaluate_gsm8k(
        tiny_model.eval(),
        tiny_tokenizer,
        items,
        prompt="qa",
        max_new_tokens=MAX_NEW,
        batch_size=6,
        progress=False,
    )
    assert 0 < direct.metrics["flexible_accuracy"] < 1
    cb = GSM8KEvalCallback(
        tiny_tokenizer, items, prompt="qa", num_samples=5, max_new_tokens=MAX_NEW, batch_size=2
    )
    trainer = _trainer(tiny_model, tiny_tokenizer, tmp_path, [cb])
    if pass_trainer:
        cb.trainer = trainer
    tiny_model.train()
    metrics = trainer.evaluate()
    subset = evaluate_gsm8k(
        tiny_model.eval(),
        tiny_tokenizer,
        items[:5],
        prompt="qa",
        max_new_tokens=MAX_NEW,
        batch_size=5,
        progress=False,
    )
    expected = {
        "eval_gsm8k_strict": subset.metrics["strict_accuracy"],
        "eval_gsm8k_flexible": subset.metrics["flexible_accuracy"],
        "eval_gsm8k_no_answer": subset.metrics["no_answer_rate"],
    }
    assert {k: metrics[k] for k in expected} == expected
    assert [s["completion"] for s in cb.last_samples] == [s["completion"] for s in subset.samples]
    logged = [e for e in trainer.state.log_history if "eval_gsm8k_strict" in e]
    assert len(logged) == 1 and {k: logged[0][k] for k in expected} == expected
    if not pass_trainer:  # merged into the evaluation's own log entry
        assert "eval_loss" in logged[0]
    saved = read_jsonl(tmp_path / "out" / "gsm8k_samples" / "step-0.jsonl")
    assert [s["completion"] for s in saved] == [s["completion"] for s in subset.samples]


def test_model_is_in_eval_mode_while_generating_and_restored(tmp_path, tiny_model, tiny_tokenizer, items):
    from transformers import TrainerControl, TrainerState

    seen = []
    original = tiny_model.generate

    def spy(*args, **kwargs):
        seen.append(tiny_model.training)
        return original(*args, **kwargs)

    tiny_model.generate = spy
    cb = GSM8KEvalCallback(tiny_tokenizer, items, num_samples=2, max_new_tokens=4, save_samples=False)
    state = TrainerState()
    for mode in (True, False):
        tiny_model.train(mode)
        state.global_step += 1
        metrics = {}
        cb.on_evaluate(None, state, TrainerControl(), model=tiny_model, metrics=metrics)
        assert tiny_model.training is mode
        assert set(metrics) == {"eval_gsm8k_strict", "eval_gsm8k_flexible", "eval_gsm8k_no_answer"}
    assert seen and not any(seen)


def test_metrics_during_training_every_eval_steps(tmp_path, tiny_model, tiny_tokenizer, items):
    cb = GSM8KEvalCallback(tiny_tokenizer, items, num_samples=3, max_new_tokens=4, batch_size=3)
    trainer = _trainer(
        tiny_model,
        tiny_tokenizer,
        tmp_path,
        [cb],
        max_steps=2,
        eval_strategy="steps",
        eval_steps=1,
        logging_steps=1,
    )
    cb.trainer = trainer
    trainer.train()
    steps = [e["step"] for e in trainer.state.log_history if "eval_gsm8k_strict" in e]
    assert steps == [1, 2]


def test_bad_arguments_raise(tiny_tokenizer):
    with pytest.raises(ValueError, match="question"):
        GSM8KEvalCallback(tiny_tokenizer, [{"q": "x"}])
    with pytest.raises(ValueError, match="prompt must be one of"):
        GSM8KEvalCallback(tiny_tokenizer, [{"question": "x", "answer": "#### 1"}], prompt="nope")
    with pytest.raises(ValueError, match="fewshot_examples"):
        GSM8KEvalCallback(tiny_tokenizer, [{"question": "x", "answer": "#### 1"}], prompt="fewshot5")


def test_cli_eval_and_callback_agree_on_the_same_items(tmp_path, tiny_model, tiny_tokenizer, items):
    from matrix_llm.tools.eval import main

    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    data = tmp_path / "synthetic.jsonl"
    write_jsonl(data, items)
    assert (
        main(
            [
                "gsm8k",
                "--model",
                str(model_dir),
                "--prompt",
                "qa",
                "--data",
                str(data),
                "--limit",
                "5",
                "--max_new_tokens",
                str(MAX_NEW),
                "--batch_size",
                "3",
                "--output_dir",
                str(tmp_path / "run"),
                "--no_progress",
            ]
        )
        == 0
    )
    cli = json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]

    cb = GSM8KEvalCallback(
        tiny_tokenizer, items, prompt="qa", num_samples=5, max_new_tokens=MAX_NEW, batch_size=2
    )
    metrics = _trainer(tiny_model, tiny_tokenizer, tmp_path, [cb]).evaluate()
    assert metrics["eval_gsm8k_strict"] == cli["strict_accuracy"]
    assert metrics["eval_gsm8k_flexible"] == cli["flexible_accuracy"]
    assert metrics["eval_gsm8k_no_answer"] == cli["no_answer_rate"]
    assert 0 < cli["flexible_accuracy"] < 1
    assert cb.last_metrics == cli


def _run_worker(mode: str, out: Path, timeout: int) -> list[dict]:
    env = dict(os.environ)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".venv" / "torch_extensions"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port: the suite runs two tests at a time (pytest-xdist)
        "--nproc_per_node",
        "2",
        str(WORKER),
        mode,
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def _check_ranks(records: list[dict]) -> None:
    for rec in records:
        assert rec["world_size"] == 2
        # gathered over 2 ranks == one process on the same items, completions and metrics alike
        assert rec["callback_completions"] == rec["reference_completions"]
        assert rec["callback_metrics"] == rec["reference_metrics"]
        assert len(rec["logged"]) == 1 and rec["logged"][0]["step"] == 2
    assert records[0]["logged"] == records[1]["logged"]  # all ranks agree
    assert 0 < records[0]["reference_metrics"]["flexible_accuracy"] < 1


@pytest.mark.slow
def test_ddp_two_processes_gathered_accuracy_equals_single_process(tmp_path):
    records = _run_worker("ddp", tmp_path, timeout=300)
    _check_ranks(records)
    assert not records[0]["deepspeed"] and not records[0]["synced_gpus"]


@pytest.mark.slow
def test_deepspeed_zero3_two_processes_with_synced_gpus(tmp_path):
    pytest.importorskip("deepspeed")
    records = _run_worker("zero3", tmp_path, timeout=540)
    _check_ranks(records)
    assert records[0]["deepspeed"] and records[0]["zero3_sharded"] and records[0]["synced_gpus"]


def test_peft_model_in_the_trainer(tmp_path, tiny_model, tiny_tokenizer, items):
    """The callback generates with the adapter: its completions are the merged model's, not the base model's."""
    from conftest import merged_copy, nonzero_lora

    def completions(model):
        out = evaluate_gsm8k(
            model.eval(),
            tiny_tokenizer,
            items[:4],
            prompt="qa",
            max_new_tokens=MAX_NEW,
            batch_size=4,
            progress=False,
        )
        return [s["completion"] for s in out.samples], out.metrics

    base, _ = completions(tiny_model)
    model = nonzero_lora(tiny_model)
    merged, merged_metrics = completions(merged_copy(model))
    cb = GSM8KEvalCallback(tiny_tokenizer, items, num_samples=4, max_new_tokens=MAX_NEW, batch_size=2)
    metrics = _trainer(model, tiny_tokenizer, tmp_path, [cb]).evaluate()
    assert [s["completion"] for s in cb.last_samples] == merged != base
    assert metrics["eval_gsm8k_flexible"] == merged_metrics["flexible_accuracy"]


def test_results_are_cached_per_step_until_training_ends(tmp_path, tiny_model, tiny_tokenizer, items):
    """A second evaluate at the same step reuses the generations; after training ends (when
    `load_best_model_at_end` may have swapped the weights) the next evaluate generates again."""
    cb = GSM8KEvalCallback(
        tiny_tokenizer, items, prompt="qa", num_samples=2, max_new_tokens=MAX_NEW, batch_size=2
    )
    trainer = _trainer(tiny_model, tiny_tokenizer, tmp_path, [cb])
    runs = []
    real = cb.evaluate
    cb.evaluate = lambda *a, **k: runs.append(1) or real(*a, **k)
    trainer.evaluate()
    trainer.evaluate()
    assert len(runs) == 1
    trainer.callback_handler.on_train_end(trainer.args, trainer.state, trainer.control)
    trainer.evaluate()
    assert len(runs) == 2

"""Worker for the multi-process GSM8KEvalCallback tests (DDP and DeepSpeed ZeRO-3 on CPU, gloo).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/modes/lm/gsm8k_callback_worker.py {ddp,zero3} OUT_DIR

Each rank builds the same tiny model and the same items, computes a single-process reference evaluation (no
collectives), then trains 2 steps with learning rate 0 (weights unchanged) under the Trainer with the callback,
evaluating at step 2, and writes ``OUT_DIR/rank{r}.json``: world size, the reference metrics and completions,
what the callback logged, and the log history.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

sys.path[:0] = [
    str(Path(__file__).resolve().parent),
    str(Path(__file__).resolve().parents[2]),
]  # test_evaluation, conftest

NUM_ITEMS = 7  # odd: the two ranks get shards of different sizes


def main(mode: str, out_dir: str) -> None:
    import torch
    import torch.distributed as dist
    from conftest import _CORPUS
    from test_evaluation import make_scorable_items
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from matrix_llm.data.gsm8k import tokenize_dataset
    from matrix_llm.data.synthetic import synthetic_dataset
    from matrix_llm.models.tiny import build_llama, build_tokenizer
    from matrix_llm.modes.lm.callback import GSM8KEvalCallback
    from matrix_llm.modes.lm.evaluate import evaluate_gsm8k

    torch.manual_seed(0)
    deepspeed = None
    if mode == "zero3":
        deepspeed = {
            "zero_optimization": {"stage": 3},
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "train_batch_size": "auto",
        }
    args = TrainingArguments(
        output_dir=out_dir,
        use_cpu=True,
        max_steps=2,
        learning_rate=0.0,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        deepspeed=deepspeed,
        disable_tqdm=True,
        seed=0,
    )
    tok = build_tokenizer(_CORPUS * 20, vocab_size=320)
    model = build_llama(tok, hidden_size=64, num_layers=2, num_heads=4, seed=0)
    items = make_scorable_items(model, tok, NUM_ITEMS, max_new_tokens=12)
    reference = evaluate_gsm8k(
        model.eval(), tok, items, prompt="qa", max_new_tokens=12, batch_size=3, progress=False
    )
    model.train()

    train, _ = tokenize_dataset(synthetic_dataset(8, seed=0), tok, template="qa", max_length=256)
    callback = GSM8KEvalCallback(tok, items, prompt="qa", num_samples=None, max_new_tokens=12, batch_size=3)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=train.select(range(2)),
        data_collator=DataCollatorForSeq2Seq(tok, padding=True),
        processing_class=tok,
        callbacks=[callback],
    )
    callback.trainer = trainer
    trainer.train()

    rank, world = dist.get_rank(), dist.get_world_size()
    record = {
        "world_size": world,
        "mode": mode,
        "deepspeed": trainer.is_deepspeed_enabled,
        "zero3_sharded": any(hasattr(p, "ds_id") for p in trainer.model.parameters()),
        "synced_gpus": callback._use_synced_gpus(world, trainer.model, trainer.args),
        "reference_metrics": reference.metrics,
        "reference_completions": [s["completion"] for s in reference.samples],
        "callback_metrics": callback.last_metrics,
        "callback_completions": [s["completion"] for s in callback.last_samples],
        "logged": [e for e in trainer.state.log_history if any(k.startswith("eval_gsm8k_") for k in e)],
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))
    del trainer, model, callback
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

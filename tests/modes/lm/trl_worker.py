"""The tiny TRL set-up of tests/modes/lm/test_trl.py, and its 2-process worker: one SGD step of MatrixSFTTrainer
on two gloo processes, each rank's parameters after it saved to OUTPUT_DIR/rank{r}.pt.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/modes/lm/trl_worker.py OUTPUT_DIR WEIGHT
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

ROWS = [
    {
        "prompt": f"Question: Tom has {a} apples and buys {b} more. How many apples does he have?\n",
        "completion": f"Answer: {a} + {b} = {a + b} apples.\n#### {a + b}" + " Done." * (i % 3),
    }
    for i, (a, b) in enumerate([(12, 35), (6, 4), (90, 15), (7, 8), (21, 30), (3, 9), (44, 11), (5, 50)])
]


def tokenizer():
    from matrix_llm.models.tiny import build_tokenizer

    return build_tokenizer([r["prompt"] + r["completion"] for r in ROWS] * 10, vocab_size=320)


def model(tok):
    from matrix_llm.models.tiny import build_llama

    return build_llama(tok, hidden_size=64, num_layers=2, num_heads=4, seed=0)


def dataset():
    from datasets import Dataset

    return Dataset.from_list(ROWS)


def config(output_dir, **kw):
    """One SGD step at learning rate 1 (the update is minus the gradient), nothing saved, logged every step, in
    float32 (SFTConfig's default is bf16 autocast, which the hand-computed references would not match); TRL's
    other defaults (gradient checkpointing among them) kept."""
    from trl import SFTConfig

    base = dict(
        output_dir=str(output_dir),
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
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        dataloader_num_workers=0,
        bf16=False,
    )
    base.update(kw)
    return SFTConfig(**base)


def main() -> int:
    from matrix_llm import LMObjective, MatrixSFTTrainer

    out, weight = Path(sys.argv[1]), float(sys.argv[2])
    tok = tokenizer()
    net = model(tok)
    trainer = MatrixSFTTrainer(
        model=net,
        args=config(out, per_device_train_batch_size=2),
        train_dataset=dataset(),
        processing_class=tok,
        objective=LMObjective(loss_type="head", loss_weight=weight),
    )
    trainer.train()
    params = {n: p.detach().clone() for n, p in net.named_parameters()}
    torch.save(
        {"world_size": trainer.accelerator.num_processes, "params": params},
        out / f"rank{int(os.environ.get('RANK', '0'))}.pt",
    )
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())

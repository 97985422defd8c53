"""Worker of tests/test_trackers.py: two logged steps of MatrixTrainer (tiny Llama, matrix loss `head`) with
MatrixMetricsCallback, reported to one tracker, in a process of its own (trackers read their folders from the
environment when imported); the run's log history is written to OUTPUT_DIR/log_history.json.

    python tests/tracker_worker.py TRACKER OUTPUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main() -> int:
    from matrix_llm import LMConfig, MatrixMetricsCallback, MatrixTrainer
    from matrix_llm.data import CompletionCollator, synthetic_dataset, tokenize_dataset
    from matrix_llm.models.tiny import build_llama, build_tokenizer

    tracker, out = sys.argv[1], sys.argv[2]
    problems = synthetic_dataset(32, seed=0, split="train")
    tok = build_tokenizer([r["question"] + r["answer"] for r in problems], vocab_size=300)
    train, _ = tokenize_dataset(problems, tok, template="qa", max_length=128)
    trainer = MatrixTrainer(
        model=build_llama(tok, hidden_size=32, num_layers=2, num_heads=2),
        args=LMConfig(
            output_dir=out,
            run_name="trackers",
            project="matrix-llm-tests",  # trackio's project
            report_to=[tracker],
            max_steps=2,
            logging_steps=1,
            per_device_train_batch_size=4,
            use_cpu=True,
            save_strategy="no",
            disable_tqdm=True,
            matrix_loss_type="head",
            matrix_loss_weight=0.1,
        ),
        train_dataset=train,
        processing_class=tok,
        data_collator=CompletionCollator(tok),
    )
    trainer.add_callback(MatrixMetricsCallback([train[i] for i in range(4)], trainer=trainer, every=1))
    trainer.train()
    Path(out, "log_history.json").write_text(json.dumps(trainer.state.log_history))
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())

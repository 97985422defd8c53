"""Worker for the 2-process tests of tests/modes/ssl/test_ssl.py, test_clip.py and test_classification.py: runs
`matrix-llm ssl`, `clip` or `classify` under torchrun and writes, per rank, the world size, the distributed type, a
checksum of every parameter (an EMA teacher included) after training and, per training batch with labels, its
number of labelled rows and the sum of its pixels, to OUTPUT_DIR/rank{r}.json.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed/mode_dist_worker.py {ssl,clip,classify} --config ...
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

import matrix_llm.trainer
from matrix_llm.modes.classify import command as classify
from matrix_llm.modes.clip import command as clip
from matrix_llm.modes.ssl import command as ssl

RECORD: dict = {}


class Recording(matrix_llm.trainer.MatrixTrainer):
    def compute_loss(self, model, inputs, *args, **kwargs):
        if self.model.training and "labels" in inputs:
            batch = (int((inputs["labels"] != -100).sum()), float(inputs["pixel_values"].double().sum()))
            RECORD.setdefault("batches", []).append(batch)
        return super().compute_loss(model, inputs, *args, **kwargs)

    def train(self, *args, **kwargs):
        result = super().train(*args, **kwargs)
        RECORD["checksums"] = {
            n: [float(p.detach().double().sum()), float(p.detach().double().square().sum())]
            for n, p in self.model.named_parameters()
        }
        RECORD["world_size"] = self.accelerator.num_processes
        RECORD["rank"] = self.accelerator.process_index
        RECORD["distributed_type"] = str(self.accelerator.distributed_type)
        return result


matrix_llm.trainer.MatrixTrainer = Recording


def main() -> int:
    command = {"ssl": ssl, "clip": clip, "classify": classify}[sys.argv[1]]
    argv = sys.argv[2:]
    _, _, training_args = command.parse_args(argv)
    code = command.main(argv)
    Path(training_args.output_dir, f"rank{int(os.environ.get('RANK', '0'))}.json").write_text(
        json.dumps(RECORD)
    )
    return code


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())

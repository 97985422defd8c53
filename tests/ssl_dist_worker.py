"""Worker for the 2-process tests in tests/objectives/test_ssl.py: runs `matrix-llm ssl` under torchrun and writes,
per rank, the world size, the distributed type and a checksum of every parameter (teacher included) after
training to OUTPUT_DIR/rank{r}.json.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ssl_dist_worker.py --config ... --use_cpu true
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

import matrix_llm.trainer
from matrix_llm import ssl

RECORD: dict = {}


class Recording(matrix_llm.trainer.MatrixTrainer):
    def train(self, *args, **kwargs):
        result = super().train(*args, **kwargs)
        RECORD["checksums"] = {n: [float(p.detach().double().sum()), float(p.detach().double().square().sum())]
                               for n, p in self.model.named_parameters()}  # fmt: skip
        RECORD["world_size"] = self.accelerator.num_processes
        RECORD["rank"] = self.accelerator.process_index
        RECORD["distributed_type"] = str(self.accelerator.distributed_type)
        return result


matrix_llm.trainer.MatrixTrainer = Recording


def main() -> int:
    argv = sys.argv[1:]
    _, _, training_args = ssl.parse_args(argv)
    code = ssl.main(argv)
    Path(training_args.output_dir, f"rank{int(os.environ.get('RANK', '0'))}.json").write_text(json.dumps(RECORD))
    return code


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())

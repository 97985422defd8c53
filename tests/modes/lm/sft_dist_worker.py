"""Worker for the 2-process tests in tests/modes/lm/test_sft.py: runs `matrix-llm sft` under torchrun and writes, per
rank, the world size, a checksum of every (gathered) parameter after training and, for every matrix-loss call,
the local and the loss-side token counts to OUTPUT_DIR/rank{r}.json.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/modes/lm/sft_dist_worker.py --config ... --use_cpu true
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

import matrix_llm.trainer
from matrix_llm import features
from matrix_llm.losses.token import TokenMCELoss
from matrix_llm.modes.lm import command as sft
from matrix_llm.modes.lm.command import parse_args

RECORD: dict = {"calls": [], "checksums": {}}

_forward = TokenMCELoss.forward


def _recording_forward(self, hidden, labels, head_weight, logits=None):
    out = _forward(self, hidden, labels, head_weight, logits)
    RECORD["calls"].append([int(labels.shape[0]), int(out.parts["num_tokens"].item())])
    return out


TokenMCELoss.forward = _recording_forward

_is_zero3 = features.modules._is_zero3


def _recording_is_zero3(param):
    result = _is_zero3(param)
    RECORD["zero3_head_gathered"] = RECORD.get("zero3_head_gathered", False) or bool(result)
    return result


features.modules._is_zero3 = _recording_is_zero3


class Recording(matrix_llm.trainer.MatrixTrainer):
    def train(self, *args, **kwargs):
        result = super().train(*args, **kwargs)
        params = list(self.model.named_parameters())
        if any(hasattr(p, "ds_id") for _, p in params):  # ZeRO-3: gather every shard first
            import deepspeed

            # one parameter at a time: until DeepSpeed PR #8539 (in 0.19.8, not in the floor 0.17.0) a gather of
            # several waits only for the last of its per-parameter all-gathers, and on gloo the others may not
            # have landed yet: uninitialised values on one rank, seen in the floors run under load
            checksums = {}
            for name, p in params:
                with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                    checksums.update(_checksums([(name, p)]))
            RECORD["checksums"] = checksums
        else:
            RECORD["checksums"] = _checksums(params)
        RECORD["world_size"] = self.accelerator.num_processes
        RECORD["rank"] = self.accelerator.process_index
        RECORD["distributed_type"] = str(self.accelerator.distributed_type)
        return result


def _checksums(params):
    def full(p):  # FSDP2 parameters are DTensors: checksum the whole tensor, not this rank's shard
        return p.full_tensor() if hasattr(p, "full_tensor") else p

    return {
        n: [float(full(p).detach().double().sum()), float(full(p).detach().double().square().sum())]
        for n, p in params
    }


matrix_llm.trainer.MatrixTrainer = Recording


def main() -> int:
    argv = sys.argv[1:]
    _, _, training_args = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    code = sft.main(argv)
    Path(training_args.output_dir, f"rank{rank}.json").write_text(json.dumps(RECORD))
    return code


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())

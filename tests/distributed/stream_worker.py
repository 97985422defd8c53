"""Worker for the streaming tests of tests/modes/test_streaming.py: `matrix-llm ssl --streaming true ...` on however
many processes launched it, on data whose `label` is the row's number, recording per process the labels of every
batch a training step consumed (OUT/rank{r}.json: step -> labels). With KILL_AFTER_SAVE=N in the environment the run
stops right after saving checkpoint-N (every process saved), as a pre-empted job would.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed/stream_worker.py OUT ARGS...
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

import matrix_llm.trainer
from matrix_llm.modes.ssl import command as ssl

SEEN: dict[int, list[int]] = {}


class Recording(matrix_llm.trainer.MatrixTrainer):
    def compute_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            SEEN.setdefault(self.state.global_step + 1, []).extend(inputs["labels"].tolist())
        return super().compute_loss(model, inputs, *args, **kwargs)


class KillAfterSave(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            if torch.distributed.is_initialized():
                torch.distributed.barrier()  # every process has written its checkpoint files
            _write()
            os._exit(3)
        return control


def _write():
    out = Path(sys.argv[1])
    (out / f"rank{int(os.environ.get('RANK', '0'))}.json").write_text(json.dumps(SEEN))


def main() -> int:
    matrix_llm.trainer.MatrixTrainer = Recording
    if "KILL_AFTER_SAVE" in os.environ:
        real_init = Recording.__init__

        def init(self, *args, **kwargs):
            real_init(self, *args, **kwargs)
            self.add_callback(KillAfterSave(int(os.environ["KILL_AFTER_SAVE"])))

        Recording.__init__ = init
    code = ssl.main(sys.argv[2:])
    _write()
    return code


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())

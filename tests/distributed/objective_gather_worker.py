"""Worker for tests/distributed/test_distributed.py: the objectives that `matrix-llm ssl` and `matrix-llm clip` build from their
configs, run on 2 real processes (gloo) on uneven halves of a float64 batch, against one process on the whole batch.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed/objective_gather_worker.py OUT_DIR

The network is a stand-in that returns this rank's rows of fixed projections as leaves, so the objective's own
__call__ (its losses, their gather, its weights) is what is compared: each rank back-propagates ``loss / world``
(what data-parallel averaging does) and saves, per case, its loss and gradient, and the single-process loss and
gradient rows of the same objective on the whole batch (computed after the process group is gone), to
``OUT_DIR/rank{r}.pt``.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch import nn

from matrix_llm.models.ssl import MAEOutput, SSLOutput
from matrix_llm.modes import CLIPObjective, SSLObjective
from matrix_llm.modes.clip import command as clip
from matrix_llm.modes.ssl import command as ssl

SIZES = (7, 5)  # rows per rank: uneven
D = 6
SSL = ["--config", "demo/ssl.yaml", "--output_dir", "unused"]
CLIP = ["--config", "demo/clip.yaml", "--output_dir", "unused"]


class SSLNet(nn.Module):
    def __init__(self, z1, z2, p1, p2):
        super().__init__()
        self.z1, self.z2, self.p1, self.p2 = z1, z2, p1, p2

    def forward(self, pixel_values, labels=None, augment_step=0):
        return SSLOutput(z1=self.z1, z2=self.z2, features=self.z1.detach(), p1=self.p1, p2=self.p2)


class MAENet(nn.Module):
    """M-MAE: a reconstruction loss of 0 and the class tokens as features (the TCR term alone)."""

    def __init__(self, features):
        super().__init__()
        self.features = features

    def forward(self, pixel_values, labels=None, augment_step=0):
        return MAEOutput(reconstruction_loss=self.features.sum() * 0.0, features=self.features)


class CLIPNet(nn.Module):
    def __init__(self, images, texts):
        super().__init__()
        self.images, self.texts = images, texts
        self.logit_scale = nn.Parameter(torch.tensor(2.0, dtype=torch.float64))

    def forward(self, input_ids, attention_mask, pixel_values):
        return SimpleNamespace(image_embeds=self.images, text_embeds=self.texts)


def _cases() -> dict:
    torch.manual_seed(0)
    n = sum(SIZES)
    z1, z2, p1, p2, images, texts = (torch.randn(n, D, dtype=torch.float64) for _ in range(6))
    ids = torch.arange(1, n + 1).view(-1, 1).repeat(1, 3)
    cases = {}
    for method in ("matrix_ssl", "mec", "simclr", "barlow_twins"):
        objective = SSLObjective.from_args(ssl.parse_args([*SSL, "--ssl_method", method])[2])
        cases[f"ssl_{method}"] = (objective, lambda rows, t: SSLNet(*t), [z1, z2], [p1, p2], lambda rows: {})
    mmae = SSLObjective.from_args(
        ssl.parse_args([*SSL, "--ssl_method", "mmae", "--ssl_tcr_weight", "0.5"])[2]
    )
    cases["ssl_mmae"] = (mmae, lambda rows, t: MAENet(*t), [z1], [], lambda rows: {})
    for name, weights in (
        ("infonce", []),
        (
            "mce",
            ["--clip_mce_weight", "0.5", "--clip_alignment_weight", "0", "--clip_matrix_start_step", "0"],
        ),
    ):
        objective = CLIPObjective.from_args(
            clip.parse_args([*CLIP, "--clip_crop_min_scale", "1", *weights])[2]
        )
        cases[f"clip_{name}"] = (
            objective,
            lambda rows, t: CLIPNet(*t),
            [images, texts],
            [],
            lambda rows: {"input_ids": ids[rows], "attention_mask": torch.ones_like(ids[rows])},
        )
    return cases


def _loss_and_grads(case, rows: slice, scale: float):
    objective, net, leaves, fixed, text = case
    mine = [t[rows].clone().requires_grad_(True) for t in leaves]
    model = net(rows, [*mine, *(t[rows] for t in fixed)]).eval()
    inputs = {"pixel_values": torch.zeros(rows.stop - rows.start, 1, 4, 4), **text(rows)}
    loss = objective(model, inputs, step=0).batch_loss
    (loss * scale).backward()
    return loss.detach(), [t.grad.detach() for t in mine]


def main(out_dir: str) -> None:
    cases = _cases()  # parsing the configs sets up the process group (accelerate's state), as in a run
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    r, world = dist.get_rank(), dist.get_world_size()
    mine = slice(sum(SIZES[:r]), sum(SIZES[: r + 1]))
    out = {"world_size": world}
    for name, case in cases.items():
        loss, grads = _loss_and_grads(case, mine, 1.0 / world)
        out[name] = {"loss": loss, "grads": grads}
    dist.barrier()
    dist.destroy_process_group()
    for name, case in cases.items():  # one process: the whole batch, no gather
        ref_loss, ref_grads = _loss_and_grads(case, slice(0, sum(SIZES)), 1.0)
        out[name].update(ref_loss=ref_loss, ref_grads=[g[mine] for g in ref_grads])
    torch.save(out, os.path.join(out_dir, f"rank{r}.pt"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1])

"""The GPU plan (issue 31, item 8): the runs that decide the seed claims this 2-core machine cannot, as one script
that runs as written on a machine with one GPU (an H200 or H100), the Hub reachable (or its cache filled), and
``../shared/data`` beside the checkout (the Fashion-MNIST zero-shot set).

Each study is a grid of ``matrix-llm`` runs (arms x seeds; :func:`harness.grid_runs`), an evaluation where the
claim is measured by one, and at the end the claim's comparison (:func:`comparisons.compare`, unpaired: Welch + an exact
permutation test, Bonferroni over the study's arms) with the paper's claimed effect, written to
``outputs/gpu_plan/<study>/summary.json`` and printed. A finished run is not run again (its result file is read).
The hours are estimates (how each was made is in ``hours``), not measurements.

    python experiments/gpu_plan.py --list                 (the studies, their runs and estimated hours)
    python experiments/gpu_plan.py --dry-run              (every command line, nothing run)
    python experiments/gpu_plan.py [--only STUDY ...]     (run them, in the environment that has the CUDA torch)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

from comparisons import UNPAIRED, compare, comparison_text  # noqa: E402
from harness import (  # noqa: E402
    FASHION,
    grid_runs,
    run_toolkit,
)

OUT = REPO / "outputs" / "gpu_plan"


@dataclass(frozen=True)
class Study:
    """``matrix-llm {command} *base *arm --seed k --output_dir outputs/gpu_plan/<name>/<arm>/seed<k>`` for every
    arm and seed; ``evaluate(run_dir)``, when given, is the command that measures ``metric`` (its result file
    ``evaluation``); ``baseline``: the arm the others are compared with; ``claimed``: the paper's effect."""

    name: str
    claim: str
    command: str
    base: list[str]
    arms: dict[str, list[str]]
    metric: str
    baseline: str
    claimed: float | None
    hours: tuple[float, str]  # per run on one H200, and how the figure was estimated
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)  # 3 + 3 runs: the exact permutation test cannot go below p = 0.1
    seed_fields: tuple[str, ...] = ("--seed",)
    evaluation: str | None = None  # result file of the evaluation under the run folder
    evaluate: list[str] = field(default_factory=list)  # its command, RUN standing for the run folder

    def runs(self) -> list[tuple[str, int, list[str], Path]]:
        return grid_runs(
            self.command, self.base, self.arms, self.seeds, OUT / self.name, seed_fields=self.seed_fields
        )

    def evaluation_argv(self, run_dir: Path) -> list[str]:
        return [str(run_dir) + x[3:] if x.startswith("RUN") else x for x in self.evaluate]


# One GPU: LoRA (r 64 on every linear layer) instead of MetaMath's full fine-tune, which needs ~112 GB for the
# weights, gradients and Adam states of 7B parameters before activations; the global batch stays 128.
LLEMMA_ONE_GPU = [
    "--use_peft", "true", "--lora_r", "64", "--lora_alpha", "128",
    "--per_device_train_batch_size", "16", "--gradient_accumulation_steps", "8",
    "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
]  # fmt: skip
# CIFAR-10 from the Hub: its image column is "img", its held-out split "test"
CIFAR10 = [
    "--dataset_name",
    "uoft-cs/cifar10",
    "--image_column",
    "img",
    "--label_column",
    "label",
    "--eval_split",
    "test",
]
STUDIES = [
    Study(
        name="llemma_gsm8k",
        claim="CE + MCE beats CE on GSM8K (Llemma-7B: 72.3 vs 69.2, +3.1 points)",
        command="sft",
        base=LLEMMA_ONE_GPU,
        arms={
            "ce": ["--config", "recipes/llemma-7b/gsm8k/ce.yaml"],
            "mce head 0.1": ["--config", "recipes/llemma-7b/gsm8k/mce.yaml"],
        },
        seed_fields=("--seed", "--data_seed"),
        metric="strict_accuracy",
        baseline="ce",
        claimed=0.031,
        hours=(
            0.6,
            (
                "3 epochs of the 7,473 GSM8K problems (~5.6 M tokens) at 6 x 7e9 FLOPs per token, 40 % of the H200's "
                "~990 dense bf16 TFLOP/s, x 1.33 for activation checkpointing: ~0.2 h; x 2 for LoRA's and the MCE "
                "term's overheads and the 1,319-problem vLLM evaluation"
            ),
        ),
        evaluation="eval/results.json",
        evaluate=[
            "eval",
            "gsm8k",
            "--model",
            "EleutherAI/llemma_7b",
            "--adapter",
            "RUN",
            "--backend",
            "vllm",
            "--dtype",
            "bfloat16",
            "--output_dir",
            "RUN/eval",
            "--overwrite",
            "--no_progress",
        ],
    ),
    Study(
        name="ssl_cifar10",
        claim="Matrix-SSL beats SimCLR on the linear probe (+4.6 points at 100 ImageNet epochs, derived)",
        command="ssl",
        base=[
            "--config",
            "recipes/ssl/resnet50-imagenet-matrix-ssl.yaml",
            "--model_name_or_path",
            "microsoft/resnet-18",
            *CIFAR10,
            "--image_size",
            "96",
            "--num_train_epochs",
            "200",
            "--per_device_train_batch_size",
            "512",
            "--learning_rate",
            "1.0",
            "--warmup_steps",
            "0.05",
            "--save_strategy",
            "no",
            "--report_to",
            "none",
        ],
        arms={"simclr": ["--ssl_method", "simclr"], "matrix_ssl official": []},
        metric="probe_trained",
        baseline="simclr",
        claimed=0.046,
        hours=(
            1.5,
            (
                "ResNet-18 (ImageNet stem, so the 32 x 32 images are resized to 96) at ~0.33 GFLOPs per view: 200 "
                "epochs x 50,000 images x 2 views = 2e7 views, ~2e16 FLOPs with the backward pass, about a minute of "
                "GPU time: the run is bound by decoding and augmenting ~4,000 views/s on 16 CPU cores, ~1.4 h"
            ),
        ),
    ),
    Study(
        name="mae_cifar10",
        claim="M-MAE beats MAE on the linear probe (+3.9 points with a ViT-B on ImageNet, Tan et al., ICML 2024)",
        command="ssl",
        base=[
            "--model_name_or_path",
            "facebook/vit-mae-base",
            "--init_from_config",
            "true",
            "--ssl_method",
            "mmae",
            *CIFAR10,
            "--image_size",
            "224",
            "--num_train_epochs",
            "100",
            "--per_device_train_batch_size",
            "256",
            "--learning_rate",
            "1.5e-4",
            "--weight_decay",
            "0.05",
            "--warmup_steps",
            "0.1",
            "--bf16",
            "true",
            "--dataloader_num_workers",
            "12",
            "--save_strategy",
            "no",
            "--report_to",
            "none",
        ],
        arms={
            "mae": ["--ssl_tcr_weight", "0"],
            "m-mae": ["--ssl_tcr_weight", "0.01", "--ssl_tcr_form", "logdet", "--ssl_tcr_mu", "3"],
        },
        metric="probe_trained",
        baseline="mae",
        claimed=0.039,
        hours=(
            0.5,
            (
                "ViT-B/16 at 224 (the 32 x 32 images resized), 75 % masked: ~8 GFLOPs forward per image (a quarter "
                "of the 196 patches through the encoder, all through the 8-block decoder), x 3 with the backward "
                "pass, 100 epochs x 50,000 images: ~1.2e17 FLOPs, 5 minutes at 40 % of the H200's bf16 peak; bound "
                "by decoding and resizing ~4,000 images/s on 16 CPU cores, ~0.35 h, plus the probes"
            ),
        ),
    ),
    Study(
        name="clip_pretrained",
        claim="matrix-entropy alignment helps CLIP fine-tuning (Song et al.): Fashion-MNIST zero-shot",
        command="clip",
        base=["--zeroshot_dataset", FASHION, "--save_strategy", "no", "--report_to", "none"],
        arms={
            "infonce": ["--config", "recipes/clip/clip-vit-b32-flickr30k-infonce.yaml"],
            "+ alignment": ["--config", "recipes/clip/clip-vit-b32-flickr30k-matrix.yaml"],
        },
        metric="zeroshot_top1",
        baseline="infonce",
        claimed=None,
        hours=(
            0.3,
            (
                "3 epochs of Flickr30k's 31,014 images (x 5 captions) at batch 128, ViT-B/32 + its text tower: "
                "~730 steps at ~2 steps/s, plus the 10,000-image zero-shot"
            ),
        ),
    ),
]
NOT_PLANNED = {
    "COCO detection transfer (+3.3 AP over MoCo v2 / BYOL)": "needs a detection framework (detectron2) that "
    "matrix_llm does not wrap; the linear probe above is the part it can run",
    "ImageNet-1k linear probe at 100 epochs": "~2 days per run on one H200 (recipes/ssl/"
    "resnet50-imagenet-matrix-ssl.yaml, 8 GPUs in the recipe); CIFAR-10 above is the one-GPU stand-in",
}


def plan_lines(studies: Sequence[Study] | None = None) -> list[str]:
    """One line per study (claim, runs, estimated hours and how), the total, and what the plan leaves out."""
    studies = STUDIES if studies is None else studies
    lines = []
    for s in studies:
        n = len(s.arms) * len(s.seeds)
        lines.append(
            f"{s.name}: {s.claim}; {len(s.arms)} arms x {len(s.seeds)} seeds = {n} runs, ~{s.hours[0]:g} h each, "
            f"~{n * s.hours[0]:.1f} h ({s.hours[1]})"
        )
    total = sum(len(s.arms) * len(s.seeds) * s.hours[0] for s in studies)
    lines.append(f"total ~{total:.1f} h on one H200 (estimated)")
    lines += [f"not planned: {claim}: {why}" for claim, why in NOT_PLANNED.items()]
    return lines


def run_study(study: Study, *, dry_run: bool) -> dict | None:
    """Every run of ``study`` (and its evaluation), then its comparison; ``dry_run``: the command lines only."""
    values: dict[str, list[float]] = {}
    for arm, seed, argv, result in study.runs():
        run_dir = result.parent
        steps = [(argv, result)]
        if study.evaluation is not None:
            steps.append((study.evaluation_argv(run_dir), run_dir / study.evaluation))
        for step, produced in steps:
            if dry_run:
                print("matrix-llm " + " ".join(step))
                continue
            data = run_toolkit(step, produced, reuse=True, label=f"{study.name} {arm} seed {seed}")
        if not dry_run:
            metrics = data.get("metrics", data)  # eval gsm8k nests its metrics
            values.setdefault(arm, []).append(float(metrics[study.metric]))
    if dry_run:
        return None
    others = [a for a in study.arms if a != study.baseline]
    comparisons = {
        arm: compare(
            values[arm],
            values[study.baseline],
            paired=False,
            reason=UNPAIRED,
            comparisons=len(others),
            claimed=study.claimed,
        )
        for arm in others
    }
    summary = {"claim": study.claim, "metric": study.metric, "values": values, "comparisons": comparisons}
    (OUT / study.name).mkdir(parents=True, exist_ok=True)
    (OUT / study.name / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for arm, c in comparisons.items():
        print(f"{study.name}: {arm} vs {study.baseline}, {study.metric}: {comparison_text(c)}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="the studies, their runs and estimated hours")
    parser.add_argument("--dry-run", action="store_true", help="print every command line, run nothing")
    parser.add_argument("--only", nargs="+", choices=[s.name for s in STUDIES], help="these studies only")
    args = parser.parse_args(argv)
    studies = [s for s in STUDIES if args.only is None or s.name in args.only]
    if args.list:
        print("\n".join(plan_lines(studies)))
        return 0
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("gpu_plan: no CUDA device; the plan needs one GPU (--dry-run prints it)", file=sys.stderr)
            return 2
    for study in studies:
        run_study(study, dry_run=args.dry_run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

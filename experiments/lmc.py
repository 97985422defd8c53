"""Experiment: are two fine-tunes of one model linearly connected, and what does the matrix entropy do along the
path? (issue "Do the seeds' claims reproduce?", item 7; seed 000), for a small and a large learning rate.

1. A start model: `matrix-llm classify` on the first 2,000 Fashion-MNIST training images (tiny ViT, 10 epochs,
   seed 0).
2. Fine-tunes: `matrix-llm classify --model_name_or_path <start>` on the first 6,000 training images, 3 epochs, at
   learning rate 1e-4 and 3e-3; seeds 1..6 (the seed only changes the data order: the weights come from the start).
3. `matrix-llm analyze lmc A B` for the pairs (1, 2), (3, 4), (5, 6) of each learning rate: test loss, accuracy
   and last-layer matrix entropy along ω θ_A + (1-ω) θ_B on 1,000 test images, and the loss / accuracy barriers.

    .venv/bin/python experiments/lmc.py                 (about 12 minutes on 2 CPU cores; writes docs/experiments/lmc.md)
    .venv/bin/python experiments/lmc.py --smoke OUT     (tiny, for tests/test_experiments.py)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

from harness import (  # noqa: E402
    FASHION,
    experiment_args,
    mean_std,
    pyplot,
    read_run_json,
    run_grid,
    run_toolkit,
    save_summary,
    study_folder,
    write_doc,
)

DATA = [
    "--config",
    "classify/digits.yaml",
    "--dataset_name",
    FASHION,
    "--image_size",
    "28",
    "--max_eval_samples",
    "1000",
    "--eval_strategy",
    "no",
    "--logging_steps",
    "50",
]
START = ["--max_train_samples", "2000", "--num_train_epochs", "10"]
TUNE = ["--max_train_samples", "6000", "--num_train_epochs", "3", "--warmup_steps", "0"]
RATES = {"lr 1e-4": ["--learning_rate", "1e-4"], "lr 3e-3": ["--learning_rate", "3e-3"]}
SMOKE = [
    "--max_train_samples",
    "200",
    "--max_eval_samples",
    "100",
    "--num_train_epochs",
    "1",
    "--tiny_hidden_size",
    "32",
]


def lmc(a: Path, b: Path, out: Path, num_samples: int, reuse: bool) -> dict:
    """``matrix-llm analyze lmc A B`` (its ``lmc.json``)."""
    argv = [
        "analyze",
        "lmc",
        str(a),
        str(b),
        "--data",
        FASHION,
        "--num_samples",
        str(num_samples),
        "--batch_size",
        "250",
        "--output_dir",
        str(out),
    ]
    return run_toolkit(argv, out / "lmc.json", reuse=reuse, label=f"analyze lmc {a.name} {b.name}")


def _stat(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.4f} ± {std:.4f} ({', '.join(f'{v:.3f}' for v in values)})"


def main(argv: list[str] | None = None) -> int:
    args = experiment_args(__doc__.splitlines()[0], argv)
    out = study_folder("lmc", args)
    smoke = SMOKE if args.smoke else []
    pairs = [(1, 2)] if args.smoke else [(1, 2), (3, 4), (5, 6)]
    run_grid(
        "classify",
        [*DATA, *START, *smoke],
        {"start": []},
        [0],
        out,
        reuse=args.reuse,
        results_file="all_results.json",
    )
    start = out / "start" / "seed0"
    seeds = [s for pair in pairs for s in pair]
    tuned = run_grid(
        "classify",
        [*DATA, *TUNE, *smoke, "--model_name_or_path", str(start)],
        RATES,
        seeds,
        out,
        reuse=args.reuse,
        results_file="all_results.json",
    )
    paths = {
        rate: [
            lmc(
                out / rate / f"seed{a}",
                out / rate / f"seed{b}",
                out / "lmc" / rate / f"pair{a}{b}",
                100 if args.smoke else 1000,
                args.reuse,
            )
            for a, b in pairs
        ]
        for rate in RATES
    }
    summary = {
        rate: {
            "loss_barrier": [p["loss_barrier"] for p in runs],
            "accuracy_barrier": [p["accuracy_barrier"] for p in runs],
            "endpoint_accuracy": [r["eval_accuracy"] for r in tuned[rate].values()],
            "entropy_mid_minus_ends": [_mid_minus_ends(p["path"]) for p in runs],
        }
        for rate, runs in paths.items()
    }
    docs = save_summary(out, summary, bool(args.smoke), REPO)
    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for j, (rate, runs) in enumerate(paths.items()):
        for k, p in enumerate(runs):
            omega = [q["omega"] for q in p["path"]]
            for ax, key in zip(axes, ("accuracy", "loss", "matrix_entropy"), strict=True):
                ax.plot(
                    omega,
                    [q[key] for q in p["path"]],
                    "o-",
                    color=f"C{j}",
                    markersize=3,
                    alpha=0.8,
                    label=rate if k == 0 else None,
                )
    for ax, title in zip(axes, ("test accuracy", "test loss", "last-layer matrix entropy"), strict=True):
        ax.set_xlabel("ω (θ = ω θ_A + (1-ω) θ_B)")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.suptitle("Fashion-MNIST, tiny ViT: the straight line between two fine-tunes of one start model")
    fig.tight_layout()
    fig.savefig(docs / "lmc.png", dpi=110)
    plt.close(fig)
    rows = [
        "| learning rate | end-point accuracy | accuracy barrier | loss barrier | entropy: midpoint - mean of ends |",
        "|---|---|---|---|---|",
    ]
    rows += [
        f"| {rate} | "
        + " | ".join(
            _stat(s[k])
            for k in ("endpoint_accuracy", "accuracy_barrier", "loss_barrier", "entropy_mid_minus_ends")
        )
        + " |"
        for rate, s in summary.items()
    ]
    print("\n".join(rows))
    if args.smoke:
        return 0
    small, large = (summary[r] for r in RATES)
    start_accuracy = read_run_json(start / "all_results.json")["eval_accuracy"]
    barrier = {r: statistics.fmean(s["accuracy_barrier"]) for r, s in summary.items()}
    connected = [r for r, b in barrier.items() if b < 0.01]
    entropy = {r: statistics.fmean(s["entropy_mid_minus_ends"]) for r, s in summary.items()}
    write_doc(
        docs / "lmc.md",
        title="Linear mode connectivity of two fine-tunes, and the matrix entropy along the path",
        question=(
            "Two fine-tunes of one model that differ only in their data order: is the straight line between "
            "them free of a loss / accuracy barrier (linear mode connectivity), does that depend on the "
            "learning rate, and what does the matrix entropy of the last layer's features do along it "
            "(seed 000)?"
        ),
        setup=(
            "Start: `matrix-llm classify --config classify/digits.yaml` on the first 2,000 Fashion-MNIST training "
            "images (28 x 28, random-init tiny ViT, 10 epochs, seed 0). Fine-tunes: `--model_name_or_path <start>` "
            "on the first 6,000 training images, 3 epochs, AdamW with cosine decay from learning rate 1e-4 or "
            "3e-3, seeds 1-6 (data order). `matrix-llm analyze lmc A B --data fashion-mnist --num_samples 1000` "
            "for the pairs (1, 2), (3, 4), (5, 6) of each rate: 11 points ω = 0, 0.1, ..., 1 on 1,000 test images. "
            "Barrier: the largest drop of accuracy (rise of loss) below (above) the straight line between the "
            "end points."
        ),
        result=rows,
        figure="lmc.png",
        result_note="mean ± sample std over the pairs (end points: over the 6 fine-tunes), per-pair values in brackets",
        answer=(
            f"From the start model's test accuracy {start_accuracy:.3f}, the fine-tunes reach "
            f"{statistics.fmean(small['endpoint_accuracy']):.3f} (lr 1e-4: they stay close to it) and "
            f"{statistics.fmean(large['endpoint_accuracy']):.3f} (lr 3e-3). Accuracy barrier at lr 1e-4: {statistics.fmean(small['accuracy_barrier']):.4f}, at lr 3e-3: "
            f"{statistics.fmean(large['accuracy_barrier']):.4f} (mean over 3 pairs). Linearly connected (barrier "
            f"< 1 point): {', '.join(connected) or 'neither'}. Matrix entropy at the midpoint minus the mean of "
            f"the end points: {entropy['lr 1e-4']:+.4f} (lr 1e-4), {entropy['lr 3e-3']:+.4f} (lr 3e-3): "
            + (
                "the entropy rises between the end points."
                if min(entropy.values()) > 0
                else "the entropy falls between the end points."
                if max(entropy.values()) < 0
                else "the sign depends on the learning rate."
            )
            + (
                " Verdict: linearly connected at the small learning rate (little moved from the start), a barrier "
                "at the large one, where the last layer's matrix entropy dips along the path."
                if connected == ["lr 1e-4"] and entropy["lr 3e-3"] < 0
                else f" Verdict: linearly connected at {', '.join(connected) or 'neither rate'}."
            )
        ),
        change=(
            "A pretrained Hub backbone (the setting where LMC of fine-tunes is reported), longer fine-tuning, a "
            "learning-rate sweep rather than two values, more pairs."
        ),
        command=".venv/bin/python experiments/lmc.py",
    )
    return 0


def _mid_minus_ends(path: list[dict]) -> float:
    """Matrix entropy at ω = 0.5 (the point nearest it) minus the mean of the two end points'."""
    mid = min(path, key=lambda q: abs(q["omega"] - 0.5))["matrix_entropy"]
    return mid - (path[0]["matrix_entropy"] + path[-1]["matrix_entropy"]) / 2


if __name__ == "__main__":
    raise SystemExit(main())

"""Experiment: zero-shot on Fashion-MNIST classes never seen in training, InfoNCE vs InfoNCE + matrix-entropy
alignment (issue "Do the seeds' claims reproduce?", item 6: "... and on Fashion-MNIST zero-shot").

Offline stand-in for a pretrained CLIP: `matrix-llm clip --config clip/fashion-unseen.yaml`, a random-init ViT
trained to meet a frozen pretrained text tower (all-MiniLM-L6-v2, through its projection) on Fashion-MNIST
captioned by class, with shirts and ankle boots left out of training. Only the pretrained text tower can place
the two unseen class names. Arms: InfoNCE alone, + the alignment at 0.1 from the first step (the few-classes
regime: 8 classes, about 16 images per class in a batch of 128), and InfoNCE with a caption's other images left
out of its negatives (`masked`, the control of docs/experiments/clip_few_classes.md); seeds 0-2. Measured on
1,000 test images among all 10 class names: per-class top-1 on the seen and the unseen classes, their harmonic
mean, the unseen classes among themselves, and (`matrix-llm eval zeroshot --unseen` on each saved run) the
seen-unseen curve of calibrated stacking with its area (AUSUC) and its best harmonic mean.

    .venv/bin/python experiments/clip_fashion.py               (about 20 minutes on 2 CPU cores; writes docs/experiments/clip_fashion.md)
    .venv/bin/python experiments/clip_fashion.py --smoke OUT   (tiny, for tests/test_experiments.py)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

from comparisons import UNPAIRED, compare, comparison_text  # noqa: E402
from harness import (  # noqa: E402
    FASHION,
    bar_panel,
    curve,
    experiment_args,
    log_history,
    markdown_table,
    mean_std,
    pyplot,
    run_grid,
    run_toolkit,
    save_summary,
    seed_runs,
    study_folder,
    summarize,
    write_doc,
)

ARMS = {
    "infonce": [],
    "+ alignment": ["--clip_alignment_weight", "0.1"],
    "infonce, masked": ["--clip_mask_same_captions", "true"],
}
METRICS = [
    "zeroshot_top1_seen",
    "zeroshot_top1_unseen",
    "zeroshot_top1_harmonic",
    "zeroshot_top1_unseen_only",
    "zeroshot_top1",
    "zeroshot_ausuc",
    "best_harmonic",
]
UNSEEN = ["shirt", "ankle boot"]  # the recipe's exclude_classes
TITLES = {
    "zeroshot_top1_seen": "seen classes, among all 10 (chance 0.1)",
    "zeroshot_top1_unseen": "unseen classes, among all 10 (chance 0.1)",
    "zeroshot_top1_unseen_only": "unseen classes, between the 2 (chance 0.5)",
}
SMOKE = [
    "--max_train_samples",
    "128",
    "--max_eval_samples",
    "64",
    "--tiny_hidden_size",
    "32",
    "--projection_dim",
    "16",
    "--num_train_epochs",
    "1",
    "--per_device_train_batch_size",
    "32",
]


def seen_unseen(run: Path, own: dict, reuse: bool) -> dict:
    """``matrix-llm eval zeroshot --unseen ...`` of a saved run on the images it measured (the recipe's templates
    are the command's default); its zero-shot top-1 must be the run's own (``own``: the run's results)."""
    argv = [
        "eval",
        "zeroshot",
        "--model",
        str(run),
        "--data",
        FASHION,
        "--unseen",
        *UNSEEN,
        "--num_samples",
        str(own["zeroshot_images"]),
    ]
    result = run_toolkit(
        argv, run / "eval" / "zeroshot" / "results.json", reuse=reuse, label=f"eval zeroshot {run}"
    )
    if result["zeroshot_top1"] != own["zeroshot_top1"]:
        raise RuntimeError(
            f"{run}: eval zeroshot gives top-1 {result['zeroshot_top1']}, the run {own['zeroshot_top1']}"
        )
    return result


def best_harmonic(curve_points: dict) -> float:
    """The largest harmonic mean of seen and unseen top-1 on the curve (calibration chosen on the test images)."""
    pairs = zip(curve_points["unseen"], curve_points["seen"], strict=True)
    return max((2 * u * s / (u + s) if u + s else 0.0) for u, s in pairs)


def figure(out: Path, path: Path, summary: dict, curves: dict) -> None:
    """Three accuracies per arm, the seen-unseen curves, and the image features' matrix entropy over training."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 5, figsize=(21, 3.8))
    for ax, (metric, title) in zip(axes, TITLES.items(), strict=False):
        bar_panel(ax, summary, metric, title)
    ax = axes[3]
    for j, arm in enumerate(summary["arms"]):
        for seed, result in curves[arm].items():
            points = result["seen_unseen_curve"]
            ax.plot(
                points["unseen"],
                points["seen"],
                "-",
                color=f"C{j}",
                alpha=0.7,
                label=arm if seed == 0 else None,
            )
            ax.plot(
                result["zeroshot_top1_unseen"], result["zeroshot_top1_seen"], "o", color=f"C{j}", markersize=4
            )
    ax.set_xlabel("unseen classes' top-1 among all")
    ax.set_ylabel("seen classes' top-1 among all")
    ax.set_title("calibrated stacking (dots: no calibration)")
    ax.legend(fontsize=7)
    ax = axes[4]
    for j, arm in enumerate(summary["arms"]):
        for run in seed_runs(out / arm):  # on disk or in the archive
            steps, values = curve(log_history(run), "image_entropy")
            ax.plot(steps, values, "-", color=f"C{j}", alpha=0.7, label=arm if run.name == "seed0" else None)
    ax.set_xlabel("step")
    ax.set_ylabel("image matrix entropy")
    ax.set_title("image features over training")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = experiment_args(__doc__.splitlines()[0], argv)
    out = study_folder("clip_fashion", args)
    seeds = [0] if args.smoke else [0, 1, 2]
    base = [
        "--config",
        "clip/fashion-unseen.yaml",
        "--dataset_name",
        FASHION,
        "--zeroshot_dataset",
        FASHION,
        *(SMOKE if args.smoke else []),
    ]
    results = run_grid("clip", base, ARMS, seeds, out, reuse=args.reuse)
    curves = {
        arm: {seed: seen_unseen(out / arm / f"seed{seed}", results[arm][seed], args.reuse) for seed in seeds}
        for arm in ARMS
    }
    for arm, runs in curves.items():
        for seed, result in runs.items():
            results[arm][seed].update(
                zeroshot_ausuc=result["zeroshot_ausuc"],
                best_harmonic=best_harmonic(result["seen_unseen_curve"]),
            )
    summary = summarize(results, METRICS, baseline="infonce")
    docs = save_summary(out, summary, bool(args.smoke), REPO)
    figure(out, docs / "clip_fashion.png", summary, curves)
    table = markdown_table(summary, METRICS)
    print("\n".join(table))
    if args.smoke:
        return 0
    arms = summary["arms"]

    def mean(arm: str, metric: str) -> str:
        m, s = mean_std(arms[arm][metric]["values"])
        return f"{m:.3f} ± {s:.3f}"

    def entropy(arm: str) -> str:  # the image features' matrix entropy at the last logged step
        m, sd = mean_std(
            [curve(log_history(out / arm / f"seed{seed}"), "image_entropy")[1][-1] for seed in seeds]
        )
        return f"{m:.2f} ± {sd:.2f}"

    def chord(arm: str) -> str:  # area under the straight line between the curve's ends (trading 1 for 1)
        ends = [
            (c["seen_unseen_curve"]["seen"][0], c["seen_unseen_curve"]["unseen"][-1])
            for c in curves[arm].values()
        ]
        return f"{statistics.fmean(s * u / 2 for s, u in ends):.3f}"

    def against(arm: str, metric: str) -> dict:  # InfoNCE, unpaired: float round-off moves single seeds
        return compare(
            arms[arm][metric]["values"], arms["infonce"][metric]["values"], paired=False, reason=UNPAIRED
        )

    def unpaired(arm: str, metric: str) -> str:
        return "unpaired " + comparison_text(against(arm, metric))

    accuracy = [against("+ alignment", f"zeroshot_top1_{m}") for m in ("seen", "unseen", "unseen_only")]
    spread = (
        "every one of its accuracy differences is within the seed spread (each CI includes 0)"
        if all(c["ci95"][0] <= 0 <= c["ci95"][1] for c in accuracy)
        else "not every accuracy difference is within the seed spread (see the CIs above)"
    )

    write_doc(
        docs / "clip_fashion.md",
        title="Zero-shot on unseen Fashion-MNIST classes: InfoNCE vs InfoNCE + matrix-entropy alignment",
        question=(
            "The seed says the cross-modal matrix-entropy alignment (Song et al., arXiv 2409.16767) helps "
            "CLIP-style training, most with few classes. On real images captioned by class, with two classes "
            "never seen in training, does adding it to InfoNCE improve zero-shot classification of the "
            "unseen classes (and keep the seen ones)?"
        ),
        setup=(
            "`matrix-llm clip --config clip/fashion-unseen.yaml` (the recipe: a random-init ViT, hidden 128 x 2 "
            "layers, on 28 x 28 Fashion-MNIST images, and the pretrained all-MiniLM-L6-v2 text tower, frozen, "
            'through a trained projection to 128 dimensions; captions "a photo of a {}.", "a picture of a '
            '{}.", "a {}." with the class name, one per image per epoch; shirts and ankle boots left out of '
            "training, so the first 12,000 of the other 8 classes' training images; 3 epochs, batch 128, about "
            "16 images per class in a batch; 2 CPU cores), seeds 0-2. Arms: InfoNCE alone, + the alignment at "
            "0.1 from the first step (`--clip_alignment_weight 0.1`), and InfoNCE with a caption's other "
            "images left out of its negatives (`--clip_mask_same_captions true`). Zero-shot: the first 1,000 "
            "test images among all 10 class names with the three templates (prompt ensembling); generalised "
            "zero-shot learning's numbers (Xian et al., 2018): per-class top-1 averaged over the 8 seen and "
            "the 2 unseen classes, their harmonic mean, and the 2 unseen classes against each other only; "
            'then `matrix-llm eval zeroshot --unseen shirt "ankle boot"` on each saved run: the seen-unseen '
            "curve of calibrated stacking, its area (AUSUC) and its best harmonic mean. "
            "Why shirts and ankle boots: each has a seen class whose name lies near it in the text tower "
            "(T-shirt, sneaker), so the pretrained text side can carry them; chosen before any run."
        ),
        result=table,
        figure="clip_fashion.png",
        answer=(
            f"Seen classes: InfoNCE {mean('infonce', 'zeroshot_top1_seen')}, + alignment "
            f"{mean('+ alignment', 'zeroshot_top1_seen')} ({unpaired('+ alignment', 'zeroshot_top1_seen')}). "
            f"Unseen classes among all 10: InfoNCE {mean('infonce', 'zeroshot_top1_unseen')}, + alignment "
            f"{mean('+ alignment', 'zeroshot_top1_unseen')} ("
            f"{unpaired('+ alignment', 'zeroshot_top1_unseen')}); between the two unseen classes only: InfoNCE "
            f"{mean('infonce', 'zeroshot_top1_unseen_only')}, + alignment "
            f"{mean('+ alignment', 'zeroshot_top1_unseen_only')} ("
            f"{unpaired('+ alignment', 'zeroshot_top1_unseen_only')}); masked InfoNCE: seen "
            f"{mean('infonce, masked', 'zeroshot_top1_seen')}, unseen "
            f"{mean('infonce, masked', 'zeroshot_top1_unseen')}, unseen only "
            f"{mean('infonce, masked', 'zeroshot_top1_unseen_only')}. The frozen pretrained text tower does carry "
            "the unseen names: between shirts and ankle boots the image tower, which never saw either, is "
            "nearly always right. Among all 10 names the unseen classes fall to about chance in every arm "
            "(generalised zero-shot learning's known bias to the seen "
            "classes). Calibration does not rescue them: calibrated stacking (Chao et al., 2016: a constant "
            "subtracted from the seen classes' scores, every value of it) traces a seen-unseen curve close to "
            "the straight line between its ends, whose area (AUSUC) is InfoNCE "
            f"{mean('infonce', 'zeroshot_ausuc')}, + alignment {mean('+ alignment', 'zeroshot_ausuc')} ("
            f"{unpaired('+ alignment', 'zeroshot_ausuc')}), against {chord('infonce')} and "
            f"{chord('+ alignment')} under that line: each point of unseen accuracy gained costs about one point of "
            "seen accuracy, so the image tower barely tells an unseen class's image from a seen one, although "
            "between the two unseen names it is nearly always right. The curve's best harmonic mean is "
            f"{mean('infonce', 'best_harmonic')} and {mean('+ alignment', 'best_harmonic')} ("
            f"{unpaired('+ alignment', 'best_harmonic')}; the constant chosen on the test images themselves, so an "
            f"upper bound) against {mean('infonce', 'zeroshot_top1_harmonic')} and "
            f"{mean('+ alignment', 'zeroshot_top1_harmonic')} uncalibrated. "
            f"For the alignment {spread}; what it does change is the image features' matrix entropy at the end: "
            f"{entropy('+ alignment')} with it, "
            f"{entropy('infonce')} without ({entropy('infonce, masked')} masked). Masked InfoNCE changes "
            "nothing measurable. Verdict: no measurable effect of the alignment at this scale (not reproduced)."
        ),
        change=(
            "A pretrained CLIP fine-tuned with each loss (the Hub: `eval zeroshot --model "
            "openai/clip-vit-base-patch32 --data ../shared/data/fashion-mnist` measures the starting point), "
            "other held-out classes, a trained text tower (LoRA), more seeds."
        ),
        command=".venv/bin/python experiments/clip_fashion.py",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

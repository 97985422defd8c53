"""Experiment: does the cross-modal matrix-entropy alignment help CLIP-style training? (issue "Do the seeds' claims
reproduce?", item 6: InfoNCE vs InfoNCE + matrix alignment on the synthetic captions.)

Two arms of `matrix-llm clip --config demo/clip.yaml`, seeds 0, 1, 2 (the seed changes the initialisation, the
data order and the rendered scenes): InfoNCE alone (`--clip_alignment_weight 0`) and InfoNCE + the alignment at
weight 0.1 from step 125 (the demo recipe). Measured: zero-shot top-1 / top-5 over the 24 colour-shape names on
scenes whose compositions never appear in training, and retrieval R@1 on fresh scenes. Also drawn: the learned
temperature against the image features' matrix entropy over training, for every run.

    .venv/bin/python experiments/clip_matrix.py                 (about 10 minutes on 2 CPU cores; writes docs/experiments/clip_matrix.md)
    .venv/bin/python experiments/clip_matrix.py --smoke OUT     (tiny, for tests/test_experiments.py)
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

from harness import (  # noqa: E402
    CLIP_TINY_DUAL,
    bar_panel,
    experiment_args,
    log_history,
    markdown_table,
    pyplot,
    run_grid,
    save_summary,
    seed_runs,
    study_folder,
    summarize,
    write_doc,
)

ARMS = {"infonce": ["--clip_alignment_weight", "0"], "infonce + alignment": []}
METRICS = ["zeroshot_top1", "zeroshot_top5", "image_to_text_R@1", "text_to_image_R@1"]
SMOKE = [
    "--max_train_samples",
    "96",
    "--max_eval_samples",
    "48",
    "--tiny_hidden_size",
    "32",
    "--num_train_epochs",
    "1",
    "--clip_matrix_start_step",
    "1",
    "--per_device_train_batch_size",
    "32",
]


# the alignment arm's per-seed numbers in the first run of this command (commit 2722361); the InfoNCE arm's reproduce
FIRST_RUN = {"zeroshot_top1": [0.171, 0.031, 0.051], "image_to_text_R@1": [0.017, 0.007, 0.021]}
CHANCE = {
    "zeroshot_top1": " (chance 1/24)",
    "zeroshot_top5": " (chance 5/24)",
    "image_to_text_R@1": " (chance 1/1000)",
}


def figure(
    out: Path, path: Path, summary: dict, panels: tuple[str, str] = ("zeroshot_top1", "image_to_text_R@1")
) -> None:
    """Two metrics per arm, and the learned temperature against the image features' matrix entropy of every run."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, metric in zip(axes, panels, strict=False):
        bar_panel(ax, summary, metric, metric + CHANCE[metric])
    ax = axes[2]
    for j, arm in enumerate(summary["arms"]):
        for run in seed_runs(out / arm):
            history = log_history(run)
            points = [
                (h["logit_scale"], h["image_entropy"])
                for h in history
                if "image_entropy" in h and "logit_scale" in h and "eval_loss" not in h
            ]
            if points:
                ax.plot(
                    *zip(*points, strict=True),
                    "-",
                    color=f"C{j}",
                    alpha=0.7,
                    label=arm if run.name == "seed0" else None,
                )
    ax.set_xlabel("logit scale (log 1/temperature)")
    ax.set_ylabel("image matrix entropy")
    ax.set_title("temperature vs feature entropy, over training")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = experiment_args(__doc__.splitlines()[0], argv)
    out = study_folder("clip_matrix", args)
    seeds = [0, 1] if args.smoke else [0, 1, 2]
    base = ["--config", "demo/clip.yaml", *CLIP_TINY_DUAL, *(SMOKE if args.smoke else [])]
    results = run_grid("clip", base, ARMS, seeds, out, reuse=args.reuse)
    summary = summarize(results, METRICS, baseline="infonce")
    docs = save_summary(out, summary, bool(args.smoke), REPO)
    figure(out, docs / "clip_matrix.png", summary)
    table = markdown_table(summary, METRICS)
    print("\n".join(table))
    if args.smoke:
        return 0
    paired = summary["paired"]["infonce + alignment"]
    write_doc(
        docs / "clip_matrix.md",
        title="CLIP-style training: InfoNCE vs InfoNCE + matrix-entropy alignment",
        question=(
            "Does adding the cross-modal matrix-entropy alignment (Song et al., arXiv 2409.16767; "
            "docs/formulations.md) to CLIP's InfoNCE improve zero-shot classification of unseen compositions and "
            "retrieval, as the seed suggests?"
        ),
        setup=(
            "Since 2026-12-06 the demo recipe trains a pretrained MiniLM text tower; these runs keep the dual encoder "
            "they were measured with (`--model_name_or_path tiny-dual --freeze_text_tower false`, added by the "
            "script). Rerun on 2026-12-07, after the tiny towers' images started to go through a saved image "
            "processor (PIL's uint8 rounding of the resize): every zero-shot value came out as before, the "
            "image-to-text R@1 of single seeds moved by up to 0.01 (the paired difference was -0.004 ± 0.008). "
            "`matrix-llm clip --config demo/clip.yaml` (random-init ViT + BERT dual encoder, hidden 64, "
            "4,000 rendered captioned scenes, 8 epochs, batch 128, 2 CPU cores), seeds 0, 1, 2; the alignment arm is "
            "the recipe as shipped (weight 0.1 from step 125 of 256: from step 0 it collapsed both towers at every "
            "weight tried, see docs/formulations.md), the baseline adds `--clip_alignment_weight 0`. Zero-shot: 1,000 "
            "scenes of the 6 held-out colour-shape compositions, classified among all 24 colour-shape names (chance "
            "0.042); retrieval: 1,000 fresh scenes of the training compositions (chance R@1 0.001; captions repeat, "
            "which caps R@1)."
        ),
        result=table,
        figure="clip_matrix.png",
        answer=(
            f"No gain from the matrix term at this scale. Zero-shot top-1, paired difference "
            f"{paired['zeroshot_top1']['mean']:+.3f} ± {paired['zeroshot_top1']['std']:.3f}; image-to-text R@1 "
            f"{paired['image_to_text_R@1']['mean']:+.3f} ± {paired['image_to_text_R@1']['std']:.3f}, lower in "
            f"{sum(d < 0 for d in paired['image_to_text_R@1']['values'])} of "
            f"{len(paired['image_to_text_R@1']['values'])} seeds. Zero-shot accuracy on the held-out compositions "
            "depends far more on the seed than on the loss (InfoNCE alone: "
            f"{', '.join(f'{v:.3f}' for v in summary['arms']['infonce']['zeroshot_top1']['values'])}). "
            "Verdict: not reproduced at this scale (inconclusive for the seed's setting, pretrained CLIP). "
            "Against the first run of this command (commit 2722361) the InfoNCE arm reproduces exactly; the "
            "alignment arm moved (zero-shot top-1 then "
            f"{', '.join(f'{v:.3f}' for v in FIRST_RUN['zeroshot_top1'])}, image-to-text R@1 then "
            f"{', '.join(f'{v:.3f}' for v in FIRST_RUN['image_to_text_R@1'])}) after changes in how the matrix "
            "term's gradient is computed that agree to float32 round-off (tests/info): at this scale single "
            "seeds are that sensitive (docs/experiments/clip_few_classes.md measures it)."
        ),
        change=(
            "Pretrained towers (the seed's setting: the metric comes from trained CLIP models), real captions "
            "with several per image, more seeds and the few-classes regime the seed points to; none of these fit "
            "this CPU budget. Trained from the first step, the term hurts (collapse), so any benefit would be as "
            "a late-stage or fine-tuning term."
        ),
        command=".venv/bin/python experiments/clip_matrix.py",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

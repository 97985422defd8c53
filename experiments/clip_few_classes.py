"""Experiment: the few-classes regime of the matrix-entropy alignment (issue "Do the seeds' claims reproduce?",
item 6: "the few-classes regime where the seed says matrix alignment helps most").

The same scenes and dual encoder as experiments/clip_matrix.py, but captioned by class only (`scenes-classes`:
"a red circle"): 18 distinct training captions, so a batch of 128 holds about 7 images per caption and the
alignment takes its several-images-per-class form (the entropy of [the class's images ; its caption]), the form
Song et al. define it in. Arms: InfoNCE alone, + the alignment at 0.1 from step 125 (the demo recipe: "+ align
from 125"), + the alignment at 0.1 from the first step ("+ align from 0"), and InfoNCE alone / + the alignment from
the first step with a caption's other images left out of InfoNCE's negatives (`--clip_mask_same_captions true`:
", masked"), a control for "the alignment only undoes InfoNCE's same-caption negatives"; seeds 0-5. Measured:
zero-shot top-1 / top-5 over the 24 colour-shape names ("a {}") on scenes of the 6 held-out compositions.

    .venv/bin/python experiments/clip_few_classes.py               (about 60 minutes on 2 CPU cores; writes
                                                          docs/experiments/clip_few_classes.md)
    .venv/bin/python experiments/clip_few_classes.py --smoke OUT   (tiny, for tests/test_experiments.py)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

from clip_matrix import SMOKE, figure  # noqa: E402
from comparisons import paired_test  # noqa: E402
from harness import (  # noqa: E402
    CLIP_TINY_DUAL,
    experiment_args,
    image_collapsed,
    markdown_table,
    run_grid,
    save_summary,
    study_folder,
    summarize,
    write_doc,
)

MASKED = ["--clip_mask_same_captions", "true"]
ARMS = {
    "infonce": ["--clip_alignment_weight", "0"],
    "infonce, masked": ["--clip_alignment_weight", "0", *MASKED],
    "+ align from 125": [],
    "+ align from 0": ["--clip_matrix_start_step", "0"],
    "+ align from 0, masked": ["--clip_matrix_start_step", "0", *MASKED],
}
METRICS = ["zeroshot_top1", "zeroshot_top5", "image_to_text_R@1"]
DATA = ["--dataset_name", "scenes-classes", "--zeroshot_dataset", "scenes-classes"]
# zero-shot top-1 per seed of the previous run of this command (commit 5fd97d1, docs/experiments/clip_few_classes.md
# there), whose gradients differ from today's by float32 round-off in the row normalisation (~1e-7 relative)
PREVIOUS = {
    "+ align from 125": [0.072, 0.077, 0.261, 0.000, 0.000, 0.178],
    "+ align from 0": [0.163, 0.281, 0.158, 0.146, 0.083, 0.293],
}


def main(argv: list[str] | None = None) -> int:
    args = experiment_args(__doc__.splitlines()[0], argv)
    out = study_folder("clip_few_classes", args)
    seeds = [0, 1] if args.smoke else list(range(6))  # 6 seeds: zero-shot swings by seed far more than by arm
    base = ["--config", "demo/clip.yaml", *CLIP_TINY_DUAL, *DATA, *(SMOKE if args.smoke else [])]
    results = run_grid("clip", base, ARMS, seeds, out, reuse=args.reuse)
    summary = summarize(results, METRICS, baseline="infonce")
    docs = save_summary(out, summary, bool(args.smoke), REPO)
    figure(out, docs / "clip_few_classes.png", summary, panels=("zeroshot_top1", "zeroshot_top5"))
    table = markdown_table(summary, METRICS)
    print("\n".join(table))
    if args.smoke:
        return 0
    chance, top1 = 1 / 24, {arm: v["zeroshot_top1"]["values"] for arm, v in summary["arms"].items()}

    def paired(arm: str, baseline: str = "infonce", comparisons: int = 1) -> str:
        """Mean ± std of the per-seed differences, the paired t test's two-sided p (Bonferroni-corrected for
        ``comparisons`` arms against one baseline)."""
        return paired_test([a - b for a, b in zip(top1[arm], top1[baseline], strict=True)], comparisons)

    def moved(arm: str) -> str:
        change = [abs(a - b) for a, b in zip(top1[arm], PREVIOUS[arm], strict=True)]
        return (
            f"`{arm}` {statistics.mean(PREVIOUS[arm]):.3f} then, {statistics.mean(top1[arm]):.3f} now, seeds "
            f"moving by up to {max(change):.2f}"
        )

    def count(arm: str, test) -> int:
        return sum(test(v) for v in summary["arms"][arm]["zeroshot_top1"]["values"])

    def collapsed(arm: str) -> int:
        return sum(image_collapsed(out / arm / f"seed{seed}") for seed in seeds)

    write_doc(
        docs / "clip_few_classes.md",
        title="CLIP-style training with few classes: InfoNCE vs InfoNCE + matrix-entropy alignment",
        question=(
            "The seed says the cross-modal matrix-entropy alignment (Song et al., arXiv 2409.16767) helps most "
            "when there are few classes. With captions that name only the class, so that a batch holds several "
            "images per caption, does adding it to InfoNCE improve zero-shot classification of unseen "
            "compositions, and is a gain more than InfoNCE no longer counting a caption's other images as "
            "negatives?"
        ),
        setup=(
            "Since 2026-12-06 the demo recipe trains a pretrained MiniLM text tower; these runs keep the dual encoder they were measured with (`--model_name_or_path tiny-dual --freeze_text_tower false`, added by the script), and the tiny towers' images now go through a saved image processor (PIL's uint8 rounding of the resize), so a rerun moves single seeds by the float-level sensitivity described here. "
            "`matrix-llm clip --config demo/clip.yaml --dataset_name scenes-classes --zeroshot_dataset "
            "scenes-classes` (random-init ViT + BERT dual encoder, hidden 64, 4,000 rendered scenes captioned "
            '"a red circle": 18 training classes, about 7 images per caption in a batch of 128; 8 epochs, 2 CPU '
            "cores), seeds 0-5 (zero-shot accuracy swings by seed). Arms: InfoNCE alone (`--clip_alignment_weight 0`), + the alignment at 0.1 "
            "from step 125 of 256 (the recipe as shipped), + the alignment at 0.1 from the first step "
            "(`--clip_matrix_start_step 0`). InfoNCE treats the other images of the same caption in a batch as "
            "negatives (as CLIP and open_clip do); the two `masked` arms (InfoNCE alone, and + the alignment from "
            "the first step) leave them out of its softmaxes (`--clip_mask_same_captions true`). Zero-shot: 1,000 scenes of the 6 held-out colour-shape "
            'compositions, classified among all 24 names with the template "a {}" (chance 0.042); retrieval '
            "R@1 on 1,000 fresh scenes is capped by the repeated captions (about 1/55) and reported only for "
            "completeness."
        ),
        result=table,
        figure="clip_few_classes.png",
        answer=(
            f"Weakly yes at this scale: trained from the first step, the alignment raises zero-shot top-1 on the "
            f"unseen compositions by {paired('+ align from 0', comparisons=len(ARMS) - 1)}. "
            f"Its clearer effect is on collapse of the image features (matrix entropy below 0.1 at the "
            f"end): in {collapsed('+ align from 0')} of {len(seeds)} seeds with it, {collapsed('infonce')} with "
            f"InfoNCE alone; it is above chance in {count('+ align from 0', lambda v: v > chance)} of "
            f"{len(seeds)} seeds, InfoNCE alone in {count('infonce', lambda v: v > chance)}. Removing the "
            f"same-caption negatives does not do the same: masked InfoNCE collapses in "
            f"{collapsed('infonce, masked')} of {len(seeds)} seeds (zero-shot {paired('infonce, masked')} vs "
            f"InfoNCE), and the alignment on top of it keeps collapse to {collapsed('+ align from 0, masked')} "
            f"of {len(seeds)} (zero-shot {paired('+ align from 0, masked', 'infonce, masked')} vs masked InfoNCE). Started at step "
            f"125 the alignment changes little: {paired('+ align from 125')}. Single seeds are chaotic here: the "
            f"previous run of this command differed from this one only by float32 round-off in the row "
            f"normalisation's gradient, and gave {moved('+ align from 0')} ({moved('+ align from 125')}; the "
            "InfoNCE arm, which does not use it, reproduced exactly), so only counts and means over seeds carry "
            "information. With full captions (about one image per caption) the same term from the first step "
            "collapsed both towers (docs/formulations.md, one seed, every weight tried), so the regime matters, "
            "as the seed says; verdict: consistent with the claim, not established."
        ),
        change=(
            "Pretrained towers and real class-level data (the seed's setting), more seeds, and batches that "
            "hold fewer classes still (the alignment's per-class groups grow as the classes per batch shrink)."
        ),
        command=".venv/bin/python experiments/clip_few_classes.py",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

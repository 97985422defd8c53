"""Experiment: the few-classes regime of the matrix-entropy alignment (issue "Do the seeds' claims reproduce?",
item 6: "the few-classes regime where the seed says matrix alignment helps most").

The same scenes and dual encoder as experiments/clip_matrix.py, but captioned by class only (`scenes-classes`:
"a red circle"): 18 distinct training captions, so a batch of 128 holds about 7 images per caption and the
alignment takes its several-images-per-class form (the entropy of [the class's images ; its caption]), the form
Song et al. define it in. Arms: InfoNCE alone, + the alignment at 0.1 from step 125 (the demo recipe: "+ align
from 125"), + the alignment at 0.1 from the first step ("+ align from 0"); seeds 0-5. Measured: zero-shot top-1 /
top-5 over the 24 colour-shape names ("a {}") on scenes of the 6 held-out compositions.

    python experiments/clip_few_classes.py               (about 35 minutes on 2 CPU cores; writes
                                                          docs/experiments/clip_few_classes.md)
    python experiments/clip_few_classes.py --smoke OUT   (tiny, for tests/test_experiments.py)
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

from clip_matrix import SMOKE, figure  # noqa: E402
from harness import (  # noqa: E402
    curve,
    experiment_args,
    log_history,
    markdown_table,
    run_grid,
    save_summary,
    summarize,
    write_doc,
)

ARMS = {"infonce": ["--clip_alignment_weight", "0"], "+ align from 125": [],
        "+ align from 0": ["--clip_matrix_start_step", "0"]}  # fmt: skip
METRICS = ["zeroshot_top1", "zeroshot_top5", "image_to_text_R@1"]
DATA = ["--dataset_name", "scenes-classes", "--zeroshot_dataset", "scenes-classes"]


def main(argv: list[str] | None = None) -> int:
    args = experiment_args(__doc__.splitlines()[0], argv)
    out = args.smoke or REPO / "outputs" / "experiments" / "clip_few_classes"
    seeds = [0, 1] if args.smoke else list(range(6))  # 6 seeds: zero-shot swings by seed far more than by arm
    base = ["--config", "demo/clip.yaml", *DATA, *(SMOKE if args.smoke else [])]
    results = run_grid("clip", base, ARMS, seeds, out, reuse=args.reuse)
    summary = summarize(results, METRICS, baseline="infonce")
    docs = save_summary(out, summary, bool(args.smoke), REPO)
    figure(out, docs / "clip_few_classes.png", summary, panels=("zeroshot_top1", "zeroshot_top5"))
    table = markdown_table(summary, METRICS)
    print("\n".join(table))
    if args.smoke:
        return 0
    late, early = summary["paired"]["+ align from 125"], summary["paired"]["+ align from 0"]
    chance = 1 / 24

    def paired(arm: dict, metric: str = "zeroshot_top1") -> str:
        d = arm[metric]
        t = d["mean"] / (d["std"] / len(d["values"]) ** 0.5) if d["std"] > 0 else float("inf")
        return (f"{d['mean']:+.3f} ± {d['std']:.3f} (higher in {sum(v > 0 for v in d['values'])} of "
                f"{len(d['values'])} seeds, paired t = {t:.1f})")

    def count(arm: str, test) -> int:
        return sum(test(v) for v in summary["arms"][arm]["zeroshot_top1"]["values"])

    def collapsed(arm: str) -> int:  # image features' matrix entropy below 0.1 at the last logged step
        return sum(curve(log_history(out / arm / f"seed{seed}"), "image_entropy")[1][-1] < 0.1 for seed in seeds)

    write_doc(
        docs / "clip_few_classes.md",
        title="CLIP-style training with few classes: InfoNCE vs InfoNCE + matrix-entropy alignment",
        question=("The seed says the cross-modal matrix-entropy alignment (Song et al., arXiv 2409.16767) helps most "
                  "when there are few classes. With captions that name only the class, so that a batch holds several "
                  "images per caption, does adding it to InfoNCE improve zero-shot classification of unseen "
                  "compositions?"),
        setup=("`matrix-llm clip --config demo/clip.yaml --dataset_name scenes-classes --zeroshot_dataset "
               "scenes-classes` (random-init ViT + BERT dual encoder, hidden 64, 4,000 rendered scenes captioned "
               "\"a red circle\": 18 training classes, about 7 images per caption in a batch of 128; 8 epochs, 2 CPU "
               "cores), seeds 0-5 (zero-shot accuracy swings by seed). Arms: InfoNCE alone (`--clip_alignment_weight 0`), + the alignment at 0.1 "
               "from step 125 of 256 (the recipe as shipped), + the alignment at 0.1 from the first step "
               "(`--clip_matrix_start_step 0`). InfoNCE treats the other images of the same caption in a batch as "
               "negatives (as CLIP and open_clip do). Zero-shot: 1,000 scenes of the 6 held-out colour-shape "
               "compositions, classified among all 24 names with the template \"a {}\" (chance 0.042); retrieval "
               "R@1 on 1,000 fresh scenes is capped by the repeated captions (about 1/55) and reported only for "
               "completeness."),
        result=table,
        figure="clip_few_classes.png",
        answer=(f"Weakly yes at this scale: trained from the first step, the alignment raises zero-shot top-1 on the "
                f"unseen compositions by {paired(early)}, not significant at 5% with {len(seeds)} seeds. It is above "
                f"chance in {count('+ align from 0', lambda v: v > chance)} of {len(seeds)} seeds, InfoNCE alone in "
                f"{count('infonce', lambda v: v > chance)}: InfoNCE alone ends with collapsed image features (matrix "
                f"entropy below 0.1) in {collapsed('infonce')} of {len(seeds)} seeds, with the alignment from the "
                f"first step in {collapsed('+ align from 0')}. Started at step 125 it changes little: {paired(late)}. "
                "With full captions (about one image per caption) the same term from the first step collapsed "
                "both towers (docs/formulations.md, one seed, every weight tried), so the regime matters, as the seed says; verdict: consistent with the claim, "
                "not established."),
        change=("Pretrained towers and real class-level data (the seed's setting), more seeds, and batches that "
                "hold fewer classes still (the alignment's per-class groups grow as the classes per batch shrink)."),
        command="python experiments/clip_few_classes.py",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

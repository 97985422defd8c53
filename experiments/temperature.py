"""Experiment: does CLIP's temperature set the matrix entropy of the image features? (issue 31, item 4: seed 000's
temperature-vs-matrix-entropy claim, untestable before `freeze_logit_scale` existed.)

`matrix-llm clip --config demo/clip.yaml` with the tiny dual encoder the other CLIP studies use (random-init ViT +
BERT, the rendered captioned scenes), InfoNCE alone, the temperature fixed (`--freeze_logit_scale true`) at
τ ∈ {0.01, 0.03, 0.07, 0.2, 0.5} (`--logit_scale_init log(1/τ)`; 0.07 is CLIP's start, 0.01 its clamp), seeds 0,
1, 2 (the seed sets the initialisation, the data order and the scenes; the arms of one seed share them). Measured
on the zero-shot set (the held-out colour-shape compositions, classified among all 24 names): top-1 accuracy, the
mean within-class matrix entropy of the image embeddings, NC1 of the image embeddings with the class prompts as
the head (`zero_shot_geometry`). The answer is Spearman's rank correlation of τ with each, over the 15 runs, with a
95 % bootstrap CI (`comparisons.rank_correlation`), and per seed.

    .venv/bin/python experiments/temperature.py               (about 25 minutes on 2 CPU cores; writes docs/experiments/temperature.md)
    .venv/bin/python experiments/temperature.py --smoke OUT   (tiny, for tests/test_experiments.py)
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

from comparisons import rank_correlation  # noqa: E402
from harness import (  # noqa: E402
    CLIP_TINY_DUAL,
    curve,
    experiment_args,
    log_history,
    markdown_table,
    pyplot,
    read_run_json,
    run_grid,
    save_summary,
    study_folder,
    summarize,
    write_doc,
)

TAUS = (0.01, 0.03, 0.07, 0.2, 0.5)
ARMS = {f"τ={tau}": ["--logit_scale_init", repr(min(math.log(1 / tau), math.log(100)))] for tau in TAUS}
FIXED = ["--clip_alignment_weight", "0", "--freeze_logit_scale", "true"]
METRICS = ["zeroshot_top1", "zeroshot_within_class_entropy", "zeroshot_nc1"]
TITLES = {
    "zeroshot_top1": "zero-shot top-1 (chance 1/24)",
    "zeroshot_within_class_entropy": "within-class matrix entropy of the images",
    "zeroshot_nc1": "NC1 of the images (class prompts as the head)",
}
SMOKE = [
    "--max_train_samples",
    "96",
    "--max_eval_samples",
    "48",
    "--tiny_hidden_size",
    "32",
    "--num_train_epochs",
    "1",
    "--per_device_train_batch_size",
    "32",
    "--logging_steps",
    "1",
]


def main(argv: list[str] | None = None) -> int:
    args = experiment_args(__doc__.splitlines()[0], argv)
    out = study_folder("temperature", args)
    seeds = [0, 1] if args.smoke else [0, 1, 2]
    base = ["--config", "demo/clip.yaml", *CLIP_TINY_DUAL, *FIXED, *(SMOKE if args.smoke else [])]
    results = run_grid("clip", base, ARMS, seeds, out, reuse=args.reuse)
    for arm, runs in results.items():  # the temperature really stayed where it was put, in every logged step
        for seed in runs:
            logged = curve(log_history(out / arm / f"seed{seed}"), "logit_scale")[1]
            if any(not math.isclose(v, float(ARMS[arm][1]), abs_tol=1e-5) for v in logged):
                raise RuntimeError(f"temperature: {arm} seed {seed} moved its logit_scale: {logged}")
    # did training get anywhere? The random-init towers embed every image almost alike (image matrix entropy ~0.02
    # at step 0), so InfoNCE starts at (or, with a small τ, above) its chance level log(batch); a run whose last
    # loss is not well below that level has learned nothing the metrics could describe
    trained = {}
    for arm, runs in results.items():
        for seed in runs:
            run_dir = out / arm / f"seed{seed}"
            losses = curve(log_history(run_dir), "loss")[1]
            batch = read_run_json(run_dir / "trainer_state.json")["train_batch_size"]
            trained[arm, seed] = bool(losses) and losses[-1] < math.log(batch) - 0.25
            runs[seed]["first_loss"], runs[seed]["last_loss"] = (
                (losses[0], losses[-1]) if losses else (math.nan,) * 2
            )
    summary = summarize(results, METRICS, baseline="τ=0.07")
    docs = save_summary(out, summary, bool(args.smoke), REPO)
    taus = {arm: tau for arm, tau in zip(ARMS, TAUS, strict=True)}
    xs = [taus[arm] for arm in results for _ in seeds]
    correlations = {
        m: rank_correlation(xs, [v for a in results for v in summary["arms"][a][m]["values"]])
        for m in METRICS
    }
    per_seed = {
        m: [
            rank_correlation(list(TAUS), [summary["arms"][a][m]["values"][i] for a in ARMS], draws=0)["rho"]
            for i in range(len(seeds))
        ]
        for m in METRICS
    }
    summary["rank_correlation"] = {m: {**correlations[m], "per_seed": per_seed[m]} for m in METRICS}
    save_summary(out, summary, bool(args.smoke), REPO)

    plt = pyplot()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.4 * len(METRICS), 3.6))
    for ax, metric in zip(axes, METRICS, strict=True):
        for i, seed in enumerate(seeds):
            ax.plot(
                TAUS,
                [summary["arms"][a][metric]["values"][i] for a in ARMS],
                "o-",
                color=f"C{i}",
                label=f"seed {seed}",
            )
        c = correlations[metric]
        ax.set_xscale("log")
        ax.set_xlabel("temperature τ (fixed)")
        ax.set_title(
            f"{TITLES[metric]}\nSpearman {c['rho']:+.2f} [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]",
            fontsize=9,
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / "temperature.png", dpi=110)
    plt.close(fig)
    table = markdown_table(summary, METRICS)[
        : 2 + len(ARMS)
    ]  # arms only: τ is not paired against one baseline here
    rows = [
        "| metric | Spearman ρ(τ, metric) over all runs [95 % bootstrap CI] | per seed |",
        "|---|---|---|",
    ]
    rows += [
        f"| {m} | {c['rho']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] | "
        + ", ".join(f"{r:+.2f}" for r in per_seed[m])
        + " |"
        for m, c in correlations.items()
    ]
    rows += [
        "",
        "| τ | runs that trained: last InfoNCE loss below log(batch) - 0.25 (first -> last logged loss, per seed) |",
        "|---|---|",
    ]
    rows += [
        f"| {taus[arm]} | {sum(trained[arm, s] for s in seeds)} of {len(seeds)} ("
        + ", ".join(
            f"{results[arm][s]['first_loss']:.2f} -> {results[arm][s]['last_loss']:.2f}" for s in seeds
        )
        + ") |"
        for arm in ARMS
    ]
    summary["trained"] = {f"{arm} seed {s}": trained[arm, s] for arm in ARMS for s in seeds}
    save_summary(out, summary, bool(args.smoke), REPO)
    clip_default = sum(trained["τ=0.07", s] for s in seeds)
    chance = 1 / 24
    print("\n".join([*table, "", *rows]))

    def reading(metric: str) -> str:
        low, high = correlations[metric]["ci95"]
        return "rises with τ" if low > 0 else "falls with τ" if high < 0 else "no monotone relation shown"

    write_doc(
        docs / "temperature.md",
        title="CLIP's temperature and the matrix entropy of the image features",
        question=(
            "Seed 000 ties the InfoNCE temperature to the matrix entropy of the learned features. With the "
            "temperature held fixed through training, does τ move the within-class matrix entropy of the image "
            "embeddings, and with it their neural-collapse NC1 and zero-shot accuracy?"
        ),
        setup=(
            "`matrix-llm clip --config demo/clip.yaml --model_name_or_path tiny-dual --freeze_text_tower false` "
            "(random-init ViT + BERT, hidden 64; 4,000 rendered captioned scenes, 8 epochs, batch 128), InfoNCE only "
            "(`--clip_alignment_weight 0`), `--freeze_logit_scale true --logit_scale_init log(1/τ)` for τ in "
            f"{', '.join(str(t) for t in TAUS)}; seeds 0, 1, 2. Zero-shot set: 1,000 scenes of the 6 held-out "
            "compositions among all 24 names; within-class entropy: the mean over classes of the matrix entropy of "
            "the normalised image embeddings' Gram; NC1 with the 24 class prompt embeddings as the head "
            "(`matrix_llm.modes.clip.evaluate.zero_shot_geometry`)."
        ),
        result=[*table, "", *rows],
        figure="temperature.png",
        result_note="mean ± sample std over seeds, per-seed values in brackets",
        answer=(
            "Across the 15 runs: within-class matrix entropy "
            + reading("zeroshot_within_class_entropy")
            + f" (ρ {correlations['zeroshot_within_class_entropy']['rho']:+.2f}), NC1 "
            + reading("zeroshot_nc1")
            + f" (ρ {correlations['zeroshot_nc1']['rho']:+.2f}), zero-shot top-1 "
            + reading("zeroshot_top1")
            + f" (ρ {correlations['zeroshot_top1']['rho']:+.2f}); a relation counts when its 95 % CI excludes 0. "
            f"But the base learner often does not work: InfoNCE ended below its chance level in "
            f"{sum(trained.values())} of {len(trained)} runs, at CLIP's τ = 0.07 in {clip_default} of {len(seeds)}, "
            f"{sum(trained[a, s] for a in list(ARMS)[:2] for s in seeds)} of {2 * len(seeds)} at τ <= 0.03 and "
            f"{sum(trained[a, s] for a in list(ARMS)[3:] for s in seeds)} of {2 * len(seeds)} at τ >= 0.2 "
            "(the random-init towers start with nearly collapsed image "
            "features, and a large τ flattens the logits the gradient needs); the mean zero-shot top-1 of every τ "
            f"is at most {max(summary['arms'][a]['zeroshot_top1']['mean'] for a in ARMS):.3f} (chance "
            f"{chance:.3f}). The correlations above therefore mostly separate runs that trained from runs that did "
            "not. Verdict on the seed's claim: "
            + (
                "not testable at this scale: at a fixed temperature these towers do not train unless τ is small."
                if clip_default < len(seeds)
                else "the temperature does set the within-class entropy."
                if reading("zeroshot_within_class_entropy") != "no monotone relation shown"
                else "not shown: no monotone relation between τ and the within-class entropy."
            )
        ),
        change=(
            "Towers that train at every τ: pretrained ones (the seed's setting), or a learned temperature for a "
            "warm-up before it is frozen at each value; real captions, more seeds per τ. The zero-shot compositions "
            "are few (6 held-out), so accuracy is noisy by seed."
        ),
        command=".venv/bin/python experiments/temperature.py",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

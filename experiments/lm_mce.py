"""Experiment: CE vs CE + MCE for a language model, per formulation and weight (issue "Do the seeds' claims
reproduce?", item 1; Matrix-SSL's GSM8K claim: 72.3 vs 69.2 at 7B).

`matrix-llm demo --config demo/mce.yaml` (a tiny Llama from scratch on synthetic GSM8K-format problems, held-out
greedy strict-match on 200 test-split problems) for CE alone and CE + w MCE with the `head` formulation at
w = 0.1 / 0.3 and `relation` / `alignment` at w = 0.1; 1,000 steps (the demo's 2,000 halved to fit),
no evaluation during training. Seeds 0, 1, 2 (initialisation and data order; the problems are the same).

    .venv/bin/python experiments/lm_mce.py                 (17 minutes on 2 CPU cores, 15 runs; writes docs/experiments/lm_mce.md)
    .venv/bin/python experiments/lm_mce.py --smoke OUT     (tiny, for tests/test_experiments.py)
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

from comparisons import UNPAIRED, compare, comparison_text  # noqa: E402
from harness import (  # noqa: E402
    bar_panel,
    experiment_args,
    markdown_table,
    pyplot,
    run_grid,
    save_summary,
    study_folder,
    summarize,
    write_doc,
)

ARMS = {
    "ce": ["--matrix_loss_type", "none"],
    "head 0.1": [],
    "head 0.3": ["--matrix_loss_weight", "0.3"],
    "relation 0.1": ["--matrix_loss_type", "relation"],
    "alignment 0.1": ["--matrix_loss_type", "alignment"],
}
CLAIMED = 0.031  # Matrix-SSL's GSM8K gain at 7B: 72.3 vs 69.2
METRICS = ["strict", "flexible", "matrix_entropy", "effective_rank"]
BASE = [
    "--config",
    "demo/mce.yaml",
    "--max_steps",
    "1000",
    "--eval_strategy",
    "no",
    "--matrix_metrics_steps",
    "10",
]
SMOKE = [
    "--max_steps",
    "4",
    "--logging_steps",
    "1",
    "--matrix_metrics_steps",
    "1",
    "--synthetic_train_size",
    "64",
    "--eval_size",
    "8",
    "--max_new_tokens",
    "16",
]


def flat(metrics: dict) -> dict[str, float]:
    """The numbers of the demo's ``metrics.json`` the summary compares."""
    last = metrics["train"]["last"]
    return {
        "strict": metrics["eval"]["strict_accuracy"],
        "flexible": metrics["eval"]["flexible_accuracy"],
        "matrix_entropy": last["matrix_entropy"],
        "effective_rank": last["effective_rank"],
    }


def main(argv: list[str] | None = None) -> int:
    args = experiment_args(__doc__.splitlines()[0], argv)
    out = study_folder("lm_mce", args)
    seeds = [0, 1] if args.smoke else [0, 1, 2]
    arms = {k: ARMS[k] for k in ("ce", "head 0.1")} if args.smoke else ARMS
    runs = run_grid(
        "demo",
        [*BASE, *(SMOKE if args.smoke else [])],
        arms,
        seeds,
        out,
        reuse=args.reuse,
        seed_fields=("--seed", "--data_seed"),
        results_file="metrics.json",
    )
    results = {arm: {seed: flat(m) for seed, m in by_seed.items()} for arm, by_seed in runs.items()}
    summary = summarize(results, METRICS, baseline="ce")
    docs = save_summary(out, summary, bool(args.smoke), REPO)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
    bar_panel(axes[0], summary, "strict", "held-out strict-match (200 problems)")
    bar_panel(axes[1], summary, "matrix_entropy", "matrix entropy of the token representations (last log)")
    fig.tight_layout()
    fig.savefig(docs / "lm_mce.png", dpi=110)
    plt.close(fig)
    table = markdown_table(summary, METRICS)
    print("\n".join(table))
    if args.smoke:
        return 0
    strict = {arm: v["strict"]["values"] for arm, v in summary["arms"].items()}
    tested = {  # unpaired: the seeds do not pair the noise (comparisons.UNPAIRED); Bonferroni over the four arms
        arm: compare(
            strict[arm],
            strict["ce"],
            paired=False,
            reason=UNPAIRED,
            comparisons=len(strict) - 1,
            claimed=CLAIMED if arm == "head 0.1" else None,
        )
        for arm in strict
        if arm != "ce"
    }
    write_doc(
        docs / "lm_mce.md",
        title="Language model: CE vs CE + MCE, per formulation and weight",
        question=(
            "Does adding the matrix cross-entropy of the token representations to the LM loss raise held-out "
            "accuracy on GSM8K-style problems (Matrix-SSL: 72.3 vs 69.2 on GSM8K at 7B), and which formulation "
            "and weight should be the default?"
        ),
        setup=(
            "`matrix-llm demo --config demo/mce.yaml --max_steps 1000 --eval_strategy no` (tiny Llama, hidden "
            "128, 2 layers, 0.66M parameters, from scratch; 6,000 synthetic problems of 2 steps with inputs "
            "2..10; batch 16, lr 3e-3 cosine), held-out greedy strict-match / flexible-extract on 200 "
            "test-split problems (disjoint by construction). Arms: `--matrix_loss_type none` (CE), `head` at "
            "weight 0.1 / 0.3, `relation` and `alignment` at 0.1. Seeds 0, 1, 2 (`--seed` and "
            "`--data_seed`). Trained on these synthetic problems, the seed-0 models score 0.005 (CE) and 0.030 "
            "(`head` 0.1) on the first 200 real GSM8K test problems (`matrix-llm eval gsm8k --data "
            "../shared/data/gsm8k --limit 200`), too close to 0 to compare arms; [lm_gsm8k.md](lm_gsm8k.md) "
            "trains CE and each formulation at 0.1 on real GSM8K."
        ),
        result=table,
        figure="lm_mce.png",
        answer=(
            f"`head` 0.1 - CE (the default formulation against the claim): {comparison_text(tested['head 0.1'])}. "
            "The other arms - CE: "
            + "; ".join(f"{a}: {comparison_text(c)}" for a, c in tested.items() if a != "head 0.1")
            + ". Spread of the strict-match across seeds: "
            + ", ".join(f"{a} {v['strict']['std']:.3f}" for a, v in summary["arms"].items())
            + ". Against the first run (2026-12-02, before the runs were archived), CE came out the same in "
            "every seed and every MCE arm moved (single seeds by up to 0.17), as a seed spread of 0.1 lets them; "
            "that run read `head` 0.3 as best, this one `head` 0.1. Bisected on one machine (`head` 0.1, seed 0): "
            "commit 243e898 (2026-12-02, after the first run) moved it from 0.535 to 0.64 by rewriting the MCE's "
            "backward pass in other floating-point operations (its gradient and the old one's each lie within "
            "8e-5 of the float64 gradient, relative to the largest entry); and at one commit the same run gives "
            "0.625 on the archived run's machine and 0.49 to 0.64 on another as the CPU code paths are forced "
            "(docs/experiments/README.md). Training amplifies float32 round-off into seed-sized changes, so the "
            "arms are compared unpaired. The first run's rule, higher than CE in every seed, was not a test."
        ),
        change=(
            "A pretrained model on real GSM8K / MetaMathQA (the claim's setting: Llemma-7B), full training "
            "length, more seeds (the per-run standard error at n = 200 is about 0.03)."
        ),
        command=".venv/bin/python experiments/lm_mce.py",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

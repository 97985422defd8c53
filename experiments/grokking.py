"""Experiment: grokking on modular addition, and the matrix entropy of the representations around the transition
(issue "Do the seeds' claims reproduce?", item 4; seed 000).

`matrix-llm classify --config classify/grokking.yaml --dataset_config 113:FRACTION --tiny_dropout 0`: (a + b) mod
113 with each number one token, FRACTION of the 113 x 113 table for training (half, the recipe's, generalised as it
fitted: no delay), a 1-layer random-init BERT classifier without dropout (so the logged training accuracy, the
batches' accuracy before each step, is the eval-mode forward's), AdamW with weight decay 1.0, batch 512; every 250
steps the held-out accuracy (2,000 held-out pairs) and the probe on 1,000 held-out pairs (matrix entropy of the
block's output, MIR / HDR / head and class-mean entropy). Seeds 0, 1, 2 (initialisation and batch order; the split
is fixed). The question: after training accuracy reached 1, does the block entropy or MIR move at the held-out
jump more than it drifted over any window as long on the plateau before it (:func:`events`)?

    .venv/bin/python experiments/grokking.py                 (about 30 minutes on 2 CPU cores; writes docs/experiments/grokking.md)
    .venv/bin/python experiments/grokking.py --smoke OUT     (tiny, for tests/test_experiments.py)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

from harness import (  # noqa: E402
    curve,
    experiment_args,
    log_history,
    markdown_table,
    pyplot,
    run_grid,
    save_summary,
    study_folder,
    summarize,
    write_doc,
)

FRACTION, STEPS = 0.4, 8000
BASE = [
    "--config",
    "classify/grokking.yaml",
    "--dataset_config",
    f"113:{FRACTION}",
    "--tiny_dropout",
    "0",
    "--max_steps",
    str(STEPS),
]
SMOKE = [
    "--max_steps",
    "20",
    "--eval_steps",
    "10",
    "--logging_steps",
    "5",
    "--matrix_metrics_steps",
    "10",
    "--max_eval_samples",
    "200",
    "--matrix_probe_samples",
    "100",
    "--tiny_hidden_size",
    "32",
]
ENTROPY, MIR = "probe_layer0_matrix_entropy", "probe_mir"
FIT, LOW, GENERALISED, DELAY = (
    0.99,
    0.1,
    0.9,
    1000,
)  # grokking: held-out >= 0.9 at least DELAY steps after fitting
PANELS = [
    ("accuracy", "training accuracy (batches, no dropout)"),
    ("eval_accuracy", "held-out accuracy"),
    (ENTROPY, "matrix entropy of the block's output (probe)"),
    (MIR, "MIR (probe)"),
    ("probe_head_entropy", "head matrix entropy H(W Wᵀ)"),
    ("eval_loss", "held-out loss"),
]


def first_step(steps: Sequence[int], values: Sequence[float], level: float) -> int | None:
    return next((s for s, v in zip(steps, values, strict=True) if v >= level), None)


def events(log: Sequence[dict], keys: Sequence[str] = (ENTROPY, MIR)) -> dict:
    """One run's transition: ``fit`` (first logged step with training accuracy >= FIT), ``grok`` (first evaluation
    with held-out accuracy >= GENERALISED), ``jump_start`` (the last evaluation before ``grok`` still below LOW),
    ``delay`` (grok - fit). Per key of ``keys``: its values there, its change across the jump (``jump_start`` ->
    ``grok``), and ``drift``: the largest change over any window as long on the plateau (``fit`` -> ``jump_start``),
    so ``moves`` says whether the jump's change exceeds what the plateau did in as many steps."""
    fit = first_step(*curve(log, "accuracy"), FIT)
    steps, held_out = curve(log, "eval_accuracy")
    grok = first_step(steps, held_out, GENERALISED)
    below = [s for s, v in zip(steps, held_out, strict=True) if v < LOW and (grok is None or s < grok)]
    jump_start = below[-1] if grok is not None and below else None
    out: dict = {"fit": fit, "grok": grok, "jump_start": jump_start}
    out["delay"] = grok - fit if grok is not None and fit is not None else None
    for key in keys:
        at_steps, values = curve(log, key)
        value = dict(zip(at_steps, values, strict=True))

        def near(step: int, value: dict = value) -> float:  # the probe nearest to ``step``
            return value[min(value, key=lambda probed: abs(probed - step))]

        entry = {"start": values[0], "end": values[-1]}
        if fit is not None:
            entry["fit"] = near(fit)
        if jump_start is not None and grok is not None:
            entry["jump_start"], entry["grok"] = near(jump_start), near(grok)
            entry["jump"] = entry["grok"] - entry["jump_start"]
            width = grok - jump_start
            plateau = [s for s in at_steps if fit is not None and fit <= s <= jump_start]
            drifts = [abs(value[b] - value[a]) for a in plateau for b in plateau if 0 < b - a <= width]
            entry["drift"] = max(drifts) if drifts else None
            entry["moves"] = entry["drift"] is not None and abs(entry["jump"]) > entry["drift"]
        out[key] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    args = experiment_args(__doc__.splitlines()[0], argv)
    out = study_folder("grokking", args)
    seeds = [0, 1] if args.smoke else [0, 1, 2]
    results = run_grid(
        "classify",
        [*BASE, *(SMOKE if args.smoke else [])],
        {"ce": []},
        seeds,
        out,
        reuse=args.reuse,
        results_file="all_results.json",
    )
    logs = {s: log_history(out / "ce" / f"seed{s}") for s in seeds}
    found = {s: events(log) for s, log in logs.items()}
    for seed, log in logs.items():
        results["ce"][seed].update(
            final_train_accuracy=curve(log, "accuracy")[1][-1],
            final_entropy=found[seed][ENTROPY]["end"],
            final_mir=found[seed][MIR]["end"],
        )
    metrics = ["final_train_accuracy", "eval_accuracy", "final_entropy", "final_mir"]
    summary = summarize(results, metrics, baseline="ce")
    docs = save_summary(out, {**summary, "events": found}, bool(args.smoke), REPO)
    plt = pyplot()

    fig, axes = plt.subplots(2, 3, figsize=(14, 6.4))
    for ax, (key, title) in zip(axes.flat, PANELS, strict=True):
        for seed, log in logs.items():
            ax.plot(*curve(log, key), "-", color=f"C{seed}", label=f"seed {seed}")
            for name, style in (("fit", ":"), ("jump_start", "-."), ("grok", "--")):
                if found[seed][name] is not None:
                    ax.axvline(found[seed][name], color=f"C{seed}", linestyle=style, alpha=0.5)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.legend(fontsize=6)
    fig.suptitle(
        f"(a + b) mod 113, {FRACTION:.0%} of the table for training, 1-layer BERT without dropout, weight decay 1.0 "
        f"(dotted: training accuracy >= {FIT}; dash-dot: last held-out < {LOW}; dashed: held-out >= {GENERALISED})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(docs / "grokking.png", dpi=100)
    plt.close(fig)
    table = markdown_table(summary, metrics)[:3]  # one arm: no paired row

    def cell(entry: dict) -> str:
        if "jump" not in entry:
            return "no jump"
        drift = "n/a" if entry["drift"] is None else f"{entry['drift']:.3f}"
        return (
            f"{entry['fit']:.3f} / {entry['jump_start']:.3f} / {entry['grok']:.3f} / {entry['end']:.3f}; "
            f"jump {entry['jump']:+.3f}, plateau drift {drift}"
        )

    rows = [
        (
            f"| seed | train acc >= {FIT} at step | last held-out < {LOW} | held-out >= {GENERALISED} at step | delay | "
            "block entropy: fit / jump start / grok / end; jump vs drift | MIR: the same |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    rows += [
        f"| {s} | {e['fit']} | {e['jump_start']} | {e['grok']} | {e['delay']} | {cell(e[ENTROPY])} | {cell(e[MIR])} |"
        for s, e in found.items()
    ]
    print("\n".join([*table, "", *rows]))
    if args.smoke:
        return 0
    grokked = [s for s, e in found.items() if e["delay"] is not None and e["delay"] >= DELAY]
    jumped = [s for s in grokked if "jump" in found[s][ENTROPY]]

    def moved(key: str) -> str:
        moves = [s for s in jumped if found[s][key]["moves"]]
        signs = {"rises" if found[s][key]["jump"] > 0 else "falls" for s in moves}
        how = f" ({' / '.join(sorted(signs))})" if moves else ""
        return f"{len(moves)} of {len(jumped)}{how}"

    answer = (
        f"{len(grokked)} of {len(found)} seeds grok: held-out accuracy >= {GENERALISED} at least {DELAY} steps after "
        f"training accuracy >= {FIT} (delays: {', '.join(str(e['delay']) for e in found.values())} steps). "
        + (
            f"Across the jump (last held-out evaluation below {LOW} to the first at {GENERALISED}), the block "
            f"output's matrix entropy moves more than it drifted over any window as long on the plateau in "
            f"{moved(ENTROPY)} seeds, MIR in {moved(MIR)}. Verdict: "
            + (
                "the representations' matrix entropy marks the grokking transition."
                if jumped and all(found[s][ENTROPY]["moves"] for s in jumped)
                else "MIR marks the transition; the entropy does not in every seed."
                if jumped and all(found[s][MIR]["moves"] for s in jumped)
                else "neither moves at the jump in every seed: no marker shown at this scale."
            )
            if grokked
            else f"Verdict: no grokking within {STEPS} steps at this setting; the entropy question is open."
        )
    )
    write_doc(
        docs / "grokking.md",
        title="Grokking on modular addition, and the matrix entropy of the representations",
        question=(
            "Trained long past 100% training accuracy with weight decay, does a small transformer suddenly "
            "generalise on (a + b) mod 113 (Power et al., 2022), and does the matrix entropy (or MIR) of its "
            "representations move at that jump more than it drifted while the model sat on the fitted plateau "
            "(seed 000)?"
        ),
        setup=(
            f"`matrix-llm classify --config classify/grokking.yaml --dataset_config 113:{FRACTION} --tiny_dropout 0 "
            f"--max_steps {STEPS}`: `modular-addition` (every pair of Z_113 once, {FRACTION:.0%} for training, "
            "fixed split; each number a one-token two-letter word), tiny random-init BERT classifier (1 layer, "
            "hidden 128, 4 heads) without dropout, so the logged training accuracy (the mean over the batches of a "
            "logging window, before each step) is the eval-mode forward's (tests/modes/classify: with "
            "`tiny_dropout 0` the training-mode logits equal the eval-mode ones), AdamW lr 1e-3 (constant after 50 "
            "warm-up steps), betas (0.9, 0.98), weight decay 1.0, batch 512. Every 250 steps: accuracy on 2,000 "
            "held-out pairs and the probe (`matrix_probe_samples: 1000`, held-out pairs). Seeds 0, 1, 2. Earlier "
            "settings: half of the table with dropout generalised as it fitted (no delay; this doc's earlier "
            "version); 30 % without dropout fitted the training set (>= 0.99) by step 1,050 and was at held-out accuracy "
            "0.20, rising, at step 15,000 (seed 0, exploratory; 40 % fits and jumps within 8,000)."
        ),
        result=[*table, "", *rows],
        figure="grokking.png",
        result_note="mean ± sample std over seeds, per-seed values in brackets",
        answer=answer,
        change=(
            "More seeds; a finer probe cadence around the jump (250 steps is coarse beside a jump of a few hundred); "
            "smaller training fractions with longer runs (the delay grows as the data shrinks); the embeddings' own "
            "entropy."
        ),
        command=".venv/bin/python experiments/grokking.py",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

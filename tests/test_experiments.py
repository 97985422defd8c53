"""Experiments (experiments/): the harness's summary, and each experiment's smoke run at tiny size through the
toolkit's own commands.

Run: .venv/bin/python -m pytest tests/test_experiments.py -q
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

from comparisons import compare, comparison_text, contrast, probe_comparisons, rank_correlation  # noqa: E402
from harness import (  # noqa: E402
    markdown_table,
    summarize,
)


def smoke_run(script: str, out: Path) -> dict:
    """``python experiments/<script>.py --smoke OUT``; returns its ``summary.json``."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / f"{script}.py"), "--smoke", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def test_summary_means_stds_and_paired_differences():
    results = {
        "base": {0: {"m": 0.1}, 1: {"m": 0.3}, 2: {"m": 0.2}},
        "new": {0: {"m": 0.2}, 1: {"m": 0.3}, 2: {"m": 0.4}},
    }
    summary = summarize(results, ["m"], baseline="base")
    assert summary["arms"]["base"]["m"]["mean"] == pytest.approx(0.2)
    assert summary["arms"]["base"]["m"]["std"] == pytest.approx(0.1)
    paired = summary["paired"]["new"]["m"]
    assert paired["values"] == pytest.approx([0.1, 0.0, 0.2]) and paired["mean"] == pytest.approx(0.1)
    assert paired["std"] == pytest.approx(0.1) and paired["seeds"] == [0, 1, 2]
    table = markdown_table(summary, ["m"])
    assert table[2].startswith("| base | 0.2000 ± 0.1000 (0.100, 0.300, 0.200)") and "+0.1000" in table[-1]


def test_paired_comparison_is_scipys_paired_t_test_with_its_ci_mde_and_bonferroni():
    from scipy import stats

    a, b = [0.30, 0.25, 0.41, 0.28], [0.20, 0.27, 0.30, 0.21]
    ref = stats.ttest_rel(a, b)
    c = compare(a, b, paired=True, reason="same init and batches", comparisons=3)
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    se = stats.tstd(diffs) / 2
    assert c["effect"] == pytest.approx(0.065) and c["n"] == 4 and c["test"] == "paired t"
    assert c["p"] == pytest.approx(ref.pvalue) and c["p_corrected"] == pytest.approx(min(1, 3 * ref.pvalue))
    assert c["ci95"] == pytest.approx(
        [0.065 - stats.t.ppf(0.975, 3) * se, 0.065 + stats.t.ppf(0.975, 3) * se]
    )
    # 80 % power at the Bonferroni level 0.05 / 3: (t_{1 - alpha/2} + t_{0.8}) standard errors
    assert c["mde80"] == pytest.approx((stats.t.ppf(1 - 0.05 / 6, 3) + stats.t.ppf(0.8, 3)) * se)
    text = comparison_text(c)
    assert (
        text.startswith("+0.065 [95 % CI ")
        and f"p = {ref.pvalue:.2f}" in text
        and "corrected for 3 arms" in text
    )


def test_unpaired_comparison_is_welch_with_an_exact_permutation_test():
    from scipy import stats

    a, b = [0.71, 0.74, 0.69, 0.80], [0.60, 0.66, 0.58]
    c = compare(a, b, paired=False, reason="float32 round-off differs between arms")
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert c["test"] == "Welch t" and c["p"] == pytest.approx(ref.pvalue)
    # every one of the C(7, 4) = 35 splits; this one is the most extreme: twice 1/35, as scipy counts two sides
    perm = stats.permutation_test(
        (a, b),
        lambda x, y: sum(x) / len(x) - sum(y) / len(y),
        permutation_type="independent",
        n_resamples=10**6,
    )
    assert c["p_permutation"] == pytest.approx(perm.pvalue) == pytest.approx(2 / 35)
    # three seeds against three: no split can be rarer than 2 of the 20, whatever the values
    assert compare([1.0, 1.1, 1.2], [0.0, 0.1, 0.2], paired=False, reason="r")[
        "p_permutation"
    ] == pytest.approx(0.1)


def test_a_contrast_of_four_arms_is_welch_satterthwaite():
    """An interaction (gain with few labels minus gain with all) from four independent arms: the difference of
    differences, se from each arm's own variance, Satterthwaite's df; with two arms it is Welch's t."""
    from scipy import stats

    a, b = [0.71, 0.74, 0.69, 0.80], [0.60, 0.66, 0.58]
    two = contrast([a, b], [1, -1], reason="r")
    assert two["p"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert two["ci95"] == pytest.approx(compare(a, b, paired=False, reason="r")["ci95"])
    groups = [
        [0.70, 0.74, 0.72, 0.69, 0.75],
        [0.60, 0.62, 0.61],
        [0.83, 0.84, 0.82],
        [0.82, 0.83, 0.84, 0.83],
    ]
    c = contrast(groups, [1, -1, -1, 1], reason="r", comparisons=2, claimed=0.05)
    means = [sum(g) / len(g) for g in groups]
    parts = [float(np.var(g, ddof=1)) / len(g) for g in groups]
    se = sum(parts) ** 0.5
    df = se**4 / sum(v * v / (len(g) - 1) for v, g in zip(parts, groups, strict=True))
    assert c["effect"] == pytest.approx(means[0] - means[1] - means[2] + means[3])
    assert c["p"] == pytest.approx(2 * stats.t.sf(c["effect"] / se, df))
    assert c["ci95"][1] - c["effect"] == pytest.approx(stats.t.ppf(0.975, df) * se)
    assert c["n"] == 3 and c["p_corrected"] == pytest.approx(2 * c["p"]) and c["verdict"] == "reproduced"
    flipped = contrast(groups, [-1, 1, 1, -1], reason="r", claimed=0.05)
    assert flipped["effect"] == pytest.approx(-c["effect"]) and flipped["verdict"] == "contradicted"
    with pytest.raises(ValueError, match="two values or more"):
        contrast([[1.0], [2.0, 3.0]], [1, -1], reason="r")


def test_rank_correlation_is_spearmans_with_a_bootstrap_ci():
    from scipy.stats import spearmanr

    xs, ys = (
        [0.01, 0.03, 0.07, 0.2, 0.5] * 3,
        [2.0, 2.4, 2.2, 3.1, 3.5, 1.9, 2.6, 2.5, 2.9, 3.8, 2.1, 2.3, 2.7, 3.0, 3.3],
    )
    r = rank_correlation(xs, ys)
    assert r["rho"] == pytest.approx(spearmanr(xs, ys).statistic) and r["n"] == 15
    assert r["ci95"][0] <= r["rho"] <= r["ci95"][1] and r["ci95"][0] > 0  # a clear rise: the CI excludes 0
    alone = rank_correlation(xs, ys, draws=0)  # the correlation without its CI
    assert alone["rho"] == r["rho"] and all(math.isnan(v) for v in alone["ci95"])
    flat = rank_correlation(xs, [1.0, 2.0, 3.0, 2.0, 1.0] * 3)
    assert flat["ci95"][0] < 0 < flat["ci95"][1]
    constant = rank_correlation(xs, [0.5] * 15)  # e.g. zero accuracy in every run
    assert math.isnan(constant["rho"]) and all(math.isnan(v) for v in constant["ci95"])


def test_the_verdict_tells_not_reproduced_from_not_testable():
    noisy = [0.1, -0.3, 0.4, -0.2, 0.05]
    zeros = [0.0] * 5
    small = compare(noisy, zeros, paired=True, reason="r", claimed=0.031)
    assert small["mde80"] > 0.031 and small["verdict"] == "not testable at this scale"
    big = compare([0.01, -0.01, 0.02, 0.0, -0.02], zeros, paired=True, reason="r", claimed=0.5)
    assert big["mde80"] < 0.5 and big["verdict"] == "not reproduced"
    clear = compare([1.0, 1.1, 0.9, 1.05, 0.95], zeros, paired=True, reason="r", claimed=0.5)
    assert clear["verdict"] == "reproduced"
    assert compare([1.0, 1.1, 0.9, 1.05, 0.95], zeros, paired=True, reason="r", claimed=-0.5)["verdict"] == (
        "contradicted"
    )


def test_a_doc_cannot_show_a_figure_that_is_not_beside_it(tmp_path):
    import harness

    doc = dict(title="t", question="q", setup="s", result=["| a |"], answer="a", change="c", command="x")
    with pytest.raises(FileNotFoundError, match="study.md shows other.png"):
        harness.write_doc(tmp_path / "study.md", figure="other.png", **doc)
    assert not (tmp_path / "study.md").exists()
    (tmp_path / "study.png").write_bytes(b"png")
    harness.write_doc(tmp_path / "study.md", figure="study.png", **doc)
    assert "![results](study.png)" in (tmp_path / "study.md").read_text()


def test_the_environment_names_the_cpu_code_paths_the_runs_took(monkeypatch):
    """Another CPU's kernels move single seeds (docs/experiments/README.md), so the record names them."""
    import harness
    import torch

    monkeypatch.setenv("MKL_CBWR", "AVX2")
    paths = f"torch kernels {torch.backends.cpu.get_cpu_capability()}, MKL_CBWR=AVX2), "
    assert f"CPUs ({harness._cpu_model()}, {paths}" in harness.environment()
    monkeypatch.delenv("MKL_CBWR")
    assert "MKL_CBWR" not in harness.environment()


def test_the_archive_lets_reuse_read_runs_that_never_ran_on_this_machine(tmp_path, monkeypatch):
    import argparse
    import shutil

    import harness

    monkeypatch.setattr(harness, "RUNS", tmp_path / "repo" / "docs" / "experiments" / "runs")
    monkeypatch.setattr(harness, "REPO", tmp_path / "repo")
    monkeypatch.setattr(harness, "environment", lambda: "commit 0123abc; the machine of the runs")
    out = harness.study_folder("study", argparse.Namespace(smoke=None, reuse=False))
    monkeypatch.setattr(harness, "environment", lambda: "commit 89ab; the tree when the study ended")
    assert out == tmp_path / "repo" / "outputs" / "experiments" / "study"
    run = out / "arm" / "seed2"
    run.mkdir(parents=True)
    (run / "results.json").write_text('{"accuracy": 0.5}')
    (run / "trainer_state.json").write_text('{"log_history": [{"step": 1, "loss": 2.0}]}')
    (run / "unread.json").write_text("{}")
    assert harness.read_run_json(run / "results.json") == {"accuracy": 0.5}
    assert harness.curve(harness.log_history(run), "loss") == ([1], [2.0])
    harness.ARCHIVE.ran = True  # as run_toolkit marks a call that ran a run
    harness.save_summary(out, {}, False, tmp_path / "repo")
    (run / "late.json").write_text('{"drawn": true}')  # read after the summary, for a figure
    assert harness.read_run_json(run / "late.json") == {"drawn": True}
    docs = tmp_path / "repo" / "docs" / "experiments"
    (docs / "study.png").write_bytes(b"png")
    doc = dict(title="t", question="q", setup="s", result=[], answer="a", change="c", command="x")
    harness.write_doc(docs / "study.md", figure="study.png", **doc)  # the archive keeps what was read by then
    shutil.rmtree(out)  # a clean clone: the committed archive, no runs

    def reread(reuse):
        return harness.study_folder("study", argparse.Namespace(smoke=None, reuse=reuse))

    out = reread(reuse=True)
    monkeypatch.setattr(harness, "REUSE", True)
    monkeypatch.setattr(harness, "environment", lambda: "commit 4567def; this machine")
    assert harness.runs_environment().startswith(
        "commit 0123abc; the machine of the runs; rendered from them"
    )
    assert harness.seed_runs(out / "arm") == [run]
    assert harness.run_toolkit(["no-such-command"], run / "results.json", reuse=True, label="x") == {
        "accuracy": 0.5
    }  # read, not run
    earlier = out / "arm" / "seed3"  # a run of an earlier call left on disk counts among the earlier runs too
    earlier.mkdir(parents=True)
    (earlier / "results.json").write_text('{"accuracy": 0.6}')
    assert harness.run_toolkit(["no-such-command"], earlier / "results.json", reuse=True, label="y") == {
        "accuracy": 0.6
    }
    harness.ARCHIVE.ran = True  # a study extended by runs of this call records both machines
    assert harness.runs_environment() == (
        "commit 89ab; the tree when the study ended for the runs this call made; the 2 before them (read with "
        "--reuse): commit 0123abc; the machine of the runs"
    )
    harness.ARCHIVE.ran = False
    # an archive from before the record names no machine, not this one
    del harness.ARCHIVE.stored["_environment"]
    assert "not recorded" in harness.runs_environment() and "this machine" not in harness.runs_environment()
    assert harness.log_history(run) == [{"step": 1, "loss": 2.0}]
    assert harness.read_run_json(run / "late.json") == {"drawn": True}
    with pytest.raises(FileNotFoundError, match="nor in docs/experiments/runs/study.json.gz"):
        harness.read_run_json(run / "unread.json")  # only what the study read is kept
    out = reread(reuse=False)  # without --reuse the runs run again: nothing is read from the archive
    with pytest.raises(FileNotFoundError, match="run the study without --reuse"):
        harness.read_run_json(run / "results.json")


def test_the_overview_table_is_current_and_names_every_study():
    import overview

    assert overview.main(["--check"]) == 0  # docs/experiments/README.md holds the table the archives give
    studies = {p.name for p in (REPO / "docs" / "experiments").glob("*.md")} - {"README.md"}
    archived = {
        p.name.removesuffix(".json.gz") + ".md" for p in (REPO / "docs" / "experiments" / "runs").iterdir()
    }
    assert studies - archived == set()  # every study redraws from a clean clone with --reuse
    named = " ".join(
        c.doc if not isinstance(c, overview.Untested) else c.why + c.claim for c in overview.CLAIMS
    )
    assert {s for s in studies if s not in named} == set()  # a row for every study, tested or not


def test_make_experiments_runs_every_study():
    import re

    studies = {  # a study reads its command line through harness.experiment_args
        p.stem for p in (REPO / "experiments").glob("*.py") if "experiment_args(" in p.read_text()
    } - {"harness"}
    listed = re.search(r"STUDIES := ((?:[^\n]*\\\n)*[^\n]*)", (REPO / "Makefile").read_text()).group(1)
    assert set(listed.replace("\\", " ").split()) == studies


def test_every_run_of_the_gpu_plan_is_a_valid_configuration(capsys, tmp_path, monkeypatch):
    import gpu_plan

    from matrix_llm.modes.clip.command import CLIPMode
    from matrix_llm.modes.lm.command import LMMode
    from matrix_llm.modes.lm.eval_gsm8k import _gsm8k_parser
    from matrix_llm.modes.ssl.command import SSLMode

    monkeypatch.setattr(gpu_plan, "OUT", tmp_path)
    modes = {"sft": LMMode, "ssl": SSLMode, "clip": CLIPMode}
    seen = set()
    for study in gpu_plan.STUDIES:
        for arm, seed, argv, _ in study.runs():
            # parsed as the GPU machine would, less bf16 / tf32, which transformers refuses without a GPU
            _, _, training_args = modes[argv[0]]().parse([*argv[1:], "--bf16", "false", "--tf32", "false"])
            assert training_args.seed == seed and arm in study.arms
            seen.add((study.name, arm, seed))
            if study.evaluate:
                run_dir = Path(argv[argv.index("--output_dir") + 1])
                run_dir.mkdir(parents=True)  # the adapter the run saved
                parsed = _gsm8k_parser().parse_args(study.evaluation_argv(run_dir)[2:])
                assert parsed.adapter == str(run_dir) and parsed.output_dir == str(run_dir / "eval")
                assert parsed.backend == "vllm"
    assert len(seen) == sum(len(s.arms) * len(s.seeds) for s in gpu_plan.STUDIES)
    assert gpu_plan.main(["--dry-run", "--only", "llemma_gsm8k"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 * 10 and sum("recipes/llemma-7b/gsm8k/mce.yaml" in line for line in printed) == 5
    assert gpu_plan.main(["--list"]) == 0 and "total ~" in capsys.readouterr().out
    assert gpu_plan.main([]) == 2  # no CUDA here: refused before anything runs
    assert "needs one GPU" in capsys.readouterr().err


def test_the_gpu_plan_reads_finished_runs_and_compares_the_claim(tmp_path, monkeypatch, capsys):
    import gpu_plan

    monkeypatch.setattr(gpu_plan, "OUT", tmp_path)
    study = gpu_plan.Study(
        name="s",
        claim="c",
        command="sft",
        base=[],
        arms={"ce": [], "mce": []},
        metric="strict_accuracy",
        baseline="ce",
        claimed=0.031,
        hours=(1.0, "guess"),
        evaluation="eval/results.json",
        evaluate=["eval", "gsm8k", "--adapter", "RUN"],
    )
    for arm, seed, _, result in study.runs():  # finished: each run and its evaluation left their results
        result.parent.mkdir(parents=True)
        result.write_text("{}")
        accuracy = (0.70 if arm == "ce" else 0.74) + 0.002 * seed
        (result.parent / "eval").mkdir()
        (result.parent / "eval" / "results.json").write_text(
            json.dumps({"metrics": {"strict_accuracy": accuracy}})
        )
    summary = gpu_plan.run_study(study, dry_run=False)  # nothing runs: every result is there
    assert summary["values"]["mce"] == pytest.approx([0.742, 0.744, 0.746, 0.748, 0.75])
    c = summary["comparisons"]["mce"]
    assert c["effect"] == pytest.approx(0.04) and c["test"] == "Welch t" and c["verdict"] == "reproduced"
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["comparisons"]["mce"]["n"] == 5
    assert "s: mce vs ce, strict_accuracy: +0.040" in capsys.readouterr().out


def test_the_pixel_floor_fits_the_labelled_rows_the_classify_run_trains_on(monkeypatch):
    import few_labels
    from sklearn.linear_model import LogisticRegression

    from matrix_llm.data.images import load_idx_dataset
    from matrix_llm.data.labels import label_fraction_mask

    fitted = []
    fit = LogisticRegression.fit
    monkeypatch.setattr(
        LogisticRegression, "fit", lambda self, x, y: fitted.append(list(y)) or fit(self, x, y)
    )
    accuracy = few_labels.pixel_floor(0.05, seed=1, train_rows=400, test_rows=200)
    labels = load_idx_dataset(few_labels.FASHION, "train").select(range(400))["label"]
    keep = label_fraction_mask(labels, 0.05, seed=1)
    assert fitted == [[y for y, k in zip(labels, keep, strict=True) if k]]  # the run's 20 labelled rows
    assert 0.1 < accuracy < 1.0


def test_the_overview_reads_a_studys_archived_values_and_reads_claims_by_direction(tmp_path, monkeypatch):
    import gzip

    import harness
    import overview

    monkeypatch.setattr(overview, "DOCS", tmp_path)
    monkeypatch.setattr(harness, "RUNS", tmp_path / "runs")
    with pytest.raises(FileNotFoundError, match="s.json.gz: no archived summary"):
        overview.seed_values("s.md", "new", "acc")
    (tmp_path / "runs").mkdir()
    arms = {
        "base": {"acc": {"values": [0.19, 0.2, 0.21, 0.195, 0.205]}},
        "new": {"acc": {"values": [0.4901, 0.5, 0.51, 0.495, 0.505]}},
    }
    (tmp_path / "runs" / "s.json.gz").write_bytes(
        gzip.compress(json.dumps({"_summary": {"arms": arms}}).encode())
    )
    assert overview.seed_values("s.md", "new", "acc") == [0.4901, 0.5, 0.51, 0.495, 0.505]  # full precision
    with pytest.raises(KeyError, match="no arm 'old'"):
        overview.seed_values("s.md", "old", "acc")
    up = overview.row(overview.Comparison("c", "s.md", "acc", "new", "base", sign=1))  # 5 + 5: p >= 1/126
    down = overview.row(overview.Comparison("c", "s.md", "acc", "new", "base", sign=-1))
    assert "| +0.300 |" in up and up.endswith("| + | reproduced |")
    assert down.endswith("| − | contradicted |")
    reached = overview.row(overview.Comparison("c", "s.md", "acc", "new", reference=0.5))
    assert "one-sample t" in reached and "reached (within the CI)" in reached
    assert "not reached" in overview.row(overview.Comparison("c", "s.md", "acc", "base", reference=0.5))
    # a transition study: each seed's jump against its plateau's drift
    events = {
        "0": {"k": {"jump": -0.3, "drift": 0.1, "moves": True}},
        "1": {"k": {"jump": -0.05, "drift": 0.1, "moves": False}},
        "2": {"k": {"start": 1.0}},  # no jump in this seed
    }
    (tmp_path / "runs" / "g.json.gz").write_bytes(
        gzip.compress(json.dumps({"_summary": {"events": events}}).encode())
    )
    jump = overview.row(overview.Jump("c", "g.md", "k"))
    assert "| -0.175 |" in jump and "| 2 |" in jump and "in 1 of 2 seeds" in jump and "at most 0.100" in jump
    assert "no transition" in overview.row(overview.Jump("c", "none.md", "k"))
    # a 2 x 2 design's interaction: (a few - b few) - (a many - b many) = (0.5 - 0.2) - (0.4 - 0.3)
    levels = {
        level: {"arms": {arm: {"acc": {"values": [v - 0.01, v, v + 0.01]}} for arm, v in arms.items()}}
        for level, arms in {"few": {"a": 0.5, "b": 0.2}, "many": {"a": 0.4, "b": 0.3}}.items()
    }
    (tmp_path / "runs" / "i.json.gz").write_bytes(
        gzip.compress(json.dumps({"_summary": {"levels": levels}}).encode())
    )
    terms = (("few", "a", 1), ("few", "b", -1), ("many", "a", -1), ("many", "b", 1))
    interaction = overview.row(overview.Contrast("c", "i.md", "acc", terms, sign=1))
    assert "| +0.200 |" in interaction and "| 3 | Welch-Satterthwaite t of the contrast |" in interaction
    assert (
        "a (few) - b (few) - a (many) + b (many), acc" in interaction and "| + | reproduced |" in interaction
    )
    corrected = overview.row(overview.Contrast("c", "i.md", "acc", terms, sign=1, comparisons=4))
    values = [levels[lv]["arms"][a]["acc"]["values"] for lv, a, _ in terms]
    p = contrast(values, [1, -1, -1, 1], reason="")["p"]
    assert f"| {min(1.0, 4 * p):.2f} (4 arms) |" in corrected
    # the README's table: --check fails on a stale one, the plain call writes it between the markers
    monkeypatch.setattr(overview, "CLAIMS", [overview.Comparison("c", "s.md", "acc", "new", "base")])
    (tmp_path / "README.md").write_text(f"intro\n{overview.BEGIN}\n| old |\n{overview.END}\nafter\n")
    assert overview.main(["--check"]) == 1
    assert overview.main([]) == 0 and overview.main(["--check"]) == 0
    text = (tmp_path / "README.md").read_text()
    assert "| old |" not in text and "| c ([s](s.md): new vs base, acc)" in text and text.endswith("after\n")


@pytest.mark.slow
def test_clip_few_classes_experiment_smoke_run(tmp_path):
    summary = smoke_run("clip_few_classes", tmp_path)
    arms = {"infonce", "infonce, masked", "+ align from 125", "+ align from 0", "+ align from 0, masked"}
    assert set(summary["arms"]) == arms and set(summary["paired"]) == arms - {"infonce"}
    card = (tmp_path / "+ align from 0, masked" / "seed0" / "README.md").read_text()
    assert "| `clip_mask_same_captions` | True |" in card and "| `clip_alignment_weight` | 0.1 |" in card
    assert (tmp_path / "clip_few_classes.png").stat().st_size > 10_000
    results = json.loads((tmp_path / "infonce" / "seed1" / "results.json").read_text())
    assert (
        results["zeroshot_templates"] == 1 and results["zeroshot_classes"] == 24
    )  # "a {}" over the 24 names


FASHION = REPO.parent / "shared" / "data" / "fashion-mnist"


@pytest.mark.slow
@pytest.mark.skipif(
    not (FASHION / "t10k-images-idx3-ubyte.gz").is_file(), reason="../shared/data/fashion-mnist"
)
def test_clip_fashion_experiment_smoke_run(tmp_path):
    summary = smoke_run("clip_fashion", tmp_path)
    assert set(summary["arms"]) == {"infonce", "+ alignment", "infonce, masked"}
    assert (tmp_path / "clip_fashion.png").stat().st_size > 10_000
    results = json.loads((tmp_path / "+ alignment" / "seed0" / "results.json").read_text())
    assert (
        results["zeroshot_classes"] == 10 and results["zeroshot_templates"] == 3
    )  # the recipe's caption templates
    assert 0.0 <= results["zeroshot_top1_unseen_only"] <= 1.0
    evaluated = json.loads(
        (tmp_path / "+ alignment" / "seed0" / "eval" / "zeroshot" / "results.json").read_text()
    )
    assert evaluated["zeroshot_ausuc"] == results["zeroshot_ausuc"]  # `eval zeroshot` on the saved run agrees
    assert summary["arms"]["+ alignment"]["best_harmonic"]["values"][0] >= results["zeroshot_top1_harmonic"]
    card = (tmp_path / "+ alignment" / "seed0" / "README.md").read_text()
    assert "| `clip_alignment_weight` | 0.1 |" in card


@pytest.mark.slow
def test_clip_experiment_smoke_run(tmp_path):
    summary = smoke_run("clip_matrix", tmp_path)
    assert set(summary["arms"]) == {"infonce", "infonce + alignment"}
    assert len(summary["arms"]["infonce"]["zeroshot_top1"]["values"]) == 2
    assert (tmp_path / "clip_matrix.png").stat().st_size > 10_000
    assert (tmp_path / "infonce + alignment" / "seed1" / "results.json").is_file()


@pytest.mark.slow
def test_few_labels_experiment_smoke_run(tmp_path):
    """The 2 x 2 design's smoke run: both levels, the arms at each, the floors, the gate, the interaction, and the
    follow-up's extra seed for the primary's arms alone, with the primary also read over the first seeds."""
    import few_labels

    summary = smoke_run("few_labels", tmp_path)
    few, every = summary["levels"]["0.1"]["arms"], summary["levels"]["1.0"]["arms"]
    assert set(few) == {"ce", few_labels.PRIMARY, few_labels.NO_PSEUDO} and set(every) == {
        "ce",
        few_labels.PRIMARY,
    }
    assert len(few["ce"]["eval_accuracy"]["values"]) == 3 and len(summary["floors"]["0.1"]) == 3
    assert len(few[few_labels.PRIMARY]["eval_accuracy"]["values"]) == 3
    assert len(few[few_labels.NO_PSEUDO]["eval_accuracy"]["values"]) == 2
    assert summary["interactions"][few_labels.PRIMARY]["n"] == 3 and summary["primary_first"]["n"] == 2
    assert set(summary["gate"]) == {"0.1", "1.0"} and set(summary["interactions"]) == {few_labels.PRIMARY}
    assert summary["interactions"][few_labels.PRIMARY]["test"] == "Welch-Satterthwaite t of the contrast"
    assert (tmp_path / "few_labels.png").is_file()
    card = (tmp_path / "fraction0.1" / "ce" / "seed1" / "README.md").read_text()
    assert "0.1 (seed 1), 16 labelled rows in every training batch" in card
    # every run starts from its own seed's SimCLR backbone, pretrained by the study itself
    assert (tmp_path / "pretrain" / "simclr" / "seed1" / "backbone" / "model.safetensors").is_file()
    for level, seed in (("0.1", 0), ("1", 1)):
        card = (tmp_path / f"fraction{level}" / few_labels.PRIMARY / f"seed{seed}" / "README.md").read_text()
        assert (
            f"fine-tuned version of `{tmp_path / 'pretrain' / 'simclr' / f'seed{seed}' / 'backbone'}`" in card
        )
    # the whole pool: the primary's four arms over the registered seeds, from backbones pretrained on the pool
    pool = {level: summary["levels"][f"pool {level}"]["arms"] for level in ("0.1", "1.0")}
    assert all(set(arms) == {"ce", few_labels.PRIMARY} for arms in pool.values())
    assert all(len(arms["ce"]["eval_accuracy"]["values"]) == 2 for arms in pool.values())
    assert set(summary["pool"]["gate"]) == {"0.1", "1.0"}
    # each seed's floor fits that seed's labelled rows of the pool (all of them at 100 %)
    assert summary["floors"]["pool 0.1"] == [few_labels.pixel_floor(0.1, s, 400, 100) for s in (0, 1)]
    assert summary["floors"]["pool 1.0"] == [few_labels.pixel_floor(1.0, s, 400, 100) for s in (0, 1)]
    assert (
        summary["pool"]["interactions"][few_labels.PRIMARY]["n"] == 2
        and "primary_first" not in summary["pool"]
    )
    for level, seed in (("0.1", 0), ("1", 1)):
        card = (tmp_path / "pool" / f"fraction{level}" / "ce" / f"seed{seed}" / "README.md").read_text()
        backbone = tmp_path / "pool" / "pretrain" / "simclr" / f"seed{seed}" / "backbone"
        assert f"fine-tuned version of `{backbone}`" in card
    steps = {
        folder: json.loads(
            (tmp_path / folder / "fraction1" / "ce" / "seed0" / "trainer_state.json").read_text()
        )
        for folder in ("pool", ".")
    }
    # 400 and 300 rows in batches of 32
    assert steps["pool"]["max_steps"] == 13 and steps["."]["max_steps"] == 10


def test_few_labels_reads_the_interaction_only_where_ce_beats_the_pixel_floor():
    """The registered analysis on made-up accuracies: the gain with few labels minus the gain with all, read only
    where CE beats the raw-pixel floor in every seed."""
    import few_labels

    def arms(ce: float, gain: float) -> dict:
        spread = [0.0, 0.004, -0.004, 0.002, -0.002]
        return {
            "ce": [ce + d for d in spread],
            few_labels.PRIMARY: [ce + gain + d for d in reversed(spread)],
            few_labels.NO_PSEUDO: [ce + d for d in spread],
        }

    accuracy = {0.1: arms(0.80, 0.05), 1.0: arms(0.88, 0.01)}
    del accuracy[1.0][few_labels.NO_PSEUDO]
    passing = {0.1: [0.79] * 5, 1.0: [0.83] * 5}
    result = few_labels.analyse(accuracy, passing)
    interaction = result["interactions"][few_labels.PRIMARY]
    assert interaction["effect"] == pytest.approx(0.04) and result["verdict"] == "reproduced"
    assert result["pseudo_labels"]["effect"] == pytest.approx(0.05)
    swapped = {0.1: {**accuracy[1.0], few_labels.NO_PSEUDO: accuracy[1.0]["ce"]}, 1.0: accuracy[0.1]}
    reversed_levels = few_labels.analyse(
        swapped, {0.1: [0.7] * 5, 1.0: [0.7] * 5}
    )  # the gain with all labels
    assert reversed_levels["verdict"] == "contradicted"
    assert "primary_first" not in result  # no follow-up seeds: one reading
    extended = {
        level: {
            a: v + [x + 0.03 * (level == 0.1 and a == few_labels.PRIMARY) for x in v[:3]]
            if a in ("ce", few_labels.PRIMARY)
            else v
            for a, v in arms_.items()
        }
        for level, arms_ in accuracy.items()
    }  # 3 more seeds of the primary's arms, a larger gain in them; the first 5 seeds' reading is kept beside
    both = few_labels.analyse(extended, {0.1: [0.79] * 8, 1.0: [0.83] * 8}, first=5)
    assert both["primary_first"] == interaction and both["interactions"][few_labels.PRIMARY]["n"] == 8
    assert both["interactions"][few_labels.PRIMARY]["effect"] != pytest.approx(interaction["effect"])
    one_seed_below = {**passing, 0.1: [0.79, 0.79, 0.79, 0.79, 0.81]}  # CE's last seed is 0.798
    blocked = few_labels.analyse(accuracy, one_seed_below)
    assert blocked["gate"] == {0.1: False, 1.0: True}
    assert blocked["verdict"].startswith("not testable as run") and "at 10 %" in blocked["verdict"]


@pytest.mark.slow
def test_clip_classes_experiment_smoke_run(tmp_path):
    """The 2 x 2 CLIP design's smoke run: both caption levels, both arms, the interaction and each level's gain."""
    summary = smoke_run("clip_classes", tmp_path)
    assert set(summary["levels"]) == {"few classes", "many classes"}
    for level in summary["levels"].values():
        assert set(level["arms"]) == {"infonce", "+ align from 0"}
        assert len(level["arms"]["infonce"]["zeroshot_top1"]["values"]) == 2
    assert summary["interaction"]["test"] == "Welch-Satterthwaite t of the contrast"
    assert set(summary["gains"]) == {"few classes", "many classes"}
    assert (tmp_path / "clip_classes.png").is_file()
    for folder, data in (("few_classes", "scenes-classes"), ("many_classes", "scenes")):
        argv = json.loads((tmp_path / folder / "infonce" / "seed1" / "results.json").read_text())["argv"]
        assert argv[argv.index("--dataset_name") + 1] == argv[argv.index("--zeroshot_dataset") + 1] == data
        for arm in ("infonce", "+ align from 0"):  # collapsed: the run's own last image entropy below 0.1
            for seed, flag in zip(
                (0, 1),
                summary["levels"][folder.replace("_", " ")]["arms"][arm]["collapsed"]["values"],
                strict=True,
            ):
                state = json.loads(
                    (tmp_path / folder / arm / f"seed{seed}" / "trainer_state.json").read_text()
                )
                entropy = [h["image_entropy"] for h in state["log_history"] if "image_entropy" in h]
                assert flag == float(entropy[-1] < 0.1)


def test_clip_classes_reads_the_alignments_gain_with_few_classes_minus_with_many():
    import clip_classes

    spread = [0.0, 0.01, -0.01, 0.02, -0.02, 0.005, -0.005, 0.015, -0.015, 0.0]

    def arm(mean: float) -> list[float]:
        return [mean + d for d in spread]

    top1 = {
        "few classes": {"infonce": arm(0.10), "+ align from 0": arm(0.12)},
        "many classes": {"infonce": arm(0.40), "+ align from 0": arm(0.30)},  # it hurts with many classes
    }
    result = clip_classes.analyse(top1)
    assert result["interaction"]["effect"] == pytest.approx(0.12) and result["verdict"] == "reproduced"
    assert result["gains"]["few classes"]["effect"] == pytest.approx(0.02)
    assert result["gains"]["many classes"]["effect"] == pytest.approx(-0.10)
    swapped = clip_classes.analyse({"few classes": top1["many classes"], "many classes": top1["few classes"]})
    assert swapped["verdict"] == "contradicted"


def first_step(run: Path) -> tuple[list[str], dict]:
    """A smoke run's command line and its first logged training step."""
    argv = json.loads((run / "results.json").read_text())["argv"]
    log = json.loads((run / "trainer_state.json").read_text())["log_history"]
    return argv, next(h for h in log if "loss" in h)


@pytest.mark.slow
def test_ssl_methods_experiment_smoke_run(tmp_path):
    """Five methods on the tiny ResNet: each run's method, the effective-rank curves, the registered comparisons."""
    import ssl_methods

    summary = smoke_run("ssl_methods", tmp_path)
    assert set(summary["arms"]) == set(ssl_methods.ARMS)
    assert len(summary["arms"]["simclr"]["probe_trained"]["values"]) == 2
    assert set(summary["registered"]) == {f"{a} - {b}" for a, b, _ in ssl_methods.REGISTERED}
    assert all(len(curves) == 2 and curves[0][0] for curves in summary["effective_rank"].values())
    first_losses = set()
    for arm, flags in ssl_methods.ARMS.items():  # each arm trains its own loss on the ResNet
        argv, first = first_step(tmp_path / arm / "seed0")
        assert argv[argv.index("--model_name_or_path") + 1] == "tiny-resnet"
        assert argv[argv.index("--ssl_method") + 1] == flags[1]
        first_losses.add(round(first["loss"], 3))
    assert len(first_losses) == len(ssl_methods.ARMS)
    assert (tmp_path / "ssl_methods.png").stat().st_size > 10_000
    run = json.loads((tmp_path / "matrix_ssl exact" / "seed1" / "matrix_llm_run.json").read_text())
    assert run["objective"] == "ssl"


@pytest.mark.slow
def test_ssl_ablation_experiment_smoke_run(tmp_path):
    """Five arms on the tiny ResNet: each run's method settings, the effective-rank curves, the comparisons."""
    summary = smoke_run("ssl_ablation", tmp_path)
    assert list(summary["arms"]) == ["simclr", "exact γ=1", "exact γ=0", "taylor order 4", "taylor order 2"]
    first_losses = set()
    for arm in summary["arms"]:  # each arm trains its own loss: γ and the Taylor order change its value
        argv, first = first_step(tmp_path / arm / "seed0")
        assert argv[argv.index("--model_name_or_path") + 1] == "tiny-resnet"
        first_losses.add(round(first["loss"], 3))
    assert len(first_losses) == len(summary["arms"])
    for curves in summary["effective_rank"].values():  # a training curve per seed, one point per step here
        assert [len(steps) for steps, _ in curves] == [2, 2]
    assert all(v["eval_effective_rank"]["mean"] > 1 for v in summary["arms"].values())
    assert set(summary["registered"]) == {
        "exact γ=1 - exact γ=0",
        "taylor order 4 - taylor order 2",
        "exact γ=1 - taylor order 4",
        "exact γ=1 - simclr",
    }
    assert (tmp_path / "ssl_ablation.png").stat().st_size > 10_000


def test_ssl_methods_reads_each_registered_comparison_beside_its_claim():
    """Matrix-SSL's two presets against SimCLR beside +4.6 points, against MEC beside +0.5, MEC against SimCLR
    beside +4.1; Barlow Twins is measured, not compared."""
    import ssl_methods

    probe = {
        "simclr": [0.83, 0.84, 0.835],
        "mec": [0.82, 0.83, 0.825],
        "matrix_ssl exact": [0.81, 0.82, 0.815],
        "matrix_ssl official": [0.88, 0.89, 0.885],
        "barlow_twins": [0.50, 0.51, 0.505],
    }
    result = probe_comparisons(probe, ssl_methods.REGISTERED, [0.811] * 3)
    claims = {name: (round(c["effect"], 3), c["claimed"]) for name, c in result["registered"].items()}
    assert claims == {
        "matrix_ssl exact - simclr": (-0.02, 0.046),
        "matrix_ssl official - simclr": (0.05, 0.046),
        "matrix_ssl exact - mec": (-0.01, 0.005),
        "mec - simclr": (-0.01, 0.041),
    }
    assert all(c["comparisons"] == 4 for c in result["registered"].values())
    assert result["registered"]["matrix_ssl exact - simclr"]["verdict"] == "not reproduced"
    assert "barlow_twins" not in result["above_pixels"] and "simclr" in result["above_pixels"]


def test_ssl_ablation_compares_the_registered_arms_and_checks_the_regime_against_pixels():
    import ssl_ablation

    probe = {
        "simclr": [0.83, 0.84],
        "exact γ=1": [0.82, 0.81],
        "exact γ=0": [0.78, 0.79],
        "taylor order 4": [0.80, 0.80],
        "taylor order 2": [0.70, 0.72],
    }
    result = probe_comparisons(probe, ssl_ablation.REGISTERED, [0.811, 0.811])
    effects = {name: round(c["effect"], 3) for name, c in result["registered"].items()}
    assert effects == {
        "exact γ=1 - exact γ=0": 0.03,
        "taylor order 4 - taylor order 2": 0.09,
        "exact γ=1 - taylor order 4": 0.015,
        "exact γ=1 - simclr": -0.02,
    }
    assert result["registered"]["exact γ=1 - exact γ=0"]["claimed"] == 0.005
    assert result["registered"]["exact γ=1 - simclr"]["claimed"] == 0.046
    assert all(c["comparisons"] == 4 for c in result["registered"].values())
    assert round(result["regime"]["effect"], 3) == 0.024
    assert result["above_pixels"] == ["simclr", "exact γ=1"]


@pytest.mark.slow
def test_ssl_mae_experiment_smoke_run(tmp_path):
    """Three masked autoencoders on the tiny ViT-MAE and SimCLR, each with its own loss; the class token's curves."""
    summary = smoke_run("ssl_mae", tmp_path)
    assert list(summary["arms"]) == ["mae", "m-mae", "u-mae", "simclr"]
    first = {}
    for arm in summary["arms"]:
        argv, first[arm] = first_step(tmp_path / arm / "seed0")
        assert argv[argv.index("--model_name_or_path") + 1] == "tiny-vit"
    # MAE trains the reconstruction alone; M-MAE subtracts 0.01 TCR; U-MAE adds its (small, positive) uniformity
    reconstruction = first["mae"]["loss"]
    assert first["m-mae"]["loss"] == pytest.approx(reconstruction - 0.01 * first["m-mae"]["tcr"], rel=1e-4)
    assert reconstruction < first["u-mae"]["loss"] < reconstruction + 0.01
    for key in ("matrix_entropy", "effective_rank"):
        assert [len(steps) for steps, _ in summary["curves"][key]["m-mae"]] == [2, 2]
    assert len(summary["arms"]["simclr"]["probe_trained"]["values"]) == 2
    assert all(v["eval_effective_rank"]["mean"] > 1 for v in summary["arms"].values())
    assert set(summary["registered"]) == {"m-mae - mae", "m-mae - u-mae", "u-mae - mae"}
    assert (tmp_path / "ssl_mae.png").stat().st_size > 10_000


def test_ssl_mae_compares_the_registered_arms_and_checks_the_regime_against_pixels():
    import ssl_mae

    probe = {"mae": [0.70, 0.72], "m-mae": [0.75, 0.76], "u-mae": [0.71, 0.74], "simclr": [0.83, 0.82]}
    result = probe_comparisons(probe, ssl_mae.REGISTERED, [0.811, 0.811])
    effects = {name: round(c["effect"], 3) for name, c in result["registered"].items()}
    assert effects == {"m-mae - mae": 0.045, "m-mae - u-mae": 0.03, "u-mae - mae": 0.015}
    assert [c["claimed"] for c in result["registered"].values()] == [0.039, None, None]
    assert all(c["comparisons"] == 3 and c["test"] == "Welch t" for c in result["registered"].values())
    assert round(result["regime"]["effect"], 3) == 0.014
    assert result["above_pixels"] == ["simclr"]


@pytest.mark.slow
def test_temperature_experiment_smoke_run(tmp_path):
    summary = smoke_run("temperature", tmp_path)
    assert set(summary["arms"]) == {"τ=0.01", "τ=0.03", "τ=0.07", "τ=0.2", "τ=0.5"}
    for metric in ("zeroshot_top1", "zeroshot_within_class_entropy", "zeroshot_nc1"):
        c = summary["rank_correlation"][metric]
        assert (
            c["n"] == 10 and len(c["per_seed"]) == 2 and not abs(c["rho"]) > 1
        )  # NaN: constant at this size
    assert "Spearman" in (tmp_path / "temperature.md").read_text()
    assert (tmp_path / "temperature.png").stat().st_size > 10_000


@pytest.mark.slow
def test_neural_collapse_experiment_smoke_run(tmp_path):
    arms = smoke_run("neural_collapse", tmp_path)["arms"]
    assert len(arms["ce"]["probe_mir"]["values"]) == 2 and 0.0 < arms["ce"]["probe_mir"]["mean"] < 1.0
    assert (tmp_path / "neural_collapse.png").stat().st_size > 10_000
    doc = (tmp_path / "neural_collapse.md").read_text()
    # measured from initialisation (the step-0 probe) to the collapse values of this probe's own code
    assert "| probe_mir | 0.952 / 0.95" in doc and "| probe_nc1 | 0.000 / 0.000 |" in doc
    assert "HDR at step 0 is" in doc and "**Runs.** commit " in doc


@pytest.mark.slow
def test_lmc_experiment_smoke_run(tmp_path):
    summary = smoke_run("lmc", tmp_path)
    assert set(summary) == {"lr 1e-4", "lr 3e-3"} and len(summary["lr 3e-3"]["accuracy_barrier"]) == 1
    path = json.loads((tmp_path / "lmc" / "lr 3e-3" / "pair12" / "lmc.json").read_text())["path"]
    assert [q["omega"] for q in path][:2] == [0.0, 0.1] and (tmp_path / "lmc.png").is_file()


@pytest.mark.slow
def test_grokking_experiment_smoke_run(tmp_path):
    summary = smoke_run("grokking", tmp_path)
    assert len(summary["arms"]["ce"]["eval_accuracy"]["values"]) == 2 and set(summary["events"]) == {"0", "1"}
    assert (
        "start" in summary["events"]["0"]["probe_layer0_matrix_entropy"]
        and (tmp_path / "grokking.png").is_file()
    )


def test_grokking_events_compare_the_jump_with_the_plateaus_drift():
    import grokking

    log = []
    for step in range(250, 4001, 250):
        fitted = step >= 500
        held_out = 0.01 if step <= 2000 else 0.5 if step == 2250 else 0.95
        entropy = (
            3.0 + 0.01 * (step % 500 == 0) - (0.3 if step >= 2250 else 0.0)
        )  # flat, then falls at the jump
        log.append({"step": step, "loss": 1.0, "accuracy": 1.0 if fitted else 0.5})
        log.append({"step": step, "eval_loss": 1.0, "eval_accuracy": held_out})
        log.append({"step": step, "eval_probe_layer0_matrix_entropy": entropy, "eval_probe_mir": 0.4})
    keys = ("eval_probe_layer0_matrix_entropy", "eval_probe_mir")
    e = grokking.events(log, keys)
    assert (e["fit"], e["jump_start"], e["grok"], e["delay"]) == (500, 2000, 2500, 2000)
    entropy, mir = e[keys[0]], e[keys[1]]
    assert entropy["jump"] == pytest.approx(-0.3) and entropy["drift"] == pytest.approx(0.01)
    assert entropy["moves"] and not mir["moves"]  # MIR stays: no more than its (zero) drift
    assert "jump" not in grokking.events(log[: 3 * 6], keys)[keys[0]]  # no generalisation yet: no jump


@pytest.mark.slow
def test_lm_gsm8k_lr_experiment_smoke_run(tmp_path):
    summary = smoke_run("lm_gsm8k_lr", tmp_path)
    earlier = "ce lr 3e-3 (lm_gsm8k.md)"  # the third CE rate: lm_gsm8k.md's runs of the same command
    assert summary["best_ce"] == "ce lr 3e-4" and set(summary["comparisons"]) == {"ce lr 3e-4", earlier}
    c = summary["comparisons"]["ce lr 3e-4"]
    head, ce = (summary["arms"][a]["lm_loss"]["values"] for a in ("head 0.1 lr 3e-3", "ce lr 3e-4"))
    assert c["test"] == "Welch t" and c["effect"] == pytest.approx(sum(head) / 2 - sum(ce) / 2)
    import overview

    ce_3e3 = overview.seed_values("lm_gsm8k.md", "ce", "lm_loss")  # lm_gsm8k.md's CE per seed
    assert summary["lm_gsm8k"]["ce"] == ce_3e3 and len(ce_3e3) == 3
    assert summary["comparisons"][earlier]["effect"] == pytest.approx(sum(head) / 2 - sum(ce_3e3) / 3)
    assert (tmp_path / "lm_gsm8k_lr.png").is_file()


@pytest.mark.slow
def test_lm_mce_experiment_smoke_run(tmp_path):
    summary = smoke_run("lm_mce", tmp_path)
    assert (
        set(summary["arms"]) == {"ce", "head 0.1"}
        and len(summary["paired"]["head 0.1"]["strict"]["values"]) == 2
    )
    assert (tmp_path / "lm_mce.png").is_file() and (
        tmp_path / "ce" / "seed1" / "eval" / "results.json"
    ).is_file()


@pytest.mark.slow
@pytest.mark.skipif(
    not (REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl").is_file(), reason="../shared/data/gsm8k"
)
def test_lm_gsm8k_experiment_smoke_run(tmp_path):
    summary = smoke_run("lm_gsm8k", tmp_path)
    assert set(summary["arms"]) == {"ce", "head 0.1"} and set(summary["paired"]) == {"head 0.1"}
    results = json.loads((tmp_path / "head 0.1" / "seed0" / "all_results.json").read_text())
    assert results["eval_lm_loss"] == summary["arms"]["head 0.1"]["lm_loss"]["values"][0] > 0
    assert 0.0 <= results["eval_gsm8k_strict"] <= 1.0 and (tmp_path / "lm_gsm8k.png").is_file()
    run = json.loads((tmp_path / "ce" / "seed0" / "matrix_llm_run.json").read_text())
    assert (
        run["objective"] == "lm"
        and json.loads((tmp_path / "ce" / "seed0" / "config.json").read_text())["vocab_size"] >= 2048
    )

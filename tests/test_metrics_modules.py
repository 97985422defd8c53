"""matrix_llm's evaluate modules (matrix_llm.metrics) load offline with `evaluate.load` and compute what the library
computes.

.venv/bin/python -m pytest tests/test_metrics_modules.py -q
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from matrix_llm.metrics import MODULES, module_path


@pytest.fixture(scope="module")
def evaluate_lib():
    return pytest.importorskip("evaluate")


def test_the_gsm8k_metric_is_the_scorer_of_eval_gsm8k(evaluate_lib, gsm8k_dir):
    """On real GSM8K references and completions of every kind (right, wrong, `The answer is`, no number, a
    differently spelled number), the module's four matches and no-answer rate equal `score_samples`' (the
    scorer of `matrix-llm eval gsm8k`), for both strict filters. Mutation caught: the module scoring the numeric
    match as lm-eval's."""
    from matrix_llm.data.gsm8k import reference_answer
    from matrix_llm.modes.lm.evaluate import score_samples

    rows = [json.loads(line) for line in (gsm8k_dir / "test.jsonl").read_text().splitlines()[:40]]
    predictions = []
    for i, row in enumerate(rows):
        number = reference_answer(row["answer"])
        predictions.append(
            [
                row["answer"],  # the reference solution itself
                f"Let me see.\n#### {int(number.replace(',', '')) + 1}",  # wrong
                f"So the result is {number}. The answer is {number}.",  # cot style
                "I do not know.",  # no number
                f"#### {number}.00",  # the same number, spelt differently
            ][i % 5]
        )
    metric = evaluate_lib.load(module_path("gsm8k"))
    for strict_mode in ("strict", "cot"):
        got = metric.compute(
            predictions=predictions, references=[r["answer"] for r in rows], strict_mode=strict_mode
        )
        samples = [
            {"completion": p, "reference": r["answer"], "strict_mode": strict_mode}
            for p, r in zip(predictions, rows, strict=True)
        ]
        want = score_samples(samples, n_boot=10)
        assert got == {
            "strict_match": want["strict_accuracy"],
            "flexible_match": want["flexible_accuracy"],
            "strict_match_numeric": want["strict_accuracy_numeric"],
            "flexible_match_numeric": want["flexible_accuracy_numeric"],
            "no_answer_rate": want["no_answer_rate"],
        }
        assert 0 < got["strict_match"] < 1 and 0 < got["no_answer_rate"] < 1


def test_the_matrix_entropy_measurement_is_the_logged_one(evaluate_lib):
    """Closed forms (n orthogonal rows: log n, rank n; parallel rows: 0, rank 1) and a random batch equal to
    `entropy_erank`, what training logs as `matrix_entropy` / `effective_rank`."""
    from matrix_llm.features.diagnostics import entropy_erank

    measurement = evaluate_lib.load(module_path("matrix_entropy"), module_type="measurement")
    got = measurement.compute(embeddings=torch.eye(4).tolist())
    assert got["matrix_entropy"] == pytest.approx(math.log(4)) and got["effective_rank"] == pytest.approx(4)
    got = measurement.compute(embeddings=[[1.0, 2.0, 3.0]] * 5)
    assert got["matrix_entropy"] == pytest.approx(0, abs=1e-9) and got["effective_rank"] == pytest.approx(1)
    z = torch.randn(32, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    entropy, erank = entropy_erank(z)
    got = measurement.compute(embeddings=z.tolist())
    assert got == pytest.approx({"matrix_entropy": float(entropy), "effective_rank": float(erank)}, rel=1e-12)


def test_each_module_says_what_it_computes(evaluate_lib):
    """Each module has its model-card-style description, inputs and citation."""
    for name in MODULES:
        kind = "measurement" if name == "matrix_entropy" else "metric"
        module = evaluate_lib.load(module_path(name), module_type=kind)
        assert module.description.strip() and module.citation.strip() and "Args:" in module.inputs_description
    with pytest.raises(ValueError, match="expected one of"):
        module_path("bleu")

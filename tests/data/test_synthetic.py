"""Synthetic GSM8K-format problems (matrix_llm/data/synthetic.py).

Run: .venv/bin/python -m pytest tests/data/test_synthetic.py -q
"""

from __future__ import annotations

import re

import pytest

from matrix_llm.data.gsm8k import extract_answer
from matrix_llm.data.synthetic import FAMILIES, generate_problems, problem_split, synthetic_dataset

_CALC = re.compile(r"(\d+) ([-+*/]) (\d+) = (?:<<\d+[-+*/]\d+=\d+>>)?(\d+)")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}


def _check(problem: dict[str, str]) -> int:
    """Verify the worked steps; return the number of calculation steps."""
    lines = problem["answer"].split("\n")
    assert lines[-1].startswith("#### ")
    value = extract_answer(problem["answer"], mode="strict")
    assert value is not None and value.isdigit(), problem  # a non-negative integer
    calcs = [_CALC.search(line) for line in lines[:-1]]
    assert all(calcs), problem
    for m in calcs:
        a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
        assert _OPS[op](a, b) == c and c >= 0, problem
        if op == "/":
            assert a % b == 0, problem
    assert int(calcs[-1][4]) == int(value), problem  # the last step is the answer
    return len(calcs)


def test_thousands_of_problems_extract_to_the_computed_answer():
    problems = generate_problems(3000, seed=0, steps=(1, 2, 3))
    assert len(problems) == 3000 and len({p["question"] for p in problems}) == 3000
    counts = {s: 0 for s in (1, 2, 3)}
    for p in problems:
        counts[_check(p)] += 1
    assert all(c > 500 for c in counts.values()), counts


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_every_family_and_step_count(family, steps):
    for p in generate_problems(40, seed=steps, steps=(steps,), families=[family]):
        assert _check(p) == steps


def test_numbers_stay_small():
    for p in generate_problems(1000, seed=1, steps=(1, 2)):
        assert int(extract_answer(p["answer"])) <= 1000
        assert max(int(x) for x in re.findall(r"\d+", p["question"])) <= 200
        assert len(p["answer"]) < 200


def test_deterministic_for_a_seed():
    assert generate_problems(50, seed=7) == generate_problems(50, seed=7)
    assert generate_problems(50, seed=7) != generate_problems(50, seed=8)


def test_train_and_test_splits_are_disjoint_by_construction():
    train = generate_problems(2000, seed=0, split="train")
    test = generate_problems(300, seed=0, split="test")  # same seed on purpose
    assert not {p["question"] for p in train} & {p["question"] for p in test}
    assert all(problem_split(p["question"]) == "test" for p in test)


def test_annotations_are_gsm8k_calculator_style():
    p = generate_problems(1, seed=0, steps=(1,), annotations=True)[0]
    assert re.search(r"<<\d+[-+*/]\d+=\d+>>\d+", p["answer"])
    _check(p)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="steps"):
        generate_problems(1, steps=(4,))
    with pytest.raises(ValueError, match="families"):
        generate_problems(1, families=["algebra"])
    with pytest.raises(ValueError, match="split"):
        generate_problems(1, split="validation")
    with pytest.raises(ValueError, match="distinct problems"):  # the space of 1-step travel problems is small
        generate_problems(5000, steps=(1,), families=["travel"], max_value=3)


def test_synthetic_dataset():
    ds = synthetic_dataset(20, seed=0)
    assert ds.column_names == ["question", "answer"] and len(ds) == 20
    assert ds[0] == generate_problems(20, seed=0, split="train")[0]

"""Synthetic GSM8K-format arithmetic word problems: the data of the embedded, offline default.

Each problem is a short word problem from one of five families (``collect``, ``shopping``, ``sharing``,
``ages``, ``travel``) with 1 to 3 calculation steps on small integers, a worked solution with one line per
step and a final ``#### N`` line, exactly like GSM8K's references::

    >>> generate_problems(1, seed=3, steps=(2,))[0]
    {'question': 'Lily has 38 dollars. She buys 3 cookies for 2 dollars each. How many dollars does Lily have left?',
     'answer': 'The cookies cost 3 * 2 = 6 dollars.\\nLily has 38 - 6 = 32 dollars left.\\n#### 32'}

Design for learnability by a tiny model: a small fixed vocabulary (8 names, 8 items, 4 vehicles), one phrasing
per step kind, inputs in ``[2, max_value]`` (factors in ``[2, 9]``), every intermediate and final answer a
non-negative integer, and short answers. GSM8K's calculator annotations (``<<12+35=47>>``) are optional
(``annotations=True``).

Determinism and splits: the problems depend only on ``(n, seed, steps, families, max_value, annotations,
split)``. A problem's split is a function of its question text (an MD5 hash bucket: ``test_fraction`` of the
buckets are "test"), so ``split="train"`` and ``split="test"`` are disjoint *by construction*, whatever the
seeds; within one call, problems are de-duplicated by question.

Learnability, measured (CPU, 1 contended thread, 0.76M-parameter Llama from ``matrix_llm.models.tiny``, ``qa``
template, batch 32, lr 3e-3, 3 minutes = ~300 steps; ~53 tokens per example, ~20 of them completion):
1-step problems reach 8 % strict accuracy with ``max_value=50`` and 20 % with ``max_value=12``; the outputs
already have the right shape (worked line, ``#### N``, EOS), the arithmetic is what needs more steps. Lower
``max_value`` for a faster demo.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import Dataset

__all__ = ["FAMILIES", "generate_problems", "problem_split", "synthetic_dataset"]

_NAMES = (
    ("Tom", "He"),
    ("Sara", "She"),
    ("Ben", "He"),
    ("Anna", "She"),
    ("Sam", "He"),
    ("Lily", "She"),
    ("Max", "He"),
    ("Emma", "She"),
)
_ITEMS = ("apple", "pen", "book", "card", "ball", "egg", "toy", "cookie")
_VEHICLES = ("car", "bike", "bus", "train")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}


class _Writer:
    """Builds the worked steps; checks every step is a non-negative integer operation."""

    def __init__(self, annotations: bool):
        self.annotations = annotations
        self.lines: list[str] = []

    def calc(self, a: int, op: str, b: int) -> tuple[str, int]:
        if op == "/" and (b == 0 or a % b):
            raise AssertionError(f"inexact division {a} / {b}")
        c = _OPS[op](a, b)
        if c < 0:
            raise AssertionError(f"negative intermediate {a} {op} {b} = {c}")
        expr = f"{a} {op} {b} = "
        expr += f"<<{a}{op}{b}={c}>>{c}" if self.annotations else str(c)
        return expr, c

    def line(self, text: str) -> None:
        self.lines.append(text)

    def answer(self, value: int) -> str:
        return "\n".join([*self.lines, f"#### {value}"])


def _people(rng: random.Random, k: int) -> list[tuple[str, str]]:
    return rng.sample(_NAMES, k)


def _collect(rng: random.Random, steps: int, w: _Writer, hi: int) -> tuple[str, int]:
    (name, he), (other, _) = _people(rng, 2)
    item = rng.choice(_ITEMS) + "s"
    x = rng.randint(2, hi)
    sentences = [f"{name} has {x} {item}."]
    for i in range(steps):
        subject = f"Then {he.lower()}" if i else he
        if x > 2 and rng.random() < 0.5:
            b = rng.randint(1, x - 2)
            sentences.append(f"{subject} gives {b} {item} to {other}.")
            expr, x = w.calc(x, "-", b)
        else:
            b = rng.randint(2, hi)
            sentences.append(f"{subject} buys {b} more {item}.")
            expr, x = w.calc(x, "+", b)
        w.line(f"{name} has {expr} {item}.")
    sentences.append(f"How many {item} does {name} have now?")
    return " ".join(sentences), x


def _shopping(rng: random.Random, steps: int, w: _Writer, hi: int) -> tuple[str, int]:
    ((name, he),) = _people(rng, 1)
    item, item2 = (s + "s" for s in rng.sample(_ITEMS, 2))
    a, p = rng.randint(2, 9), rng.randint(2, 9)
    if steps == 1:
        q = f"{name} buys {a} {item}. Each one costs {p} dollars. How many dollars does {name} spend?"
        expr, c = w.calc(a, "*", p)
        w.line(f"{name} spends {expr} dollars.")
        return q, c
    if steps == 2:
        money = a * p + rng.randint(2, hi)
        q = (
            f"{name} has {money} dollars. {he} buys {a} {item} for {p} dollars each. "
            f"How many dollars does {name} have left?"
        )
        expr, c = w.calc(a, "*", p)
        w.line(f"The {item} cost {expr} dollars.")
        expr, r = w.calc(money, "-", c)
        w.line(f"{name} has {expr} dollars left.")
        return q, r
    b, p2 = rng.randint(2, 9), rng.randint(2, 9)
    q = (
        f"{name} buys {a} {item} for {p} dollars each and {b} {item2} for {p2} dollars each. "
        f"How many dollars does {name} spend?"
    )
    expr, c1 = w.calc(a, "*", p)
    w.line(f"The {item} cost {expr} dollars.")
    expr, c2 = w.calc(b, "*", p2)
    w.line(f"The {item2} cost {expr} dollars.")
    expr, c = w.calc(c1, "+", c2)
    w.line(f"{name} spends {expr} dollars.")
    return q, c


def _sharing(rng: random.Random, steps: int, w: _Writer, hi: int) -> tuple[str, int]:
    (name, he), (other, _) = _people(rng, 2)
    item = rng.choice(_ITEMS) + "s"
    k, each = rng.randint(2, 9), rng.randint(2, 9)
    total = k * each
    ask = f"How many {item} does each friend get?"
    share = f"shares them equally among {k} friends."
    if steps == 1:
        q = f"{name} has {total} {item}. {he} {share} {ask}"
        expr, e = w.calc(total, "/", k)
        w.line(f"Each friend gets {expr} {item}.")
        return q, e
    if steps == 2:
        a = rng.randint(1, total - 1)
        b = total - a
        q = f"{name} has {a} {item} and buys {b} more. {he} {share} {ask}"
        expr, t = w.calc(a, "+", b)
        w.line(f"{name} has {expr} {item}.")
        expr, e = w.calc(t, "/", k)
        w.line(f"Each friend gets {expr} {item}.")
        return q, e
    d = rng.randint(1, min(hi, 20))
    t = total + d
    a = rng.randint(1, t - 1)
    b = t - a
    q = (
        f"{name} has {a} {item} and buys {b} more. {he} gives {d} {item} to {other} and "
        f"shares the rest equally among {k} friends. {ask}"
    )
    expr, t = w.calc(a, "+", b)
    w.line(f"{name} has {expr} {item}.")
    expr, r = w.calc(t, "-", d)
    w.line(f"{name} has {expr} {item} left.")
    expr, e = w.calc(r, "/", k)
    w.line(f"Each friend gets {expr} {item}.")
    return q, e


def _ages(rng: random.Random, steps: int, w: _Writer, hi: int) -> tuple[str, int]:
    (a_name, _), (b_name, _), (c_name, _) = _people(rng, 3)
    a = rng.randint(2, hi)
    if steps == 3:
        m = rng.randint(2, 4)
        a = rng.randint(2, max(2, hi // m))
        c = a * m
        b = rng.randint(1, c - 2)
        d = rng.randint(2, 20)
        q = (
            f"{a_name} is {a} years old. {b_name} is {m} times as old as {a_name}. {c_name} is {b} years "
            f"younger than {b_name}. How old will {c_name} be in {d} years?"
        )
        expr, c = w.calc(a, "*", m)
        w.line(f"{b_name} is {expr} years old.")
        expr, e = w.calc(c, "-", b)
        w.line(f"{c_name} is {expr} years old.")
        expr, f = w.calc(e, "+", d)
        w.line(f"In {d} years {c_name} will be {expr} years old.")
        return q, f
    older = a <= 3 or rng.random() < 0.5
    b = rng.randint(2, hi) if older else rng.randint(1, a - 2)
    word, op = ("older", "+") if older else ("younger", "-")
    q = f"{a_name} is {a} years old. {b_name} is {b} years {word} than {a_name}."
    expr, c = w.calc(a, op, b)
    w.line(f"{b_name} is {expr} years old.")
    if steps == 1:
        return q + f" How old is {b_name}?", c
    d = rng.randint(2, 20)
    expr, e = w.calc(c, "+", d)
    w.line(f"In {d} years {b_name} will be {expr} years old.")
    return q + f" How old will {b_name} be in {d} years?", e


def _travel(rng: random.Random, steps: int, w: _Writer, hi: int) -> tuple[str, int]:
    vehicle = rng.choice(_VEHICLES)
    fast = min(hi, 20)  # speeds stay small so products stay short
    s, t = rng.randint(2, fast), rng.randint(2, 9)
    if steps == 1:
        if rng.random() < 0.5:
            q = f"A {vehicle} goes {s} miles each hour. How many miles does it go in {t} hours?"
            expr, d = w.calc(s, "*", t)
            w.line(f"It goes {expr} miles.")
            return q, d
        q = f"A {vehicle} goes {s * t} miles in {t} hours. How many miles does it go each hour?"
        expr, v = w.calc(s * t, "/", t)
        w.line(f"It goes {expr} miles each hour.")
        return q, v
    if steps == 2:
        t1, t2 = rng.randint(1, 5), rng.randint(1, 4)
        q = (
            f"A {vehicle} goes {s} miles each hour. It goes for {t1} hours and then {t2} more hours. "
            "How many miles does it go?"
        )
        expr, tt = w.calc(t1, "+", t2)
        w.line(f"It goes for {expr} hours.")
        expr, d = w.calc(s, "*", tt)
        w.line(f"It goes {expr} miles.")
        return q, d
    s2, t2 = rng.randint(2, fast), rng.randint(2, 9)
    q = (
        f"A {vehicle} goes {s} miles each hour for {t} hours and then {s2} miles each hour for {t2} hours. "
        "How many miles does it go?"
    )
    expr, d1 = w.calc(s, "*", t)
    w.line(f"First it goes {expr} miles.")
    expr, d2 = w.calc(s2, "*", t2)
    w.line(f"Then it goes {expr} miles.")
    expr, d = w.calc(d1, "+", d2)
    w.line(f"It goes {expr} miles.")
    return q, d


_Family = Callable[[random.Random, int, _Writer, int], tuple[str, int]]
FAMILIES: dict[str, _Family] = {
    "collect": _collect,
    "shopping": _shopping,
    "sharing": _sharing,
    "ages": _ages,
    "travel": _travel,
}


def problem_split(question: str, *, test_fraction: float = 0.1) -> str:
    """``"test"`` or ``"train"``: a fixed function of the question text (MD5 bucket out of 10,000)."""
    bucket = int(hashlib.md5(question.encode("utf-8")).hexdigest()[:8], 16) % 10_000
    return "test" if bucket < round(test_fraction * 10_000) else "train"


def generate_problems(
    n: int,
    *,
    seed: int = 0,
    steps: Sequence[int] = (1, 2),
    split: str | None = None,
    families: Sequence[str] | None = None,
    max_value: int = 50,
    annotations: bool = False,
    test_fraction: float = 0.1,
) -> list[dict[str, str]]:
    """Generate ``n`` distinct GSM8K-format problems ``{"question": ..., "answer": "...\\n#### N"}``.

    Args:
        n: number of problems.
        seed: seed of the generator (same arguments, same list).
        steps: allowed numbers of calculation steps, each in ``{1, 2, 3}``; drawn uniformly per problem.
        split: ``"train"`` or ``"test"`` keeps only the problems of that split (:func:`problem_split`, disjoint
            by construction); ``None`` keeps all.
        families: subset of ``FAMILIES`` (default: all), drawn uniformly.
        max_value: the largest additive input (``>= 3``); factors and divisors stay in ``[2, 9]``.
        annotations: add GSM8K calculator annotations ``<<a+b=c>>``.
        test_fraction: share of question-hash buckets that form the test split.

    Every answer is a non-negative integer and ``extract_answer(answer, mode="strict")`` returns it.
    Raises ``ValueError`` for bad arguments or when ``n`` distinct problems cannot be found.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    steps = tuple(steps)
    if not steps or any(s not in (1, 2, 3) for s in steps):
        raise ValueError(f"steps must be a non-empty sequence of values in (1, 2, 3); got {steps}")
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be None, 'train' or 'test'; got {split!r}")
    names = tuple(FAMILIES) if families is None else tuple(families)
    unknown = [f for f in names if f not in FAMILIES]
    if not names or unknown:
        raise ValueError(f"families must be a non-empty subset of {tuple(FAMILIES)}; got {names}")
    if max_value < 3:
        raise ValueError(f"max_value must be >= 3; got {max_value}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")

    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    budget = 50 * n + 1000
    while len(out) < n:
        budget -= 1
        if budget < 0:
            raise ValueError(
                f"could only generate {len(out)} distinct problems out of n={n} with steps={steps}, "
                f"families={names}, max_value={max_value}, split={split!r}; widen them or lower n"
            )
        writer = _Writer(annotations)
        question, value = FAMILIES[rng.choice(names)](rng, rng.choice(steps), writer, max_value)
        if question in seen or (
            split is not None and problem_split(question, test_fraction=test_fraction) != split
        ):
            continue
        seen.add(question)
        out.append({"question": question, "answer": writer.answer(value)})
    return out


def synthetic_dataset(n: int, *, seed: int = 0, split: str | None = "train", **kwargs) -> Dataset:
    """:func:`generate_problems` as a ``datasets.Dataset`` with columns ``question`` and ``answer``.

    ``split`` defaults to ``"train"`` here (use ``split="test"`` for the held-out problems; ``None`` mixes them).
    """
    from datasets import Dataset

    rows = generate_problems(n, seed=seed, split=split, **kwargs)
    return Dataset.from_dict(
        {"question": [r["question"] for r in rows], "answer": [r["answer"] for r in rows]}
    )

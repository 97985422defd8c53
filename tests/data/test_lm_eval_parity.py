"""GSM8K scoring against lm-evaluation-harness itself (the installed `lm_eval` package, not hand tables):
its task YAMLs, its RegexFilter + take_first, its exact_match, and its few-shot ContextSampler.

    .venv/bin/python -m pytest tests/data/test_lm_eval_parity.py -q

Mutations caught: any change to a regex, group selection, fallback or normalisation in
matrix_llm/data/gsm8k/scoring.py, and any change to the few-shot draw in prompts.lm_eval_fewshot_indices.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from matrix_llm.data.gsm8k import (
    LM_EVAL_FEWSHOT_SEED,
    lm_eval_exact_match,
    lm_eval_fewshot_indices,
    lm_eval_filter,
)

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.api.metrics import exact_match_hf_evaluate  # noqa: E402
from lm_eval.api.samplers import ContextSampler  # noqa: E402
from lm_eval.filters.extraction import RegexFilter  # noqa: E402

TASKS = Path(lm_eval.__file__).parent / "tasks" / "gsm8k"


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # `!function` tags: not needed here


def _task(name):
    return yaml.load((TASKS / name).read_text(), Loader=_Loader)


# our mode name -> (task YAML, filter name in it)
FILTERS = {
    "strict": ("gsm8k.yaml", "strict-match"),
    "flexible": ("gsm8k.yaml", "flexible-extract"),
    "cot": ("gsm8k-cot.yaml", "strict-match"),
}

ADVERSARIAL = [
    "#### 18",
    "so 3 + 15 = 18\n#### 18",
    "#### 1,000",
    "#### $18",
    "#### -3",
    "#### 18.00",
    "#### 18.",
    "#### 7\n#### 8",
    "no number at all",
    "",
    "The answer is 18.",
    "The answer is 18 apples",
    "The answer is 18",
    "The answer is $1,234.",
    "The answer is: 18",
    "\\boxed{18}",
    "costs $5 and then 12.50 more",
    "-0",
    "1.5.",
    "Answer: 42 Question: what",
    "2 + 2 = 4, 4 * 3 = 12\n#### 12\nQuestion: next one",
    "####18",
    "#### .5",
    "7 apples, 8 pears.",
    "x = 1,2,3",
    "$.",
    "1e5",
    "#### ١٨",
]


def _real_completions(gsm8k_dir: Path, n: int = 40) -> list[tuple[str, str]]:
    """(completion, reference): the real reference solutions of GSM8K test rows used as completions, plus a
    cot-style rewrite and a truncated one, so every extraction path sees real text."""
    rows = [json.loads(line) for line in (gsm8k_dir / "test.jsonl").read_text().splitlines()[:n]]
    out = []
    for r in rows:
        solution, final = r["answer"].rsplit("####", 1)
        out += [
            (r["answer"], r["answer"]),
            (f"{solution.strip()} The answer is {final.strip()}.", r["answer"]),
            (solution[: len(solution) // 2], r["answer"]),
        ]
    return out


@pytest.mark.parametrize("mode", sorted(FILTERS))
def test_filters_equal_lm_eval(mode, gsm8k_dir):
    task_file, filter_name = FILTERS[mode]
    (spec,) = [f for f in _task(task_file)["filter_list"] if f["name"] == filter_name]
    regex = next(step for step in spec["filter"] if step["function"] == "regex")
    theirs = RegexFilter(regex_pattern=regex["regex_pattern"], group_select=regex.get("group_select", 0))
    texts = ADVERSARIAL + [c for c, _ in _real_completions(gsm8k_dir)]
    expected = [resps[0] for resps in theirs.apply([[t] for t in texts], [{}] * len(texts))]  # + take_first
    assert [lm_eval_filter(t, mode=mode) for t in texts] == expected


@pytest.mark.parametrize("mode", sorted(FILTERS))
def test_exact_match_equals_lm_eval(mode, gsm8k_dir):
    task_file, _ = FILTERS[mode]
    metric = next(m for m in _task("gsm8k.yaml")["metric_list"] if m["metric"] == "exact_match")
    kwargs = {k: metric[k] for k in ("regexes_to_ignore", "ignore_case", "ignore_punctuation")}
    pairs = (
        _real_completions(gsm8k_dir)
        + [(t, "x\n#### 18") for t in ADVERSARIAL]
        + [(t, "x\n#### 1000") for t in ADVERSARIAL]
        + [(t, "x\n#### $18") for t in ADVERSARIAL]
    )
    for completion, reference in pairs:
        filtered = lm_eval_filter(completion, mode=mode)
        theirs = exact_match_hf_evaluate([filtered], [reference], **kwargs)["exact_match"] == 1.0
        assert lm_eval_exact_match(filtered, reference) == theirs, (completion, reference)


def test_zero_shot_cot_task_uses_the_same_filters():
    """gsm8k_cot_zeroshot filters with the cot strict regex and the shared flexible regex."""
    ours = {f["name"]: f for f in _task("gsm8k-cot.yaml")["filter_list"]}
    zeroshot = {f["name"]: f for f in _task("gsm8k-cot-zeroshot.yaml")["filter_list"]}
    assert zeroshot == ours


def test_fewshot_indices_equal_lm_eval_sampler(gsm8k_dir):
    """lm-eval's ContextSampler seeded with fewshot_random_seed draws, for each test document in order, the
    same train rows (fewshot split train != test split, so no eval_doc exclusion)."""
    train = [json.loads(line) for line in (gsm8k_dir / "train.jsonl").read_text().splitlines()]
    num_docs = 30
    sampler = ContextSampler(df=train, rnd=LM_EVAL_FEWSHOT_SEED)
    theirs = [sampler.sample(n=5, eval_doc=None) for _ in range(num_docs)]
    ours = lm_eval_fewshot_indices(len(train), num_docs, k=5)
    assert [[train[i] for i in idx] for idx in ours] == theirs
    assert _task("gsm8k.yaml")["num_fewshot"] == 5

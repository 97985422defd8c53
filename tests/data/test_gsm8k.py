"""GSM8K scoring and prompts (matrix_llm/data/gsm8k.py): extraction, normalisation, matching, prompt strings.

Run: .venv/bin/python -m pytest tests/data/test_gsm8k.py -q
Loading and tokenisation are in tests/data/test_gsm8k_tokenize.py.
"""

from __future__ import annotations

import json
import re

import pytest

from matrix_llm.data.gsm8k import (
    ALPACA_PROMPT,
    COT8_EXEMPLARS,
    EVAL_PROMPTS,
    INVALID,
    STOP_STRINGS,
    answers_match,
    build_eval_prompt,
    extract_answer,
    format_completion,
    format_prompt,
    get_eval_prompt,
    lm_eval_exact_match,
    lm_eval_fewshot_indices,
    lm_eval_filter,
    normalize_answer,
    reference_answer,
    score_completion,
)

NUMBER = re.compile(r"-?\d+(\.\d+)?")


def _rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize(("split", "expected"), [("train", 7473), ("test", 1319)])
def test_every_reference_extracts_with_strict_mode(gsm8k_dir, split, expected):
    rows = _rows(gsm8k_dir / f"{split}.jsonl")
    assert len(rows) == expected
    answers = [extract_answer(r["answer"], mode="strict") for r in rows]
    bad = [(i, a) for i, a in enumerate(answers) if a is None or not NUMBER.fullmatch(a)]
    assert not bad, bad[:5]
    # the strict answer is the text after the (single) "#### " marker, commas removed
    for r, a in zip(rows, answers, strict=True):
        assert r["answer"].count("#### ") == 1
        assert a == r["answer"].split("#### ")[-1].strip().replace(",", "")
        assert answers_match(a, r["answer"]) and lm_eval_exact_match(a, r["answer"])


# (text, strict, flexible, cot)
TRICKY = [
    ("so 5 - 12 = -7\n#### -7", "-7", "-7", None),
    ("Half of 5 is 2.5\n#### 2.5", "2.5", "2.5", None),
    ("#### 1,000", "1000", "1000", None),
    ("It costs $18.\n#### $18", None, "18", None),  # strict regex has no '$'
    ("#### 18\n#### 20", "18", "20", None),  # strict takes the first, flexible the last
    ("#### 18 apples in total, 3 baskets", "18", "3", None),  # number after #### followed by prose
    ("I do not know.", None, None, None),
    ("", None, None, None),
    ("The result is \\boxed{18}.", None, "18", None),  # lm-eval strict ignores \boxed
    ("#### 18.", "18", "18", None),  # trailing period
    ("The answer is 18.", None, "18", "18"),
    ("The answer is 1,234.5 dollars", None, "1234.5", "1234.5"),
    # lm-eval's cot regex ends in a wildcard '.', which eats the last digit when nothing follows the number
    ("The answer is 18", None, "18", "1"),
    ("####18", None, "18", None),  # no space after ####: lm-eval strict does not match
    ("#### -0.5", "-0.5", "-0.5", None),
    ("She paid $29.00 for it.", None, "29.00", None),
    ("Step 1: 3 + 4 = 7. Step 2: 7 * 2 = 14", None, "14", None),
]


@pytest.mark.parametrize(("text", "strict", "flexible", "cot"), TRICKY)
def test_extract_answer_table(text, strict, flexible, cot):
    assert extract_answer(text, mode="strict") == strict
    assert extract_answer(text, mode="flexible") == flexible
    assert extract_answer(text, mode="cot") == cot


def test_extraction_extensions():
    assert extract_answer("so \\boxed{1,024} and \\boxed{ 7 }", mode="boxed") == "7"
    assert extract_answer("no box here 5", mode="boxed") is None
    assert extract_answer("... The answer is: 42", mode="metamath") == "42"
    assert extract_answer("The answer is: -3.5 apples", mode="metamath") == "-3.5"
    with pytest.raises(ValueError, match="extraction mode"):
        extract_answer("#### 1", mode="nope")


def test_lm_eval_filter_is_raw_with_fallback():
    assert lm_eval_filter("nothing", mode="strict") == INVALID
    assert lm_eval_filter("#### $5", mode="flexible") == "$5"
    assert lm_eval_filter("#### 1,000.", mode="strict") == "1,000."
    assert lm_eval_filter(None, mode="strict") == INVALID  # lm-eval turns non-strings into ""


def test_normalize_answer_is_lm_eval_exact_match_normalisation():
    assert normalize_answer("Natalia sold 48/2 = 24.\n#### 1,072") == "1072"
    assert normalize_answer("$1,000.") == "1000"
    assert normalize_answer("18..") == "18."  # re.sub removes one trailing period only
    assert normalize_answer("ABC") == "abc"
    assert normalize_answer("#### 3\n#### 4") == "4"  # '(?s).*#### ' is greedy


# (prediction, reference, answers_match, lm_eval_exact_match)
MATCHES = [
    ("18", "#### 18", True, True),
    ("18.0", "18", True, False),
    ("18.00", "18", True, False),
    ("$18", "18", True, True),
    ("1,000", "1000", True, True),
    ("018", "18", True, False),
    ("-0", "0", True, False),
    ("-7", "7", False, False),
    ("18.5", "18", False, False),
    ("1.000", "1000", False, False),  # a European thousands separator is not understood by either
    ("abc", "ABC", True, True),  # non-numbers compare as lower-cased strings
    (None, "18", False, False),
]


@pytest.mark.parametrize(("pred", "ref", "numeric", "string"), MATCHES)
def test_answers_match_vs_lm_eval_exact_match(pred, ref, numeric, string):
    assert answers_match(pred, ref) is numeric
    assert lm_eval_exact_match(pred, ref) is string
    if string:  # numeric matching is never stricter than lm-eval's string match
        assert numeric


def test_reference_answer():
    assert reference_answer("a\nb\n#### 2,125") == "2125"
    with pytest.raises(ValueError, match="no '#### N' line"):
        reference_answer("The answer is 5.")


def test_score_completion_reports_strict_and_flexible():
    s = score_completion("She has 18.00 dollars.\n#### 18.00", "... #### 18")
    assert (s.strict, s.flexible) == ("18.00", "18.00")
    assert s.strict_correct and s.flexible_correct
    assert not s.strict_lm_eval and not s.flexible_lm_eval  # lm-eval#3214
    s = score_completion("so 3 + 4 = 7", "#### 7")
    assert s.no_answer and not s.strict_correct and s.flexible_correct and s.flexible_lm_eval
    s = score_completion("... The answer is 8.", "#### 8", strict_mode=get_eval_prompt("cot8").strict_mode)
    assert s.strict == "8" and s.strict_correct and s.strict_lm_eval


# ----------------------------------------------------------------------------------------------- prompts


def test_training_templates():
    assert format_prompt("Q?", template="alpaca") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nQ?\n\n### Response:"
    )
    assert format_prompt("Q?", template="qa") == "Question: Q?\nAnswer:"
    assert format_completion("x\n#### 1\n", template="qa") == " x\n#### 1"
    assert format_completion(" x\n#### 1", template="alpaca") == " x\n#### 1"
    assert format_completion("x\n#### 1", template="chat") == "x\n#### 1"
    for bad in ("", "  \n"):
        with pytest.raises(ValueError, match="empty completion"):
            format_completion(bad, template="qa")
    with pytest.raises(ValueError, match="template must be one of"):
        format_prompt("Q?", template="llama")


def test_chat_template(tiny_tokenizer):
    assert format_prompt("Q?", template="chat", tokenizer=tiny_tokenizer) == "<|user|>\nQ?\n<|assistant|>\n"
    with pytest.raises(ValueError, match="chat template"):
        format_prompt("Q?", template="chat")


def test_zero_shot_cot_is_metamath_prompt():
    p = build_eval_prompt("Q?", prompt="zero_shot_cot")
    assert p == ALPACA_PROMPT.format(instruction="Q?") + " Let's think step by step."
    assert p.endswith("### Response: Let's think step by step.")
    assert "Instruction" in EVAL_PROMPTS["zero_shot_cot"].stop


def test_fewshot5_is_lm_eval_gsm8k(gsm8k_dir):
    train = _rows(gsm8k_dir / "train.jsonl")[:5]
    p = build_eval_prompt("Q?", prompt="fewshot5", fewshot_examples=train)
    blocks = p.split("\n\n")
    assert p.startswith("Question: Natalia sold clips to 48 of her friends")
    assert p.endswith("\n\nQuestion: Q?\nAnswer:")
    assert p.count("Question: ") == 6 and p.count("\nAnswer: ") == 5
    assert (
        f"Question: {train[0]['question']}\nAnswer: {train[0]['answer']}\n\nQuestion: {train[1]['question']}"
        in p
    )
    assert len(blocks) >= 6
    prompt = get_eval_prompt("fewshot5")
    assert prompt.stop == ("Question:", "</s>", "<|im_end|>") and prompt.strict_mode == "strict"
    with pytest.raises(ValueError, match="needs fewshot_examples"):
        build_eval_prompt("Q?", prompt="fewshot5")
    with pytest.raises(ValueError, match="'question' and 'answer'"):
        build_eval_prompt("Q?", prompt="fewshot5", fewshot_examples=[{"q": 1}])


def test_cot8_is_lm_eval_gsm8k_cot():
    p = build_eval_prompt("Q?", prompt="cot8")
    assert len(COT8_EXEMPLARS) == 8
    assert p.startswith("Q: There are 15 trees in the grove.")
    assert p.endswith("The answer is 8.\n\nQ: Q?\nA:")
    assert p.count("\nA: ") == 8 and p.count("The answer is ") == 8
    for _, target in COT8_EXEMPLARS:  # every exemplar scores with its own strict filter
        assert extract_answer(target, mode="cot") is not None
    prompt = get_eval_prompt("cot8")
    assert prompt.strict_mode == "cot" and "Q:" in prompt.stop


def test_eval_prompts_table(tiny_tokenizer):
    assert set(EVAL_PROMPTS) >= {"zero_shot_cot", "fewshot5", "cot8", "alpaca", "qa", "chat"}
    for name in ("alpaca", "qa", "chat"):  # zero-shot eval prompts are the training prompts
        built = build_eval_prompt("Q?", prompt=name, tokenizer=tiny_tokenizer)
        assert built == format_prompt("Q?", template=name, tokenizer=tiny_tokenizer)
    assert STOP_STRINGS == {name: p.stop for name, p in EVAL_PROMPTS.items()}
    with pytest.raises(ValueError, match="prompt must be one of"):
        build_eval_prompt("Q?", prompt="fewshot8")


def test_lm_eval_fewshot_indices_are_seeded_per_document():
    a = lm_eval_fewshot_indices(7473, 4)
    assert a == lm_eval_fewshot_indices(7473, 4)
    assert all(len(set(x)) == 5 and all(0 <= i < 7473 for i in x) for x in a)
    assert a[0] != a[1]  # one draw per test document, as lm-eval's shared Random does
    assert lm_eval_fewshot_indices(7473, 1, seed=0) != a[:1]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("x\n#### $18", "18"), ("x\n#### abc", "abc"), ("x\n#### 1,000.", "1000"), ("#### 3 #### 4", "4")],
)
def test_reference_answer_follows_lm_eval_target_for_odd_rows(answer, expected):
    """MetaMathQA-style and custom rows with a non-numeric `#### ...` are scored, not fatal (lm-eval's
    doc_to_target: text after the last ####, then its exact_match normalisation)."""
    assert reference_answer(answer) == expected
    # lm-eval's strict filter extracts numbers only: `abc` is never matched, the numeric ones are
    assert score_completion(f"so #### {expected}", answer).strict_correct == expected.isdigit()

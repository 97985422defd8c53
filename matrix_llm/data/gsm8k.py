"""GSM8K: answer extraction and scoring, prompt templates, loading and tokenisation.

This module is the **one source of truth** for GSM8K in matrix_llm: training, the in-training evaluation
callback and ``matrix-llm eval`` all import it, so a prompt, a stop string or a regex exists exactly once.

Scoring follows lm-evaluation-harness first [0]:

- ``strict``   = lm-eval ``gsm8k`` filter ``strict-match``: regex ``#### (\\-?[0-9\\.\\,]+)``, take the first match.
- ``flexible`` = lm-eval ``flexible-extract``: regex ``(-?[$0-9.,]{2,})|(-?[0-9]+)``, ``group_select: -1``
  (the last number in the text).
- ``cot``      = lm-eval ``gsm8k_cot`` ``strict-match``: regex ``The answer is (\\-?[0-9\\.\\,]+).``, first match.
  The final ``.`` is the regex wildcard, as in lm-eval: ``"The answer is 18."`` and ``"The answer is 18 apples"``
  give ``18``, but ``"The answer is 18"`` at the very end of a text gives ``1`` (the wildcard eats the last
  digit). We reproduce this on purpose, for parity; the stop string ``"Q:"`` usually leaves a newline after it.

Two extensions, **not** part of lm-eval, are available for diagnosis and are never used by the lm-eval
compatible scores:

- ``boxed``    = the last ``\\boxed{N}`` (instruct/reasoning models). lm-eval's strict filter ignores
  ``\\boxed{}``; its flexible filter picks the number inside it anyway because it takes the last number.
- ``metamath`` = MetaMath's own extraction [2]: the first number after the last ``"The answer is: "``
  (MetaMathQA responses end with ``The answer is: N``, not ``#### N``, so a model trained on MetaMathQA scores
  near 0 with ``strict``). MetaMath rounds fractions to integers; here ``3/4`` stays a string.

Normalisation (:func:`normalize_answer`) is lm-eval's ``exact_match`` with ``ignore_case: true`` and
``regexes_to_ignore: [",", "\\$", "(?s).*#### ", "\\.$"]`` applied in that order.
:func:`lm_eval_exact_match` is lm-eval's pure string comparison on top of it; :func:`answers_match` adds
numeric equality (``18 == 18.0 == 18.00 == $18``, ``1,000 == 1000``). Report both (:func:`score_completion`
returns both for the strict and the flexible filter). :func:`answers_match` is never stricter than
:func:`lm_eval_exact_match` on the same strings; it is looser exactly where two strings spell the same number
differently: trailing decimal zeros (``18.00`` vs ``18``, lm-eval issue #3214), leading zeros (``018``),
a leading ``+`` and ``-0`` vs ``0``.

Prompts:

- training templates ``alpaca`` (MetaMath's prompt [2]), ``qa`` (lm-eval's ``Question: ...\\nAnswer:``) and
  ``chat`` (the tokenizer's chat template);
- evaluation prompts ``zero_shot_cot`` (MetaMath's evaluation prompt), ``fewshot5`` (lm-eval ``gsm8k``),
  ``cot8`` (lm-eval ``gsm8k_cot``, the 8 chain-of-thought exemplars of Wei et al. 2022 [1]), and ``alpaca``,
  ``qa``, ``chat`` (zero-shot, exactly the training prompt: what the in-training eval uses).

References:
    [0] EleutherAI/lm-evaluation-harness, ``lm_eval/tasks/gsm8k/gsm8k.yaml`` (v3.0) and ``gsm8k-cot.yaml``
        (v3.0); ``lm_eval/filters/extraction.py::RegexFilter``; ``lm_eval/api/samplers.py``.
    [1] Wei et al. 2022, "Chain-of-Thought Prompting Elicits Reasoning in Large Language Models",
        arXiv 2201.11903, Table 20 (the GSM8K exemplars, as shipped in lm-eval's ``gsm8k-cot.yaml``).
    [2] meta-math/MetaMath ``train_math.py`` (Alpaca prompt) and ``eval_gsm8k.py`` (prompt + " Let's think
        step by step.", stop strings, ``The answer is: `` extraction).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports stay out of the scoring path
    from datasets import Dataset

logger = logging.getLogger(__name__)

__all__ = [
    "ALPACA_PROMPT",
    "COT8_EXEMPLARS",
    "EVAL_PROMPTS",
    "EXTRACTION_MODES",
    "IGNORE_INDEX",
    "INVALID",
    "LM_EVAL_FEWSHOT_SEED",
    "QA_PROMPT",
    "STOP_STRINGS",
    "TEMPLATES",
    "EvalPrompt",
    "Score",
    "TokenizeStats",
    "answers_match",
    "build_eval_prompt",
    "encode_prompt",
    "extract_answer",
    "format_completion",
    "format_example",
    "format_prompt",
    "get_eval_prompt",
    "lm_eval_exact_match",
    "lm_eval_filter",
    "lm_eval_fewshot_indices",
    "load_gsm8k",
    "normalize_answer",
    "reference_answer",
    "score_completion",
    "tokenize_dataset",
    "tokenize_example",
]

IGNORE_INDEX = -100
INVALID = "[invalid]"  # lm-eval's RegexFilter fallback when nothing matches

# --------------------------------------------------------------------------------------------------------------
# Extraction and scoring
# --------------------------------------------------------------------------------------------------------------

# (pattern, group_select) exactly as in lm-eval's task YAMLs.
_LM_EVAL_FILTERS: dict[str, tuple[re.Pattern[str], int]] = {
    "strict": (re.compile(r"#### (\-?[0-9\.\,]+)"), 0),
    "flexible": (re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)"), -1),
    "cot": (re.compile(r"The answer is (\-?[0-9\.\,]+)."), 0),
}
# Extensions (not lm-eval).
_BOXED = re.compile(r"\\boxed\{\s*\\?\$?\s*(-?[0-9.,]+)\s*\}")
_METAMATH_NUMBER = re.compile(r"[\-+]?\d*[\.,/]?\d+")

EXTRACTION_MODES = ("strict", "flexible", "cot", "boxed", "metamath")

# lm-eval exact_match: regexes_to_ignore, applied in order with re.sub, then ignore_case.
_IGNORE = [re.compile(p) for p in (",", r"\$", r"(?s).*#### ", r"\.$")]
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def _check_mode(mode: str) -> None:
    if mode not in EXTRACTION_MODES:
        raise ValueError(f"extraction mode must be one of {EXTRACTION_MODES}; got {mode!r}")


def lm_eval_filter(text: str, *, mode: str = "strict") -> str:
    """The raw output of lm-eval's regex filter for ``mode``, including its ``"[invalid]"`` fallback.

    Bit-identical to ``lm_eval.filters.extraction.RegexFilter`` + ``take_first`` for ``strict``, ``flexible``
    and ``cot``: ``findall``, pick ``group_select`` (first or last match), for a multi-group pattern keep the
    first non-empty group, then ``strip()``. Not normalised (see :func:`extract_answer`).
    """
    _check_mode(mode)
    if not isinstance(text, str):
        text = ""
    if mode == "boxed":
        found = _BOXED.findall(text)
        return found[-1].strip() if found else INVALID
    if mode == "metamath":
        parts = text.split("The answer is: ")
        if len(parts) < 2:
            return INVALID
        m = _METAMATH_NUMBER.search(parts[-1].strip())
        return m.group().strip() if m else INVALID
    pattern, group_select = _LM_EVAL_FILTERS[mode]
    found = pattern.findall(text)
    if not found:
        return INVALID
    match = found[group_select]
    if isinstance(match, tuple):
        non_empty = [g for g in match if g]
        match = non_empty[0] if non_empty else INVALID
    return match.strip()


def normalize_answer(s: str) -> str:
    """lm-eval's ``exact_match`` normalisation of one string (GSM8K settings).

    Removes every ``,`` and ``$``, everything up to and including the last ``"#### "``, one trailing ``.``,
    then lower-cases. ``normalize_answer("Natalia sold ...\\n#### 1,072") == "1072"``.
    """
    for pattern in _IGNORE:
        s = pattern.sub("", s)
    return s.lower()


def extract_answer(text: str, *, mode: str = "strict") -> str | None:
    """Extract the final answer of ``text`` with lm-eval's filter ``mode`` and normalise it.

    Args:
        text: a model completion (or a reference answer).
        mode: ``"strict"`` (``#### N``, first match), ``"flexible"`` (the last number), ``"cot"``
            (``The answer is N.``, first match); extensions ``"boxed"`` (last ``\\boxed{N}``) and
            ``"metamath"`` (after the last ``The answer is: ``). See the module docstring.

    Returns:
        The normalised answer (:func:`normalize_answer`, then stripped), e.g. ``"1000"`` for ``"#### $1,000."``,
        or ``None`` when nothing matches (lm-eval's ``"[invalid]"``) or the match normalises to nothing
        (e.g. ``"#### ,"``).

    ``\\boxed{N}`` handling: ``strict`` and ``cot`` ignore it (as lm-eval does), ``flexible`` returns ``N`` when it
    is the last number in the text (lm-eval's behaviour, not a special case), ``boxed`` looks only at it.
    """
    raw = lm_eval_filter(text, mode=mode)
    if raw == INVALID:
        return None
    out = normalize_answer(raw).strip()
    return out or None


def reference_answer(answer: str) -> str:
    """The normalised final answer of a GSM8K reference (``... #### N``); raises if it has none."""
    out = extract_answer(answer, mode="strict")
    if out is None:
        raise ValueError(f"reference answer has no '#### N' line: {answer[-80:]!r}")
    return out


def _as_number(s: str) -> Decimal | None:
    s = s.strip()
    if not _NUMBER.fullmatch(s):
        return None
    try:
        return Decimal(s)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        return None


def lm_eval_exact_match(prediction: str | None, reference: str) -> bool:
    """lm-eval's ``exact_match`` for GSM8K: both sides normalised (:func:`normalize_answer`), string equality.

    ``prediction`` is the filtered model answer (:func:`lm_eval_filter` for bit-exact parity; the output of
    :func:`extract_answer` gives the same result except for pathological doubled trailing periods such as
    ``"18.."``); ``reference`` the full GSM8K answer (``... #### N``) or the bare number. ``None`` never matches.
    """
    if prediction is None:
        return False
    return normalize_answer(prediction) == normalize_answer(reference)


def answers_match(prediction: str | None, reference: str) -> bool:
    """Whether ``prediction`` and ``reference`` are the same answer: lm-eval normalisation plus numeric equality.

    Both sides are normalised with :func:`normalize_answer` (so ``reference`` may be a full GSM8K answer) and
    stripped; if both are plain decimal numbers they are compared as numbers (``18 == 18.0 == 18.00``,
    ``$1,000 == 1000``), otherwise as strings. ``None`` (no answer) never matches. Looser than
    :func:`lm_eval_exact_match` only where two strings spell the same number differently (module docstring).
    """
    if prediction is None:
        return False
    p, r = normalize_answer(prediction).strip(), normalize_answer(reference).strip()
    pn, rn = _as_number(p), _as_number(r)
    if pn is not None and rn is not None:
        return pn == rn
    return p == r


@dataclass(frozen=True)
class Score:
    """The scores of one completion: strict and flexible extractions, numeric and lm-eval string matches."""

    strict: str | None
    flexible: str | None
    strict_correct: bool
    flexible_correct: bool
    strict_lm_eval: bool
    flexible_lm_eval: bool

    @property
    def no_answer(self) -> bool:
        """True when the strict filter found nothing (counted as the "no-answer rate")."""
        return self.strict is None


def score_completion(completion: str, reference: str, *, strict_mode: str = "strict") -> Score:
    """Score one completion against a GSM8K reference with both lm-eval filters.

    ``strict_mode`` is the strict filter of the prompt used (``EvalPrompt.strict_mode``: ``"cot"`` for ``cot8``,
    ``"strict"`` otherwise). ``*_correct`` use :func:`answers_match`, ``*_lm_eval`` are lm-eval's string scores.
    """
    strict_raw = lm_eval_filter(completion, mode=strict_mode)
    flexible_raw = lm_eval_filter(completion, mode="flexible")
    strict = extract_answer(completion, mode=strict_mode)
    flexible = extract_answer(completion, mode="flexible")
    return Score(
        strict=strict,
        flexible=flexible,
        strict_correct=answers_match(strict, reference),
        flexible_correct=answers_match(flexible, reference),
        strict_lm_eval=strict_raw != INVALID and lm_eval_exact_match(strict_raw, reference),
        flexible_lm_eval=flexible_raw != INVALID and lm_eval_exact_match(flexible_raw, reference),
    )


# --------------------------------------------------------------------------------------------------------------
# Training templates
# --------------------------------------------------------------------------------------------------------------

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{instruction}\n\n### Response:"
)
QA_PROMPT = "Question: {question}\nAnswer:"
TEMPLATES = ("alpaca", "qa", "chat")

# What goes between the prompt and the answer. lm-eval joins "Answer:" and the target with its
# target_delimiter " "; MetaMath's evaluation prompt continues "### Response:" with " Let's think ...".
# A space-prefixed first word is also what a SentencePiece (Llama/Llemma) tokenizer produces for a
# separately tokenised completion ("▁Natalia"). MetaMath's train_math.py concatenates the response with no
# separator ("### Response:Natalia"); we deliberately do not, because no evaluation prompt reproduces that
# boundary. Chat templates end the generation prompt themselves (usually with a newline): no separator.
_COMPLETION_PREFIX = {"alpaca": " ", "qa": " ", "chat": ""}


def _check_template(template: str) -> None:
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}; got {template!r}")


def _chat_prompt(question: str, tokenizer: Any) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "template='chat' needs a tokenizer with a chat template (tokenizer.chat_template is empty); "
            "pass tokenizer=..., use a chat/instruct model's tokenizer, or choose template='alpaca' or 'qa'"
        )
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )


def format_prompt(question: str, *, template: str, tokenizer: Any = None) -> str:
    """The training prompt for ``question``: ``alpaca`` (MetaMath), ``qa`` (lm-eval) or ``chat``.

    ``chat`` renders ``[{"role": "user", "content": question}]`` with the tokenizer's chat template and
    ``add_generation_prompt=True``; it needs ``tokenizer``.
    """
    _check_template(template)
    if template == "alpaca":
        return ALPACA_PROMPT.format(instruction=question)
    if template == "qa":
        return QA_PROMPT.format(question=question)
    return _chat_prompt(question, tokenizer)


def format_completion(answer: str, *, template: str) -> str:
    """The completion text for ``answer`` under ``template`` (without EOS, which is added as a token id).

    The reference is kept intact, ``#### N`` line included; surrounding whitespace is stripped and the
    template's separator is prepended (``" "`` for ``alpaca`` and ``qa``, nothing for ``chat``). Raises on an
    empty answer.
    """
    _check_template(template)
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"empty completion: the answer must be a non-empty string; got {answer!r}")
    return _COMPLETION_PREFIX[template] + answer.strip()


def format_example(example: Mapping[str, str], *, template: str, tokenizer: Any = None) -> tuple[str, str]:
    """``(prompt, completion)`` texts for a ``{"question", "answer"}`` row."""
    prompt = format_prompt(example["question"], template=template, tokenizer=tokenizer)
    return prompt, format_completion(example["answer"], template=template)


# --------------------------------------------------------------------------------------------------------------
# Evaluation prompts
# --------------------------------------------------------------------------------------------------------------

# Wei et al. 2022 [1], as in lm-eval gsm8k-cot.yaml (v3.0) fewshot_config.samples (sampler: first_n).
COT8_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        (
            "There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are "
            "done, there will be 21 trees. How many trees did the grove workers plant today?"
        ),
        (
            "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must "
            "have been 21 - 15 = 6. The answer is 6."
        ),
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.",
    ),
    (
        (
            "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in "
            "total?"
        ),
        (
            "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After "
            "eating 35, they had 74 - 35 = 39. The answer is 39."
        ),
    ),
    (
        (
            "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops "
            "did Jason give to Denny?"
        ),
        (
            "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny "
            "20 - 12 = 8. The answer is 8."
        ),
    ),
    (
        (
            "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he "
            "have now?"
        ),
        (
            "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. "
            "5 + 4 = 9. The answer is 9."
        ),
    ),
    (
        (
            "There were nine computers in the server room. Five more computers were installed each day, from "
            "monday to thursday. How many computers are now in the server room?"
        ),
        (
            "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 "
            "computers were added. 9 + 20 is 29. The answer is 29."
        ),
    ),
    (
        (
            "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many "
            "golf balls did he have at the end of wednesday?"
        ),
        (
            "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 "
            "more, he had 35 - 2 = 33 golf balls. The answer is 33."
        ),
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        (
            "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 "
            "dollars left. 23 - 15 is 8. The answer is 8."
        ),
    ),
)

# lm-eval: target_delimiter " " and fewshot_delimiter "\n\n" (the ConfigurableTask defaults).
_FEWSHOT_DELIMITER = "\n\n"
LM_EVAL_FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed

_MEMBER = {"question", "answer"}


def _fewshot_pairs(examples: Sequence[Mapping[str, str]] | Any) -> list[tuple[str, str]]:
    pairs = []
    for ex in examples:
        if not isinstance(ex, Mapping) or not _MEMBER <= set(ex):
            raise ValueError(
                f"few-shot examples must be mappings with 'question' and 'answer'; got {ex!r:.120}"
            )
        pairs.append((ex["question"], ex["answer"]))
    return pairs


def _build_zero_shot_cot(question: str, fewshot_examples: Any = None, tokenizer: Any = None) -> str:
    return ALPACA_PROMPT.format(instruction=question) + " Let's think step by step."


def _build_fewshot5(question: str, fewshot_examples: Any = None, tokenizer: Any = None) -> str:
    if fewshot_examples is None:
        raise ValueError(
            "prompt='fewshot5' needs fewshot_examples: 5 GSM8K train rows with 'question' and 'answer', e.g. "
            "train.select(range(5)) (deterministic) or [train[i] for i in lm_eval_fewshot_indices(...)[doc]] "
            "(lm-eval's per-document random draw)"
        )
    shots = [QA_PROMPT.format(question=q) + " " + a for q, a in _fewshot_pairs(fewshot_examples)]
    return _FEWSHOT_DELIMITER.join([*shots, QA_PROMPT.format(question=question)])


def _build_cot8(question: str, fewshot_examples: Any = None, tokenizer: Any = None) -> str:
    pairs = COT8_EXEMPLARS if fewshot_examples is None else _fewshot_pairs(fewshot_examples)
    shots = [f"Q: {q}\nA: {a}" for q, a in pairs]
    return _FEWSHOT_DELIMITER.join([*shots, f"Q: {question}\nA:"])


def _training_template_builder(template: str) -> Callable[..., str]:
    def build(question: str, fewshot_examples: Any = None, tokenizer: Any = None) -> str:
        return format_prompt(question, template=template, tokenizer=tokenizer)

    return build


@dataclass(frozen=True)
class EvalPrompt:
    """An evaluation prompt: how to build it, where generation stops, which filter is its strict score.

    ``build(question, fewshot_examples=None, tokenizer=None) -> str``. ``stop`` are stop strings (the
    tokenizer's EOS token stops generation as well). ``strict_mode`` is the :func:`extract_answer` mode of the
    prompt's strict score; the flexible score always uses ``"flexible"``.
    """

    name: str
    build: Callable[..., str]
    stop: tuple[str, ...]
    strict_mode: str
    description: str = field(default="", compare=False)


_LM_EVAL_GSM8K_STOP = ("Question:", "</s>", "<|im_end|>")
_LM_EVAL_COT_STOP = ("Q:", "</s>", "<|im_end|>")
_METAMATH_STOP = (
    "Question:", "Question", "USER:", "USER", "ASSISTANT:", "ASSISTANT",
    "Instruction:", "Instruction", "Response:", "Response",
)  # fmt: skip

EVAL_PROMPTS: dict[str, EvalPrompt] = {
    p.name: p
    for p in (
        EvalPrompt(
            "zero_shot_cot", _build_zero_shot_cot, _METAMATH_STOP, "strict",
            "MetaMath eval_gsm8k.py: Alpaca prompt + \" Let's think step by step.\"",
        ),
        EvalPrompt(
            "fewshot5", _build_fewshot5, _LM_EVAL_GSM8K_STOP, "strict",
            "lm-eval gsm8k v3: 5 x 'Question: q\\nAnswer: <full answer>' joined by blank lines",
        ),
        EvalPrompt(
            "cot8", _build_cot8, _LM_EVAL_COT_STOP, "cot",
            "lm-eval gsm8k_cot v3: the 8 Wei et al. 2022 exemplars, 'Q: q\\nA: ... The answer is N.'",
        ),
        EvalPrompt(
            "alpaca", _training_template_builder("alpaca"), _METAMATH_STOP, "strict",
            "zero-shot, exactly the 'alpaca' training prompt",
        ),
        EvalPrompt(
            "qa", _training_template_builder("qa"), _LM_EVAL_GSM8K_STOP, "strict",
            "zero-shot, exactly the 'qa' training prompt",
        ),
        EvalPrompt(
            "chat", _training_template_builder("chat"), ("<|im_end|>", "</s>"), "strict",
            "zero-shot, the tokenizer's chat template with a generation prompt",
        ),
    )
}  # fmt: skip


STOP_STRINGS: dict[str, tuple[str, ...]] = {name: p.stop for name, p in EVAL_PROMPTS.items()}


def get_eval_prompt(name: str) -> EvalPrompt:
    """The :class:`EvalPrompt` called ``name`` (one of ``EVAL_PROMPTS``)."""
    if name not in EVAL_PROMPTS:
        raise ValueError(f"prompt must be one of {tuple(EVAL_PROMPTS)}; got {name!r}")
    return EVAL_PROMPTS[name]


def build_eval_prompt(
    question: str,
    *,
    prompt: str = "zero_shot_cot",
    fewshot_examples: Sequence[Mapping[str, str]] | None = None,
    tokenizer: Any = None,
) -> str:
    """The evaluation prompt text for ``question`` (see ``EVAL_PROMPTS`` for the kinds).

    - ``zero_shot_cot``: MetaMath's: the Alpaca prompt + ``" Let's think step by step."``.
    - ``fewshot5``: lm-eval ``gsm8k``: each example as ``"Question: q\\nAnswer: <full answer>"``, joined and
      followed by the target ``"Question: q\\nAnswer:"`` with ``"\\n\\n"``. ``fewshot_examples`` is required.
      lm-eval draws the shots from the train split with its *default* (random) sampler, seeded with 1234 and
      advanced once per test document (``gsm8k.yaml`` has no ``fewshot_config``; only ``gsm8k_cot`` uses
      ``first_n``). Pass ``train.select(range(5))`` for a fixed prompt, or the rows given by
      :func:`lm_eval_fewshot_indices` to reproduce lm-eval's draw.
    - ``cot8``: lm-eval ``gsm8k_cot``: the 8 Wei et al. exemplars ``"Q: q\\nA: ... The answer is N."`` (or
      ``fewshot_examples`` with ``answer`` in that style), then ``"Q: q\\nA:"``.
    - ``alpaca`` / ``qa`` / ``chat``: zero-shot, identical to the training prompt (:func:`format_prompt`).
    """
    return get_eval_prompt(prompt).build(question, fewshot_examples=fewshot_examples, tokenizer=tokenizer)


def lm_eval_fewshot_indices(
    num_train: int, num_docs: int, *, k: int = 5, seed: int = LM_EVAL_FEWSHOT_SEED
) -> list[list[int]]:
    """The train-row indices lm-eval's default sampler uses as few-shot examples for each test document.

    lm-eval keeps one ``random.Random(seed)`` per task and calls ``rnd.sample(train_docs, k)`` once per test
    document, in document order; ``random.sample`` picks positions that depend only on the population size,
    so this reproduces a single-process, un-limited ``lm_eval --tasks gsm8k`` run of lm-eval 0.4.x, whose
    ``ContextSampler.sample`` is ``self.rnd.sample(self.docs, n)`` (data-parallel runs shard the documents
    first and draw differently; a later sampler rewrite may too: compare with ``--log_samples``).
    """
    rnd = random.Random(seed)
    return [rnd.sample(range(num_train), k) for _ in range(num_docs)]


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------

_FIELD_SETS = (("question", "answer"), ("query", "response"))  # GSM8K, MetaMathQA
_LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def _local_file(source: str, split: str) -> Path | None:
    path = Path(source).expanduser()
    if path.is_dir():
        for suffix in _LOCAL_BUILDERS:
            candidate = path / f"{split}{suffix}"
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"no {split}.jsonl, {split}.json or {split}.parquet in the directory {str(path)!r}"
        )
    if path.suffix in _LOCAL_BUILDERS:
        if not path.is_file():
            raise FileNotFoundError(f"GSM8K data file not found: {str(path)!r}")
        return path
    return None


def load_gsm8k(source: str = "openai/gsm8k", *, split: str = "train", config: str | None = "main") -> Dataset:
    """Load GSM8K-style data as a ``datasets.Dataset`` with exactly the columns ``question`` and ``answer``.

    Args:
        source: a Hub dataset id (default ``openai/gsm8k``), a local ``.jsonl``/``.json``/``.parquet`` file,
            or a local directory holding ``{split}.jsonl`` (or ``.json``/``.parquet``).
        split: the split to load (Hub, or the file name in a directory; ignored for a single file).
        config: the Hub config (``"main"`` for GSM8K; pass ``None`` for datasets without configs such as
            ``meta-math/MetaMathQA``). Ignored for local files.

    Rows may use GSM8K's fields (``question``, ``answer``) or MetaMathQA's (``query``, ``response``, renamed);
    other columns are dropped. Anything else raises ``ValueError`` naming the fields found and expected.
    """
    import datasets

    local = _local_file(source, split)
    if local is not None:
        ds = datasets.load_dataset(_LOCAL_BUILDERS[local.suffix], data_files=str(local), split="train")
    else:
        ds = datasets.load_dataset(source, config, split=split)
    return _standardise_fields(ds, source=str(source))


def _standardise_fields(ds: Dataset, *, source: str) -> Dataset:
    columns = list(ds.column_names)
    for q, a in _FIELD_SETS:
        if q in columns and a in columns:
            extra = [c for c in columns if c not in (q, a)]
            if extra:
                ds = ds.remove_columns(extra)
            if (q, a) != ("question", "answer"):
                ds = ds.rename_columns({q: "question", a: "answer"})
            return ds
    expected = " or ".join(f"({q!r}, {a!r})" for q, a in _FIELD_SETS)
    raise ValueError(
        f"{source}: expected the fields {expected} (GSM8K or MetaMathQA); found {columns}. "
        "Rename the columns, e.g. ds.rename_columns({'problem': 'question', 'solution': 'answer'})"
    )


# --------------------------------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------------------------------


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _bos_prefix(tokenizer: Any, prompt: str, add_bos: bool | None) -> list[int]:
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if add_bos is False or bos_id is None:
        return []
    bos = getattr(tokenizer, "bos_token", None)
    if bos and prompt.startswith(bos):  # a chat template that writes the BOS text itself
        return []
    return [bos_id]


def encode_prompt(prompt: str, tokenizer: Any, *, add_bos: bool | None = None) -> list[int]:
    """Token ids of a prompt exactly as training sees it: ``[BOS] + tokens(prompt)``.

    Text is tokenised with ``add_special_tokens=False`` (so a tokenizer that appends EOS or adds BOS itself
    cannot double them), then BOS is prepended when the tokenizer defines one (``add_bos=None``), unless the
    prompt text already starts with the BOS token (chat templates that render it). ``add_bos`` forces it on or
    off. Use this for generation so evaluation prompts are tokenised like training prompts.
    """
    return _bos_prefix(tokenizer, prompt, add_bos) + _encode(tokenizer, prompt)


def _completion_ids(
    tokenizer: Any, prompt: str, prompt_ids: list[int], completion: str
) -> tuple[list[int], bool]:
    """Completion tokens as the tokenizer splits ``prompt + completion``; falls back to a separate encode.

    Returns ``(ids, merged)`` where ``merged`` says the joint tokenisation crossed the boundary.
    """
    joint = _encode(tokenizer, prompt + completion)
    n = len(prompt_ids)
    if joint[:n] == prompt_ids and len(joint) > n:
        return joint[n:], False
    return _encode(tokenizer, completion), True


def tokenize_example(
    example: Mapping[str, str],
    tokenizer: Any,
    *,
    template: str,
    max_length: int,
    add_bos: bool | None = None,
) -> dict[str, Any]:
    """Tokenise one ``{"question", "answer"}`` row for completion-only training.

    Layout: ``[BOS] prompt_tokens completion_tokens EOS``; ``labels`` are ``-100`` on BOS and the prompt and
    equal to ``input_ids`` on the completion **and its EOS** (the EOS id is appended as an id, so it is kept
    in the labels even when ``pad_token == eos_token``).

    The boundary is exact: the prompt is tokenised on its own (:func:`encode_prompt`, the same ids generation
    starts from) and the completion tokens are the tail of the tokenisation of ``prompt + completion`` when
    that tokenisation starts with the prompt's ids (the natural split, e.g. ``"▁Natalia"`` for SentencePiece,
    ``"ĠNatalia"`` for byte-level BPE); if the tokenizer merges across the boundary, the completion is
    tokenised separately and concatenated (``boundary_merged=True``).

    Sequences longer than ``max_length`` are cut on the right and flagged ``truncated=True`` (with
    ``num_tokens`` the untruncated length); :func:`tokenize_dataset` counts, reports and by default drops them.
    Raises ``ValueError`` on an empty answer or a tokenizer without EOS.
    """
    eos_id = getattr(tokenizer, "eos_token_id", None)
    if eos_id is None:
        raise ValueError("the tokenizer has no eos_token; set tokenizer.eos_token before tokenising")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2; got {max_length}")
    prompt, completion = format_example(example, template=template, tokenizer=tokenizer)
    prompt_ids = encode_prompt(prompt, tokenizer, add_bos=add_bos)
    text_prompt_ids = prompt_ids[len(_bos_prefix(tokenizer, prompt, add_bos)) :]
    completion_ids, merged = _completion_ids(tokenizer, prompt, text_prompt_ids, completion)
    completion_ids = completion_ids + [eos_id]
    input_ids = prompt_ids + completion_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids
    num_tokens = len(input_ids)
    truncated = num_tokens > max_length
    if truncated:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": labels,
        "num_tokens": num_tokens,
        "truncated": truncated,
        "boundary_merged": merged,
    }


@dataclass
class TokenizeStats:
    """What :func:`tokenize_dataset` did: counts of kept, truncated and dropped examples."""

    num_examples: int
    num_kept: int
    num_truncated: int  # longer than max_length (their '#### N' line and EOS would be cut)
    num_dropped: int
    num_boundary_merged: int
    max_length: int
    longest: int  # untruncated length of the longest example, tokens

    def summary(self) -> str:
        return (
            f"{self.num_kept}/{self.num_examples} examples kept; {self.num_truncated} longer than "
            f"max_length={self.max_length} (longest {self.longest} tokens), {self.num_dropped} dropped"
        )


_HELPER_COLUMNS = ("num_tokens", "truncated", "boundary_merged")


def tokenize_dataset(
    ds: Dataset,
    tokenizer: Any,
    *,
    template: str,
    max_length: int,
    num_proc: int | None = None,
    drop_truncated: bool = True,
    add_bos: bool | None = None,
) -> tuple[Dataset, TokenizeStats]:
    """Tokenise a ``{"question", "answer"}`` dataset with :func:`tokenize_example`; returns ``(dataset, stats)``.

    The result has the columns ``input_ids``, ``attention_mask`` and ``labels`` only. Examples longer than
    ``max_length`` are counted and, with ``drop_truncated=True`` (default), dropped: right-truncation would
    cut the ``#### N`` line and EOS, teaching the model to ramble. With ``drop_truncated=False`` they are kept
    truncated. Either way a warning gives the count. Examples whose prompt alone fills ``max_length`` have no
    label left and are always dropped. An empty answer raises ``ValueError`` naming the row.
    """
    _check_template(template)
    missing = _MEMBER - set(ds.column_names)
    if missing:
        raise ValueError(
            f"tokenize_dataset expects the columns ('question', 'answer'); found {ds.column_names} "
            "(load_gsm8k renames MetaMathQA's ('query', 'response'))"
        )

    def _one(example: Mapping[str, str], idx: int) -> dict[str, Any]:
        try:
            return tokenize_example(
                example, tokenizer, template=template, max_length=max_length, add_bos=add_bos
            )
        except ValueError as err:
            raise ValueError(f"row {idx}: {err} (question: {str(example.get('question'))[:60]!r})") from err

    out = ds.map(
        _one,
        with_indices=True,
        remove_columns=list(ds.column_names),
        num_proc=num_proc,
        desc=f"Tokenizing GSM8K ({template} template)",
    )
    num_tokens = out["num_tokens"]
    truncated = out["truncated"]
    num_truncated = int(sum(truncated))
    longest = max(num_tokens, default=0)

    def _keep(labels: list[int], trunc: bool) -> bool:
        if trunc and drop_truncated:
            return False
        return any(label != IGNORE_INDEX for label in labels)

    kept = out.filter(
        _keep, input_columns=["labels", "truncated"], num_proc=num_proc, desc="Dropping truncated"
    )
    kept = kept.remove_columns(list(_HELPER_COLUMNS))
    stats = TokenizeStats(
        num_examples=len(out),
        num_kept=len(kept),
        num_truncated=num_truncated,
        num_dropped=len(out) - len(kept),
        num_boundary_merged=int(sum(out["boundary_merged"])),
        max_length=max_length,
        longest=longest,
    )
    if stats.num_boundary_merged:
        logger.warning(
            "%d examples: the tokenizer merged tokens across the prompt/completion boundary; their completion "
            "was tokenised separately", stats.num_boundary_merged,
        )  # fmt: skip
    if num_truncated:
        action = "dropped" if drop_truncated else "kept truncated (their '#### N' line and EOS are cut)"
        logger.warning(
            "%d of %d examples are longer than max_length=%d (longest: %d tokens) and were %s",
            num_truncated, len(out), max_length, longest, action,
        )  # fmt: skip
    if len(out) and not len(kept):
        raise ValueError(
            f"no example left to train on: {stats.summary()}; raise max_length (the longest example has "
            f"{longest} tokens) or pass drop_truncated=False"
        )
    return kept, stats

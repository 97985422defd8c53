"""GSM8K answer extraction and scoring, as lm-evaluation-harness does it (see :mod:`matrix_llm.data.gsm8k`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # heavy imports stay out of the scoring path
    pass


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
    """The normalised final answer of a GSM8K reference (``... #### N``), as lm-eval's target: the text after the
    last ``####`` (``doc_to_target``), normalised like the predictions (:func:`normalize_answer`). A reference
    whose final answer is not a plain number (``#### $18`` -> ``18``; ``#### abc`` -> ``abc``, which no number
    matches) is scored like lm-eval scores it instead of failing the run. Raises if there is no ``####`` at all.
    """
    if "####" not in answer:
        raise ValueError(f"reference answer has no '#### N' line: {answer[-80:]!r}")
    return normalize_answer(answer.split("####")[-1].strip())


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

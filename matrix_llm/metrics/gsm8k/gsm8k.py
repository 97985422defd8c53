"""GSM8K exact match as lm-evaluation-harness scores it (an ``evaluate`` metric; matrix_llm.metrics)."""

import datasets
import evaluate

from matrix_llm.data.gsm8k import score_completion

_CITATION = """\
@article{cobbe2021gsm8k,
  title   = {Training Verifiers to Solve Math Word Problems},
  author  = {Cobbe, Karl and Kosaraju, Vineet and Bavarian, Mohammad and Chen, Mark and Jun, Heewoo and Kaiser,
             Lukasz and Plappert, Matthias and Tworek, Jerry and Hilton, Jacob and Nakano, Reiichiro and Hesse,
             Christopher and Schulman, John},
  journal = {arXiv preprint arXiv:2110.14168},
  year    = {2021}
}
"""

_DESCRIPTION = """\
GSM8K exact match of generated solutions against the reference answers, with lm-evaluation-harness's two filters:
`strict-match` takes the number after `#### ` (after `The answer is ` for chain-of-thought prompts,
`strict_mode="cot"`), `flexible-extract` the last number of the completion; both are compared to the reference's
final number after lm-eval's normalisation (commas, `$`, a trailing period). The same scorer as `matrix-llm eval
gsm8k`, so numbers computed here and there agree sample by sample.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): the generated completions.
    references (`list` of `str`): the GSM8K reference answers (the full solution with its `#### N` line, or N).
    strict_mode (`str`, *optional*, defaults to `"strict"`): `"strict"` (`#### N`) or `"cot"` (`The answer is N.`).
Returns:
    strict_match (`float`): lm-eval's `exact_match,strict-match`.
    flexible_match (`float`): lm-eval's `exact_match,flexible-extract`.
    strict_match_numeric, flexible_match_numeric (`float`): the same answers compared as numbers (`18 == 18.00`).
    no_answer_rate (`float`): the share of completions without a strict answer.
Examples:
    >>> import evaluate
    >>> from matrix_llm.metrics import module_path
    >>> gsm8k = evaluate.load(module_path("gsm8k"))
    >>> gsm8k.compute(predictions=["3 + 4 = 7\\n#### 7", "It is 8."], references=["#### 7", "#### 9"])
    {'strict_match': 0.5, 'flexible_match': 0.5, 'strict_match_numeric': 0.5, 'flexible_match_numeric': 0.5, 'no_answer_rate': 0.5}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Gsm8k(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=[
                "https://github.com/EleutherAI/lm-evaluation-harness/tree/main/lm_eval/tasks/gsm8k"
            ],
        )

    def _compute(self, predictions, references, strict_mode="strict"):
        scores = [
            score_completion(p, r, strict_mode=strict_mode)
            for p, r in zip(predictions, references, strict=True)
        ]
        n = max(len(scores), 1)
        return {
            "strict_match": sum(s.strict_lm_eval for s in scores) / n,
            "flexible_match": sum(s.flexible_lm_eval for s in scores) / n,
            "strict_match_numeric": sum(s.strict_correct for s in scores) / n,
            "flexible_match_numeric": sum(s.flexible_correct for s in scores) / n,
            "no_answer_rate": sum(s.no_answer for s in scores) / n,
        }

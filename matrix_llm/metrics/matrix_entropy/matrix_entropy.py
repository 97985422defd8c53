"""Matrix entropy and effective rank of a batch of embeddings (an ``evaluate`` measurement; matrix_llm.metrics)."""

import datasets
import evaluate
import torch

from matrix_llm.features.diagnostics import entropy_erank

_CITATION = """\
@inproceedings{zhang2024matrix,
  title     = {Matrix Information Theory for Self-Supervised Learning},
  author    = {Zhang, Yifan and Tan, Zhiquan and Yang, Jingqin and Huang, Weiran and Yuan, Yang},
  booktitle = {Proceedings of the 41st International Conference on Machine Learning},
  year      = {2024}
}
"""

_DESCRIPTION = """\
The matrix (von Neumann) entropy of a batch of n embeddings: H = -tr(K log K) for K the cosine Gram of the rows
divided by its trace n, between 0 (all rows parallel) and log(min(n, d)) (orthogonal rows); and its exponential,
the effective rank. These are the `matrix_entropy` / `effective_rank` that matrix_llm logs during training.
"""

_KWARGS_DESCRIPTION = """
Args:
    embeddings (`list` of `list` of `float`): n embeddings of one dimension d (n >= 1).
Returns:
    matrix_entropy (`float`): H of the batch, in nats.
    effective_rank (`float`): exp(H).
Examples:
    >>> import evaluate
    >>> from matrix_llm.metrics import module_path
    >>> entropy = evaluate.load(module_path("matrix_entropy"), module_type="measurement")
    >>> entropy.compute(embeddings=[[1.0, 0.0], [0.0, 1.0]])  # two orthogonal rows: log 2, rank 2
    {'matrix_entropy': 0.6931471805599453, 'effective_rank': 2.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MatrixEntropy(evaluate.Measurement):
    def _info(self):
        return evaluate.MeasurementInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"embeddings": datasets.Sequence(datasets.Value("float64"))}),
        )

    def _compute(self, embeddings):
        entropy, erank = entropy_erank(torch.tensor(embeddings, dtype=torch.float64))
        return {"matrix_entropy": float(entropy), "effective_rank": float(erank)}

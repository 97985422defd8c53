"""``MatrixSFTTrainer``: TRL's ``SFTTrainer`` with matrix_llm's LM objective (``pip install "matrix-llm[trl]"``).

    from trl import SFTConfig
    from matrix_llm import LMObjective, MatrixSFTTrainer

    trainer = MatrixSFTTrainer(
        model=model,
        args=SFTConfig(output_dir="out"),
        train_dataset=dataset,  # any format SFTTrainer takes: prompt/completion, messages, text
        objective=LMObjective(loss_type="head", loss_weight=0.1),
    )

TRL keeps everything it does: its dataset formats and tokenisation, completion-only and assistant-only labels,
packing and padding-free batches, its loss (``loss_type``, the fused LM head that never builds the logits), PEFT,
and its log keys (``entropy``, ``mean_token_accuracy``, ``num_tokens``). matrix_llm adds the matrix term with the
scaling of :class:`~matrix_llm.trainer.MatrixTrainer` (the mean of the per-micro-batch terms under gradient
accumulation, the mean over processes under DDP) and its log keys (``lm_loss``, ``matrix_loss``,
``matrix_entropy``, ``effective_rank``) in the same step entry.

Why a class and not ``class X(MatrixTrainer, SFTTrainer): pass``: that one trains plain cross-entropy while its logs
show the matrix loss. TRL's fused LM head uses the head's weight without calling the head module, so the
objective's hook on the head never sees the training forward, and ``compute_loss(..., return_outputs=True)`` runs
an extra ``no_grad`` forward whose hidden states (without a graph) the hook captured instead. Here the hidden
states come from the training forward (:func:`matrix_llm.features.capture_hidden` also hooks the backbone and never
replaces a captured graph by a graph-less tensor), TRL is asked for its outputs only when the caller wants them,
and the logits the ``relation`` / ``alignment`` formulations need are the head applied to the completion positions
(:func:`matrix_llm.features.head_logits`). Tested in ``tests/modes/lm/test_trl.py``: the update equals the one
computed by hand from ``lm_loss + w * mce``.
"""

from __future__ import annotations

from typing import Any

from matrix_llm.modes.lm.objective import LMObjective
from matrix_llm.trainer import MatrixTrainer

try:
    from trl import SFTTrainer
except ImportError as err:  # pragma: no cover - the message is the point
    raise ImportError(
        "MatrixSFTTrainer needs TRL: pip install 'matrix-llm[trl]' (or pip install trl)"
    ) from err

__all__ = ["MatrixSFTTrainer"]


class MatrixSFTTrainer(MatrixTrainer, SFTTrainer):
    """TRL's ``SFTTrainer`` whose loss is ``lm_loss + w * matrix_loss`` (module docstring).

    Args:
        objective: the LM objective; default ``LMObjective()`` (formulation ``head``, weight 0.1).
        Everything else: as ``trl.SFTTrainer`` (``args`` an ``SFTConfig``).
    """

    parent_outputs_are_free = False  # TRL's outputs cost an extra forward (MatrixTrainer.compute_loss)

    def __init__(self, *args: Any, objective: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, objective=objective if objective is not None else LMObjective(), **kwargs)

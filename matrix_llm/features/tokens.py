"""LM token features: model outputs + label masks -> the flat per-token tensors the LM matrix loss takes.

- :func:`capture_hidden` captures, in the *same* forward pass as the LM loss (no second forward, no
  ``output_hidden_states=True``), the token representations of the chosen layer:

  - ``layer=-1`` (default): a forward *pre*-hook on the output-embedding module
    (``model.get_output_embeddings()``, the LM head) records exactly the vector the head is applied to, i.e.
    the final hidden state after the last norm; a forward hook on the backbone (``model.base_model``) records its
    ``last_hidden_state``, the same vector, for forwards that use the head's weight without calling the head
    (TRL's fused LM head, ``trl.trainer.utils.add_fused_lm_head``);
  - ``layer=k >= 0``: a forward hook on decoder layer ``k`` records its output (``hidden_states[k + 1]`` of
    ``output_hidden_states=True``; the last layer's output is taken before the final norm); ``layer=-k``
    (``k >= 2``) is decoder layer ``n_layers - k``
    (``hidden_states[-k]``).

  The model may be wrapped by PEFT, DDP, DeepSpeed or ``torch.compile``: :func:`~matrix_llm.features.unwrap`
  finds the module. Several forwards inside the block: the last one wins, except that a capture that carries a
  graph is never replaced by one that does not (a trainer's extra ``no_grad`` forward for its metrics or
  logits, as TRL's ``SFTTrainer.compute_loss`` runs, would otherwise leave the matrix loss without gradient).
  With gradient checkpointing, ``layer=-1`` is unaffected (the LM head runs outside the checkpointed decoder
  layers); an inner layer under *reentrant* checkpointing would be captured without its graph, so use the
  default (non-reentrant) checkpointing for ``layer != -1``.
- :func:`token_features` selects the completion positions after the causal shift (position ``t`` predicts
  ``labels[t + 1]``; positions whose shifted label is ``-100`` are dropped), exactly the positions
  ``num_items_in_batch`` counts.
- :func:`head_weight` returns the output-embedding weight ``(V, d)``. Under DeepSpeed ZeRO-3 the weight is
  partitioned (each rank holds a flat shard, the parameter itself is empty outside forward): it is gathered
  with ``deepspeed.zero.GatheredParameters`` (a collective: every rank calls it in every step, which
  ``compute_loss`` does) and a detached copy is returned (under FSDP2 a resharded ``DTensor`` likewise, with
  ``full_tensor``), so gradients of the matrix term do not flow into the head weight under ZeRO-3 / FSDP2 (for ``head`` and ``relation`` they never do; for ``alignment`` the gradient
  through the logits is kept, only the direct ``z = Wᵀ p`` path to ``W`` is dropped).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..data.labels import IGNORE_INDEX
from .modules import backbone, decoder_layers, first_tensor, full_weight, output_embedding, unwrap

__all__ = [
    "CapturedHidden",
    "TokenFeatures",
    "capture_hidden",
    "head_logits",
    "head_weight",
    "packed_segments",
    "token_features",
]


@dataclass
class CapturedHidden:
    """Filled by :func:`capture_hidden`: ``hidden`` is ``(N, L, d)`` after the forward pass."""

    hidden: Tensor | None = None


@contextlib.contextmanager
def capture_hidden(model: nn.Module, layer: int = -1) -> Iterator[CapturedHidden]:
    """Capture the representations of ``layer`` during the forward passes run inside the ``with`` block.

    Hooks are registered on entry and removed on exit (also on error), so generation or evaluation outside
    the block is untouched. The last call of the hooked module wins, unless it would replace a tensor that
    carries a graph with one that does not (module docstring).
    """
    holder = CapturedHidden()

    def keep(hidden: Tensor | None) -> None:
        if hidden is None:
            return
        if holder.hidden is not None and holder.hidden.requires_grad and not hidden.requires_grad:
            return
        holder.hidden = hidden

    handles = []
    if layer == -1:
        core = backbone(model)
        if core is not None:
            handles.append(core.register_forward_hook(lambda _m, _args, output: keep(first_tensor(output))))
        handles.append(
            output_embedding(model).register_forward_pre_hook(
                lambda _m, args, kwargs: keep(args[0] if args else kwargs.get("input")), with_kwargs=True
            )
        )
    else:
        layers = decoder_layers(model)
        n = len(layers)
        index = layer if layer >= 0 else n + layer
        if not 0 <= index < n:
            raise ValueError(
                f"matrix_layer: expected -1 (LM-head input), 0..{n - 1} (decoder layer) or -{n}..-2; got {layer}"
            )
        handles.append(
            layers[index].register_forward_hook(lambda _m, _args, output: keep(first_tensor(output)))
        )
    try:
        yield holder
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class TokenFeatures:
    """Flat per-token tensors of the completion positions (``T`` of them)."""

    hidden: Tensor  # (T, d), carries the graph
    targets: Tensor  # (T,), the next-token labels
    logits: Tensor | None  # (T, V) at the same positions, or None
    segments: Tensor | None = None  # (T,) index of the packed example each token belongs to, or None


def packed_segments(position_ids: Tensor) -> Tensor:
    """``(N, L)`` example index of every position of packed rows: a new example starts wherever the position id
    does not continue the previous one (it restarts), as ``DataCollatorWithFlattening`` writes them."""
    first = position_ids[:, :1] - 1
    starts = torch.diff(position_ids, prepend=first, dim=-1) != 1
    offsets = torch.arange(position_ids.shape[0], device=position_ids.device)[:, None] * position_ids.shape[1]
    return starts.long().cumsum(-1) + offsets  # distinct across rows too


def token_features(
    hidden: Tensor, labels: Tensor, logits: Tensor | None = None, position_ids: Tensor | None = None
) -> TokenFeatures:
    """Select the completion positions after the causal shift.

    Args:
        hidden: ``(N, L, d)`` token representations.
        labels: ``(N, L)`` with ``-100`` on prompt and padding positions (as the LM loss sees them, unshifted).
        logits: ``(N, L, V)`` or ``None``.
        position_ids: ``(N, L)`` of packed rows (padding-free packing), or ``None``: then ``segments`` says which
            example each selected token belongs to (:func:`packed_segments`), so that a matrix over tokens can
            be built per example instead of across example boundaries.

    Returns:
        :class:`TokenFeatures` with ``hidden[:, :-1][mask]``, ``labels[:, 1:][mask]`` and
        ``logits[:, :-1][mask]`` where ``mask = labels[:, 1:] != -100``.
    """
    if hidden.dim() != 3:
        raise ValueError(f"token_features: expected hidden of shape (N, L, d); got {tuple(hidden.shape)}")
    if labels.shape != hidden.shape[:2]:
        raise ValueError(
            f"token_features: labels must have shape (N, L) = {tuple(hidden.shape[:2])}; got {tuple(labels.shape)}"
        )
    if logits is not None and logits.shape[:2] != hidden.shape[:2]:
        raise ValueError(
            f"token_features: logits must have shape (N, L, V) with (N, L) = {tuple(hidden.shape[:2])}; "
            f"got {tuple(logits.shape)}"
        )
    shifted = labels[:, 1:]
    mask = shifted != IGNORE_INDEX
    segments = None
    if position_ids is not None:
        if position_ids.shape != labels.shape:
            raise ValueError(
                f"token_features: position_ids must have shape {tuple(labels.shape)}; got "
                f"{tuple(position_ids.shape)}"
            )
        segments = packed_segments(position_ids)[:, :-1][mask]
    return TokenFeatures(
        hidden=hidden[:, :-1][mask],
        targets=shifted[mask],
        logits=None if logits is None else logits[:, :-1][mask],
        segments=segments,
    )


# config fields with which a model rescales or soft-caps the LM head's output (as TRL's fused head reads them)
_LOGIT_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)


def head_logits(model: nn.Module, hidden: Tensor) -> Tensor:
    """The LM head of ``model`` applied to ``hidden`` (``(T, d)`` LM-head inputs): the logits at those positions,
    for a forward that returned none (TRL's fused LM head computes log-probabilities without the logits). A model
    whose config transforms the head's output (soft-capping, a logit scale) is refused: its logits are not the
    head's output."""
    config = getattr(unwrap(model), "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    changed = [name for name in _LOGIT_TRANSFORMS if getattr(text, name, None) not in (None, 1, 1.0)]
    if changed:
        raise ValueError(
            f"features: the forward returned no logits and {type(unwrap(model)).__name__} transforms its LM head's "
            f"output ({', '.join(changed)}), so they cannot be recomputed from the head; use matrix_loss_type "
            "'head', or a trainer whose forward returns the logits"
        )
    return output_embedding(model)(hidden)


def head_weight(model: nn.Module, *, requires_grad: bool = False) -> Tensor:
    """The ``(V, d)`` output-embedding weight of ``model``; detached unless ``requires_grad``.

    Under DeepSpeed ZeRO-3 the partitioned weight is gathered and a detached copy returned (module docstring).
    """
    module = output_embedding(model)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"features: the output embedding {type(module).__name__} has no `weight` tensor")
    return full_weight(weight, requires_grad=requires_grad)

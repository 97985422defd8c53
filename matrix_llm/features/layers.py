"""Hidden states of several layers of any Hugging Face model in one forward pass (for per-layer diagnostics).

:func:`capture_layers` hooks the blocks of the model's layer stack (decoder layers of a causal LM, encoder
layers of BERT / ViT / CLIP towers, ...; found by :func:`~matrix_llm.features.modules.decoder_layers`) and
records each block's output during the forward passes run inside the ``with`` block, without
``output_hidden_states=True`` (which keeps every layer of every position alive) and without a second forward.
With ``final_norm`` it also records the output of the model's final norm: the normalisation layer that takes
the last block's output itself (Llama's ``model.norm``, GPT-2's ``ln_f``, ViT's ``layernorm``), i.e. the
model's last hidden state, which models without one (BERT, whose blocks end in their own norm) do not have.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from torch import Tensor, nn

from .modules import decoder_layers, first_tensor

__all__ = ["capture_layers"]


def _is_norm(module: nn.Module) -> bool:
    return type(module).__name__.endswith("Norm")  # LayerNorm, GroupNorm, LlamaRMSNorm, ...


@contextlib.contextmanager
def capture_layers(
    model: nn.Module, layers: Sequence[int] | None = None, *, final_norm: bool = False
) -> Iterator[dict[int, Tensor]]:
    """Record the outputs of blocks ``layers`` (``None``: all; negative indices count from the end).

    Yields a dict filled during the forward pass: ``{block index (non-negative): (N, L, d) output}``, and with
    ``final_norm`` the final norm's output (module docstring) at index ``len(blocks)`` when the model has one
    (and the last block's output, which identifies it, whether asked for or not). The hooks are removed on exit
    (also on error); the last call of a block wins.

    Raises:
        ValueError: an index outside the stack, or a model whose layer stack cannot be found.
    """
    stack = decoder_layers(model)
    n = len(stack)
    wanted = range(n) if layers is None else layers
    indices = []
    for layer in wanted:
        index = layer if layer >= 0 else n + layer
        if not 0 <= index < n:
            raise ValueError(
                f"capture_layers: layer {layer} is outside the model's {n} blocks (0..{n - 1} or -{n}..-1)"
            )
        indices.append(index)
    captured: dict[int, Tensor] = {}
    handles = []

    def make_hook(index: int):
        def hook(_module, _args, output):
            captured[index] = first_tensor(output)

        return hook

    if final_norm and n - 1 not in indices:
        indices.append(n - 1)  # its output identifies the final norm's input
    for index in dict.fromkeys(indices):
        handles.append(stack[index].register_forward_hook(make_hook(index)))
    if final_norm:
        inside = {id(m) for m in stack.modules()}

        def norm_hook(_module, args, output):
            if args and args[0] is captured.get(n - 1) and isinstance(output, Tensor):
                captured[n] = output

        handles += [
            m.register_forward_hook(norm_hook) for m in model.modules() if _is_norm(m) and id(m) not in inside
        ]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()

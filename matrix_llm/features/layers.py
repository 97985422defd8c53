"""Hidden states of several layers of any Hugging Face model in one forward pass (for per-layer diagnostics).

:func:`capture_layers` hooks the blocks of the model's layer stack (decoder layers of a causal LM, encoder
layers of BERT / ViT / CLIP towers, ...; found by :func:`~matrix_llm.features.modules.decoder_layers`) and
records each block's output during the forward passes run inside the ``with`` block, without
``output_hidden_states=True`` (which keeps every layer of every position alive) and without a second forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from torch import Tensor, nn

from .modules import decoder_layers, first_tensor

__all__ = ["capture_layers"]


@contextlib.contextmanager
def capture_layers(model: nn.Module, layers: Sequence[int] | None = None) -> Iterator[dict[int, Tensor]]:
    """Record the outputs of blocks ``layers`` (``None``: all; negative indices count from the end).

    Yields a dict filled during the forward pass: ``{block index (non-negative): (N, L, d) output}``. The hooks
    are removed on exit (also on error); the last call of a block wins.

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

    for index in dict.fromkeys(indices):
        handles.append(stack[index].register_forward_hook(make_hook(index)))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()

"""Model outputs + masks -> the ``(n, d)`` matrices the losses and diagnostics take (DESIGN.md, "Layers").

The one seam between Hugging Face models and :mod:`matrix_llm.losses`, split by what it serves:

- :mod:`.tokens`: LM token features (the chosen layer captured in the LM loss's own forward pass, completion
  positions after the causal shift, the LM-head weight under ZeRO-3).
- :mod:`.pooled`: one pooled row per example for encoders (``cls``, ``mean`` over patches or tokens,
  ``pooler``), any Hub vision or text model.
- :mod:`.layers`: hidden states of several layers in one forward pass.
- :mod:`.heads`: the classifier head of a classification model and the features it is applied to.
- :mod:`.modules`: finding modules through PEFT / DDP / DeepSpeed / ``torch.compile`` wrappers; eval mode for
  a measurement.
- :mod:`.sharded`: evaluation encodings at any dataset size (each process its shard, batch by batch, gathered).
"""

from .heads import CapturedHeadInput, capture_head_input, classifier_head
from .layers import capture_layers
from .modules import (
    decoder_layers,
    evaluating,
    first_tensor,
    full_weight,
    output_embedding,
    random_state_kept,
    unwrap,
)
from .pooled import POOLINGS, default_pooling, pool
from .tokens import (
    CapturedHidden,
    TokenFeatures,
    capture_hidden,
    head_logits,
    head_weight,
    packed_segments,
    token_features,
)

__all__ = [
    "POOLINGS",
    "CapturedHeadInput",
    "CapturedHidden",
    "TokenFeatures",
    "capture_head_input",
    "capture_hidden",
    "capture_layers",
    "classifier_head",
    "decoder_layers",
    "evaluating",
    "default_pooling",
    "first_tensor",
    "full_weight",
    "head_logits",
    "head_weight",
    "output_embedding",
    "packed_segments",
    "pool",
    "random_state_kept",
    "token_features",
    "unwrap",
]

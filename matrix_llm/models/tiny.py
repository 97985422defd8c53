"""Tiny, offline models and tokenizers for the embedded demo, the tests and the benchmarks.

Nothing here touches the network: the tokenizer is trained on the texts you pass (a byte-level BPE with
single-digit tokens, so numbers are spelt digit by digit as in Llama's tokenizer), and the model is a
randomly initialised Llama built from a config. :func:`random_init` rebuilds any model's architecture at its
seeded random initialisation (the reference of Diff-eRank and of the frozen-feature probes).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"

# A minimal chat template (user turn, then assistant turn) so the `chat` prompt template has something to
# render with the tiny tokenizer; real chat models bring their own.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def build_tokenizer(texts: Iterable[str], *, vocab_size: int = 512):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``.

    Digits are split one per token. ``<s>``, ``</s>``, ``<pad>`` and ``<unk>`` are distinct special tokens
    (pad != eos, so EOS is never masked away as padding).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_llama(
    tokenizer,
    *,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    seed: int = 0,
):
    """A randomly initialised ``LlamaForCausalLM`` sized for a CPU, with token ids taken from ``tokenizer``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def _image_config(
    kind: str,
    *,
    image_size: int,
    num_channels: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    **extra,
):
    """The config of a tiny ViT (patches of ``image_size/4``) or ResNet (stages of ``hidden_size/2`` and
    ``hidden_size`` channels)."""
    from transformers import ResNetConfig, ViTConfig

    if kind == "tiny-vit":
        return ViTConfig(
            image_size=image_size,
            patch_size=max(1, image_size // 4),
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=2 * hidden_size,
            num_channels=num_channels,
            **extra,
        )
    if kind == "tiny-resnet":
        config = ResNetConfig(
            embedding_size=max(8, hidden_size // 2),
            hidden_sizes=[max(8, hidden_size // 2), hidden_size],
            depths=[1] * 2,
            downsample_in_first_stage=False,
            num_channels=num_channels,
            **extra,
        )
        config.image_size = image_size  # not a ResNet setting: saved so that loaders know the training size
        return config
    raise ValueError(f"tiny image models: `kind` must be 'tiny-vit' or 'tiny-resnet'; got {kind!r}")


def build_image_classifier(
    kind: str,
    *,
    num_labels: int,
    image_size: int = 16,
    num_channels: int = 1,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    id2label: dict[int, str] | None = None,
    seed: int = 0,
):
    """A randomly initialised ``ViTForImageClassification`` (``kind="tiny-vit"``) or
    ``ResNetForImageClassification`` (``"tiny-resnet"``) sized for a CPU."""
    import torch
    from transformers import ResNetForImageClassification, ViTForImageClassification

    labels = id2label or {i: str(i) for i in range(num_labels)}
    config = _image_config(
        kind,
        image_size=image_size,
        num_channels=num_channels,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_labels=num_labels,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    torch.manual_seed(seed)
    return (ViTForImageClassification if kind == "tiny-vit" else ResNetForImageClassification)(config)


def build_image_backbone(
    kind: str,
    *,
    image_size: int = 16,
    num_channels: int = 1,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
):
    """A randomly initialised ``ViTModel`` or ``ResNetModel``, the backbones of ``matrix-llm ssl``'s tiny
    models (the ViT keeps its pooler so that ``AutoModel`` loads it whole; self-supervised training reads the class
    token and freezes the pooler)."""
    import torch
    from transformers import ResNetModel, ViTModel

    config = _image_config(
        kind,
        image_size=image_size,
        num_channels=num_channels,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
    )
    torch.manual_seed(seed)
    return (ViTModel if kind == "tiny-vit" else ResNetModel)(config)


def build_mae(
    *,
    image_size: int = 16,
    num_channels: int = 1,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    mask_ratio: float = 0.75,
    seed: int = 0,
):
    """A randomly initialised ``ViTMAEForPreTraining`` (patches of ``image_size/4``, a one-block decoder of half
    the width, normalised-pixel loss), the tiny model of ``matrix-llm ssl --ssl_method mmae``."""
    import torch
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    config = ViTMAEConfig(
        image_size=image_size,
        patch_size=max(1, image_size // 4),
        num_channels=num_channels,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=2 * hidden_size,
        decoder_hidden_size=max(num_heads, hidden_size // 2),
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=num_heads,
        decoder_intermediate_size=hidden_size,
        mask_ratio=mask_ratio,
        norm_pix_loss=True,
    )
    torch.manual_seed(seed)
    return ViTMAEForPreTraining(config)


def build_text_classifier(
    tokenizer,
    *,
    num_labels: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    dropout: float = 0.1,
    max_position_embeddings: int = 128,
    seed: int = 0,
):
    """A randomly initialised ``BertForSequenceClassification`` sized for a CPU, with the token ids of
    ``tokenizer`` (:func:`build_tokenizer`); ``dropout`` on its hidden states and attention probabilities."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=num_labels,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


def random_init(
    model_class: type,
    config: Any,
    *,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """``model_class(config)`` at its random initialisation, seeded (the reference of Diff-eRank: the same
    architecture before training), in eval mode."""
    import copy

    import torch

    torch.manual_seed(seed)
    return model_class(copy.deepcopy(config)).to(device=device, dtype=dtype).eval()

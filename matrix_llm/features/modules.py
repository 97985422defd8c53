"""Finding modules inside a (possibly wrapped) Hugging Face model: the one place that knows wrappers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = [
    "backbone",
    "decoder_layers",
    "evaluating",
    "first_tensor",
    "full_weight",
    "output_embedding",
    "unwrap",
]


@contextmanager
def random_state_kept(device: torch.device) -> Iterator[None]:
    """torch's random state (the CPU generator, and ``device``'s when it is an accelerator) as it was on entry
    again on exit: random draws inside (a DataLoader's base seed, seeded augmentations) leave the ones after
    unchanged."""
    device = torch.device(device)
    if device.type == "cpu":
        devices, device_type = [], None
    else:
        index = (
            torch.get_device_module(device.type).current_device() if device.index is None else device.index
        )
        devices, device_type = [index], device.type
    with torch.random.fork_rng(devices=devices, device_type=device_type):
        yield


@contextmanager
def evaluating(model: nn.Module) -> Iterator[torch.device]:
    """``model`` in eval mode (no dropout) inside, its own mode and torch's random state (:func:`random_state_kept`)
    restored after, also on an error; yields its device (of its first parameter). For measurements taken during
    training: they do not change the training run."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with random_state_kept(device):
            yield device
    finally:
        model.train(was_training)


def unwrap(model: nn.Module) -> nn.Module:
    """Strip DDP / DeepSpeed / FSDP / ``torch.compile`` wrappers (PEFT models are kept: they forward)."""
    seen = 0
    while seen < 8:
        seen += 1
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif type(model).__name__ == "DeepSpeedEngine" or (
            hasattr(model, "module") and hasattr(model, "zero_optimization_stage")
        ):
            model = model.module
        else:
            break
    return model


def output_embedding(model: nn.Module) -> nn.Module:
    """The LM head of ``model`` (through PEFT / DDP / DeepSpeed wrappers)."""
    inner = unwrap(model)
    get = getattr(inner, "get_output_embeddings", None)
    module = get() if callable(get) else None
    if module is None:
        raise ValueError(
            f"features: {type(inner).__name__} has no output embeddings (get_output_embeddings() returned "
            "None); the LM matrix loss needs a causal LM with an LM head."
        )
    return module


def backbone(model: nn.Module) -> nn.Module | None:
    """The transformer body of a Hugging Face model with a head (``model.base_model``, through PEFT / DDP /
    DeepSpeed wrappers), or ``None`` when the model is its own body."""
    inner = unwrap(model)
    get_base = getattr(inner, "get_base_model", None)  # PEFT
    if callable(get_base):
        inner = get_base()
    core = getattr(inner, "base_model", None)
    return core if isinstance(core, nn.Module) and core is not inner else None


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of ``model`` (``model.get_decoder().layers`` or the ModuleList of
    ``config.num_hidden_layers`` blocks)."""
    inner = unwrap(model)
    get_decoder = getattr(inner, "get_decoder", None)
    if callable(get_decoder):
        decoder = get_decoder()
        layers = getattr(decoder, "layers", None)
        if isinstance(layers, nn.ModuleList):
            return layers
    n = getattr(getattr(inner, "config", None), "num_hidden_layers", None)
    for _, module in inner.named_modules():
        if isinstance(module, nn.ModuleList) and (n is None or len(module) == n):
            return module
    raise ValueError(f"features: could not find the decoder layers of {type(inner).__name__}")


def first_tensor(x) -> Tensor | None:
    """The hidden states in a module output: a tensor, the first element of a tuple, or ``last_hidden_state``."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], Tensor):
        return x[0]
    if hasattr(x, "last_hidden_state"):
        return x.last_hidden_state
    return None


def _is_zero3(param: Tensor) -> bool:
    return hasattr(param, "ds_id") and hasattr(param, "ds_status")


def _is_dtensor(param: Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(param, DTensor)


def full_weight(weight: Tensor, *, requires_grad: bool = False) -> Tensor:
    """``weight`` whole: a parameter sharded across the ranks (DeepSpeed ZeRO-3's partition, or an FSDP2 ``DTensor``
    outside the module's forward) is gathered (a collective: every rank must call it) and a detached copy returned;
    otherwise the parameter itself, detached unless ``requires_grad``."""
    if _is_zero3(weight):
        import deepspeed

        with deepspeed.zero.GatheredParameters([weight], modifier_rank=None):
            return weight.detach().clone()
    if _is_dtensor(weight):
        return weight.full_tensor().detach()
    return weight if requires_grad else weight.detach()

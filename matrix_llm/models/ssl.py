"""The networks of self-supervised vision training. :class:`SSLModel`: a Hugging Face backbone, the projector /
predictor of the Matrix-SSL code, the EMA teacher, an online linear probe, and the on-device two-view
augmentation. :class:`MAEModel`: a Hub ``ViTMAEForPreTraining`` for M-MAE, with an online probe.

One ``forward`` does everything a step needs (so DDP / DeepSpeed see a single forward call):

- two views of ``pixel_values`` (images in ``[0, 1]``) from :class:`~matrix_llm.data.augment.TwoViewAugment`;
- student: backbone -> pooled features ``h`` -> projector -> predictor ``z`` (SimCLR: no predictor);
- teacher (Matrix-SSL, MEC): an exponential moving average of backbone + projector, without gradients, ``p``;
- online probe: a linear classifier (after a BatchNorm without affine parameters) on the detached features of
  view 1 (when labels are given).

Projector: ``Linear(d, h)-BN-ReLU-Linear(h, h)-BN-ReLU-Linear(h, k)-BN(affine=False)``; predictor:
``Linear(k, q)-BN-ReLU-Linear(q, k)``, as in the Matrix-SSL / MEC code (``h = k = 2048``, ``q = 512`` there).
The teacher's parameters are part of the ``state_dict`` (checkpointed and resumed with the run) but never
trained; :meth:`SSLModel.update_teacher` moves them after each optimizer step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from matrix_llm.data.augment import TwoViewAugment
from matrix_llm.features import pool

__all__ = [
    "MAEModel",
    "MAEOutput",
    "SSLModel",
    "SSLOutput",
    "cosine_momentum",
    "mlp_predictor",
    "mlp_projector",
    "vision_pooling",
]


def vision_pooling(outputs) -> str:
    """The pooling of a vision backbone's features: its pooler for a convolutional backbone (4-d feature maps:
    global average pooling), the class token otherwise (a ViT's pooler is a randomly initialised dense layer
    that self-supervised training never uses)."""
    return "pooler" if outputs.last_hidden_state.dim() == 4 else "cls"


def mlp_projector(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, d_out, bias=False),
        nn.BatchNorm1d(d_out, affine=False),
    )


def mlp_predictor(d: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, d)
    )


@dataclass
class SSLOutput:
    """What :meth:`SSLModel.forward` returns (``p1``, ``p2`` are ``None`` without a teacher, ``probe_logits``
    without labels)."""

    z1: Tensor
    z2: Tensor
    features: Tensor
    p1: Tensor | None = None
    p2: Tensor | None = None
    probe_logits: Tensor | None = None


def _feature_dim(backbone: nn.Module) -> int:
    config = backbone.config
    sizes = getattr(config, "hidden_sizes", None)
    if isinstance(sizes, (list, tuple)) and sizes:  # ResNet / ConvNeXt: the last stage's channels
        return int(sizes[-1])
    for name in ("hidden_size", "embed_dim", "d_model"):
        if isinstance(getattr(config, name, None), int):
            return int(getattr(config, name))
    raise ValueError(f"SSLModel: cannot tell the feature size of {type(backbone).__name__} from its config")


class SSLModel(nn.Module):
    """Backbone + heads + teacher + probe + augmentation (module docstring).

    Args:
        backbone: a Hugging Face vision model returning ``last_hidden_state`` (and maybe ``pooler_output``).
        augment: the two-view augmentation (its ``size`` / ``channels`` match the backbone's input).
        pooling: ``"cls"``, ``"mean"``, ``"pooler"``, or ``None``: the pooler output for convolutional backbones
            (4-d feature maps), the class token otherwise.
        projector_hidden, projector_dim, predictor_hidden: MLP sizes (``predictor_hidden=0``: no predictor).
        teacher: keep an EMA teacher of backbone + projector.
        num_classes: size of the online linear probe (``0``: none).
    """

    def __init__(
        self,
        backbone: nn.Module,
        augment: TwoViewAugment,
        *,
        pooling: str | None = None,
        projector_hidden: int = 2048,
        projector_dim: int = 2048,
        predictor_hidden: int = 512,
        teacher: bool = True,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        if pooling != "pooler" and getattr(backbone, "pooler", None) is not None:
            backbone.pooler.requires_grad_(
                False
            )  # unused (a ViT's dense pooler): frozen, so DDP sees no unused
        self.augment = augment
        self.pooling = pooling
        self.feature_dim = _feature_dim(backbone)
        self.projector = mlp_projector(self.feature_dim, projector_hidden, projector_dim)
        self.predictor = (
            mlp_predictor(projector_dim, predictor_hidden) if predictor_hidden > 0 else nn.Identity()
        )
        self.teacher_backbone = self.teacher_projector = None
        if teacher:
            self.teacher_backbone = copy.deepcopy(backbone).requires_grad_(False)
            self.teacher_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.probe = None
        if (
            num_classes > 0
        ):  # BatchNorm without affine first (as MAE's linear probe): one learning rate fits all
            self.probe = nn.Sequential(
                nn.BatchNorm1d(self.feature_dim, affine=False), nn.Linear(self.feature_dim, num_classes)
            )
        self.main_input_name = "pixel_values"  # what the Trainer reads to count inputs / find the batch size

    @property
    def has_teacher(self) -> bool:
        return self.teacher_backbone is not None

    def pooled(self, pixel_values: Tensor, backbone: nn.Module | None = None) -> Tensor:
        """``(N, d)`` pooled features of normalised images through ``backbone`` (default: the student's)."""
        outputs = (backbone or self.backbone)(pixel_values=pixel_values)
        return pool(outputs, self.pooling or vision_pooling(outputs))

    def forward(self, pixel_values: Tensor, labels: Tensor | None = None, augment_step: int = 0) -> SSLOutput:
        views = torch.cat(self.augment(pixel_values, augment_step))
        h = self.pooled(views)
        z = self.predictor(self.projector(h))
        n = pixel_values.shape[0]
        out = SSLOutput(z1=z[:n], z2=z[n:], features=h[:n].detach())
        if self.has_teacher:
            with torch.no_grad():
                p = self.teacher_projector(self.pooled(views, self.teacher_backbone))
            out.p1, out.p2 = p[:n], p[n:]
        if self.probe is not None and labels is not None:
            out.probe_logits = self.probe(out.features)
        return out

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``teacher <- momentum * teacher + (1 - momentum) * student`` for backbone and projector (parameters;
        buffers such as BatchNorm statistics are copied)."""
        if not self.has_teacher:
            return
        for student, teacher in (
            (self.backbone, self.teacher_backbone),
            (self.projector, self.teacher_projector),
        ):
            for s, t in zip(student.parameters(), teacher.parameters(), strict=True):
                t.lerp_(s.detach().to(t.dtype), 1.0 - momentum)
            for s, t in zip(student.buffers(), teacher.buffers(), strict=True):
                t.copy_(s)

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, pooling={self.pooling!r}, teacher={self.has_teacher}"


def cosine_momentum(step: int, total: int, base: float) -> float:
    """BYOL's teacher momentum: ``1 - (1 - base) (cos(π step / total) + 1) / 2`` (``base`` -> 1)."""
    if total <= 0:
        return base
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, total) / total) + 1.0) / 2.0


@dataclass
class MAEOutput:
    """What :meth:`MAEModel.forward` returns: the Hub model's masked-patch reconstruction loss, the encoder's
    class-token features (with gradient, for the TCR term) and the online probe's logits."""

    reconstruction_loss: Tensor
    features: Tensor
    probe_logits: Tensor | None = None


class MAEModel(nn.Module):
    """A Hugging Face ``ViTMAEForPreTraining`` (its own masking, decoder and pixel loss) with MAE's augmentation
    (one random resized crop and flip per image, :data:`~matrix_llm.data.augment.MAE_VIEW`) and an online probe;
    the features are the class token of the encoder's output on the visible patches, after its final norm (the
    M-MAE code's, MATH.md 6.1), read by a hook in the same forward pass."""

    def __init__(self, mae: nn.Module, augment: TwoViewAugment, *, num_classes: int = 0) -> None:
        super().__init__()
        if not hasattr(mae, "vit") or not hasattr(mae, "decoder"):
            raise ValueError(f"MAEModel: expected a ViTMAEForPreTraining; got {type(mae).__name__}")
        self.mae = mae
        self.augment = augment
        self.feature_dim = int(mae.config.hidden_size)
        self.probe = None
        if num_classes > 0:
            self.probe = nn.Sequential(
                nn.BatchNorm1d(self.feature_dim, affine=False), nn.Linear(self.feature_dim, num_classes)
            )
        self.main_input_name = "pixel_values"

    @property
    def backbone(self) -> nn.Module:
        """The encoder (``ViTMAEModel``), what ``OUTPUT_DIR/backbone`` holds."""
        return self.mae.vit

    def forward(self, pixel_values: Tensor, labels: Tensor | None = None, augment_step: int = 0) -> MAEOutput:
        (view,) = self.augment.views_of(pixel_values, augment_step, 1)
        captured: dict[str, Tensor] = {}

        def keep(
            _module, _args, output
        ) -> None:  # a forward hook that returns nothing leaves the output alone
            captured["latent"] = output.last_hidden_state

        handle = self.mae.vit.register_forward_hook(keep)
        try:
            out = self.mae(pixel_values=view)
        finally:
            handle.remove()
        features = captured["latent"][:, 0]
        result = MAEOutput(reconstruction_loss=out.loss, features=features)
        if self.probe is not None and labels is not None:
            result.probe_logits = self.probe(features.detach())
        return result

"""The two asymmetric views of the BYOL / MoCo v3 / Matrix-SSL recipe, batched on the training device, in plain
torch (no torchvision, no kornia: one batched pass per operation, with per-image random parameters).

Both views (Grill et al. 2020, Table 6; the Matrix-SSL code, docs/formulations.md): random resized crop
(scale ``(0.2, 1)``, aspect ``(3/4, 4/3)``), horizontal flip (p 0.5), colour jitter (brightness 0.4, contrast
0.4, saturation 0.2, hue 0.1; p 0.8), grayscale (p 0.2). View 1: Gaussian blur (p 1.0). View 2: Gaussian blur
(p 0.1) and solarize (p 0.2). The blur kernel is about a tenth of the image side (23 px at 224) and its sigma
range ``(0.1, 2.0)`` is scaled with the image side (so small images are not blurred flat). Grey (1-channel)
images skip saturation, hue and grayscale, which do nothing to them.

Input: ``(N, C, H, W)`` images in ``[0, 1]``; output: two ``(N, C, S, S)`` views, normalised with ``mean`` /
``std``. Randomness: each call draws from ``torch``'s generator forked and seeded with ``(seed, rank, step,
call)``, so a run is reproducible, every process draws different views, and a resumed run draws the same views
as an uninterrupted one, on any device; the global random state is left untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import rank
from ..features import random_state_kept

__all__ = ["MAE_VIEW", "TrainingView", "TwoViewAugment", "ViewSettings", "byol_views", "make_view"]


@dataclass(frozen=True)
class ViewSettings:
    """Probabilities and strengths of one view (defaults: BYOL's view 1)."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    flip: float = 0.5
    jitter: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale: float = 0.2
    blur: float = 1.0
    solarize: float = 0.0


VIEW_2 = ViewSettings(blur=0.1, solarize=0.2)
MAE_VIEW = ViewSettings(jitter=0.0, grayscale=0.0, blur=0.0)  # MAE's augmentation: crop and flip only


def byol_views(
    *, crop_min_scale: float = 0.2, jitter_strength: float = 1.0
) -> tuple[ViewSettings, ViewSettings]:
    """BYOL's two views with the two knobs people tune: the smallest crop share and SimCLR's colour-jitter strength
    ``s`` (brightness, contrast, saturation and hue amounts times ``s``)."""
    if not 0.0 < crop_min_scale <= 1.0 or jitter_strength < 0:
        raise ValueError(
            f"byol_views: needs 0 < crop_min_scale <= 1 and jitter_strength >= 0; got {crop_min_scale}, "
            f"{jitter_strength}"
        )
    base = ViewSettings()
    changes = dict(
        crop_scale=(crop_min_scale, 1.0),
        brightness=base.brightness * jitter_strength,
        contrast=base.contrast * jitter_strength,
        saturation=base.saturation * jitter_strength,
        hue=base.hue * jitter_strength,
    )
    return replace(base, **changes), replace(VIEW_2, **changes)


_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
# RGB <-> YIQ: a hue shift is a rotation of the (I, Q) chroma plane (the form GPU pipelines use, e.g. NVIDIA DALI)
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _chosen(n: int, p: float, device: torch.device) -> Tensor:
    """Indices of the images an operation of probability ``p`` applies to."""
    return torch.nonzero(torch.rand(n, device=device) < p).flatten()


def _mask(x: Tensor, p: float) -> Tensor:
    """``(N, 1, 1, 1)`` booleans: the images an operation of probability ``p`` applies to."""
    return (torch.rand(x.shape[0], device=x.device) < p).view(-1, 1, 1, 1)


def _uniform(n: int, low: float, high: float, device: torch.device) -> Tensor:
    return torch.empty(n, device=device).uniform_(low, high)


def _grey(x: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    return (x * torch.tensor(_GREY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)


def resized_crop(
    x: Tensor, size: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> Tensor:
    """torchvision's RandomResizedCrop for a batch: per image, 10 draws of area share and log-uniform aspect, the
    first that fits is cropped (else the whole image) and resized bilinearly to ``size`` (one ``grid_sample``)."""
    n, _, h, w = x.shape
    device = x.device
    area = _uniform(n * 10, *scale, device).view(n, 10) * h * w
    aspect = torch.exp(_uniform(n * 10, math.log(ratio[0]), math.log(ratio[1]), device)).view(n, 10)
    cw, ch = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()
    fits = (cw >= 1) & (cw <= w) & (ch >= 1) & (ch <= h)
    first = fits.float().argmax(1)
    pick = torch.arange(n, device=device)
    cw = torch.where(fits.any(1), cw[pick, first], torch.full((n,), float(w), device=device))
    ch = torch.where(fits.any(1), ch[pick, first], torch.full((n,), float(h), device=device))
    x0 = (torch.rand(n, device=device) * (w - cw + 1)).floor()
    y0 = (torch.rand(n, device=device) * (h - ch + 1)).floor()
    theta = torch.zeros(
        n, 2, 3, device=device, dtype=x.dtype
    )  # output [-1, 1] -> the crop box in input coords
    theta[:, 0, 0], theta[:, 1, 1] = cw / w, ch / h
    theta[:, 0, 2] = (2 * x0 + cw) / w - 1
    theta[:, 1, 2] = (2 * y0 + ch) / h - 1
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def flip(x: Tensor, p: float) -> Tensor:
    return torch.where(_mask(x, p), x.flip(-1), x)


def color_jitter(x: Tensor, view: ViewSettings) -> Tensor:
    """Brightness, contrast, saturation and hue with per-image factors, in a random order per call (torchvision's
    ColorJitter). Brightness scales, contrast blends with the image's mean grey level, saturation with its grey
    image, hue rotates the YIQ chroma plane by up to ``±hue`` turns (torchvision shifts the HSV hue instead; the
    two agree for small shifts). Each step is affine in the colour of a pixel, so the four compose into one
    per-image ``3 x 3`` matrix and offset applied in one pass, clamped to ``[0, 1]`` once at the end (torchvision
    clamps after every step: the two differ only where an intermediate value left ``[0, 1]``)."""
    y, n, c, device = x, x.shape[0], x.shape[1], x.device
    chosen = (torch.rand(n, device=device) < view.jitter).to(y.dtype).view(n, 1, 1)  # the others: identity
    eye = torch.eye(c, dtype=y.dtype, device=device).expand(n, c, c)
    matrix, offset = eye.clone(), torch.zeros(n, c, 1, dtype=y.dtype, device=device)  # colour -> M colour + o
    grey = (
        torch.tensor(_GREY, dtype=y.dtype, device=device).view(1, 1, 3)
        if c == 3
        else torch.ones(1, 1, 1, device=device)
    )
    ones = torch.ones(1, c, 1, dtype=y.dtype, device=device)
    mean = y.mean(dim=(2, 3)).unsqueeze(-1)  # (n, c, 1): the current mean colour is M mean + o
    steps = ["brightness", "contrast"] + (["saturation", "hue"] if c == 3 else [])
    for index in torch.randperm(len(steps)).tolist():
        step, amount = steps[index], getattr(view, steps[index])
        if amount <= 0:
            continue
        f = 1 + chosen * (_uniform(n, max(0.0, 1 - amount), 1 + amount, device).to(y.dtype).view(n, 1, 1) - 1)
        if step == "brightness":
            step_m, step_o = f * eye, torch.zeros_like(offset)
        elif step == "contrast":  # f x + (1 - f) mean grey level
            step_m, step_o = f * eye, (1 - f) * ones * (grey @ (matrix @ mean + offset))
        elif step == "saturation":  # f x + (1 - f) grey(x)
            step_m, step_o = f * eye + (1 - f) * ones @ grey, torch.zeros_like(offset)
        else:
            angle = 2 * math.pi * _uniform(n, -amount, amount, device).to(y.dtype) * chosen.view(n)
            to_yiq = _RGB_TO_YIQ.to(device, y.dtype)
            rotation = torch.zeros(n, 3, 3, dtype=y.dtype, device=device)
            rotation[:, 0, 0] = 1
            rotation[:, 1, 1], rotation[:, 1, 2] = angle.cos(), -angle.sin()
            rotation[:, 2, 1], rotation[:, 2, 2] = angle.sin(), angle.cos()
            step_m, step_o = torch.linalg.inv(to_yiq) @ rotation @ to_yiq, torch.zeros_like(offset)
        matrix, offset = step_m @ matrix, step_m @ offset + step_o
    return torch.baddbmm(offset, matrix, y.reshape(n, c, -1)).view_as(y).clamp(0.0, 1.0)


def grayscale(x: Tensor, p: float) -> Tensor:
    return torch.where(_mask(x, p), _grey(x), x)


def gaussian_blur(x: Tensor, p: float, kernel: int, sigma: tuple[float, float]) -> Tensor:
    """A separable Gaussian blur with a per-image sigma (reflect padding) on the chosen images."""
    idx = _chosen(x.shape[0], p, x.device)
    if idx.numel() == 0:
        return x
    y, n, c = x[idx], idx.numel(), x.shape[1]
    offsets = torch.arange(kernel, device=x.device, dtype=x.dtype) - kernel // 2
    weights = torch.exp(-(offsets[None] ** 2) / (2 * _uniform(n, *sigma, x.device)[:, None].to(x.dtype) ** 2))
    weights = (weights / weights.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n c, k)
    flat = F.pad(y.reshape(1, n * c, *y.shape[-2:]), [kernel // 2] * 4, mode="reflect")
    flat = F.conv2d(flat, weights.view(n * c, 1, 1, kernel), groups=n * c)
    flat = F.conv2d(flat, weights.view(n * c, 1, kernel, 1), groups=n * c)
    x = x.clone()
    x[idx] = flat.view_as(y)
    return x


def solarize(x: Tensor, p: float) -> Tensor:
    """Invert the pixels at or above 0.5 (torchvision / BYOL: threshold 128 of 255) of the chosen images."""
    return torch.where(_mask(x, p) & (x >= 0.5), 1.0 - x, x)


def make_view(x: Tensor, view: ViewSettings, size: int) -> Tensor:
    """One augmented view of a batch in ``[0, 1]`` (before normalisation). A crop scale of ``(1, 1)`` on images
    already ``size`` wide and high crops nothing (a random aspect would otherwise squeeze some of them)."""
    if view.crop_scale != (1.0, 1.0) or tuple(x.shape[-2:]) != (size, size):
        x = resized_crop(x, size, view.crop_scale)
    x = flip(x, view.flip)
    if view.jitter > 0:
        x = color_jitter(x, view)
    if x.shape[1] == 3 and view.grayscale > 0:
        x = grayscale(x, view.grayscale)
    if view.blur > 0 and size >= 8:
        x = gaussian_blur(
            x, view.blur, max(3, int(0.1 * size) // 2 * 2 + 1), (0.1 * size / 224, 2.0 * size / 224)
        )
    if view.solarize > 0:
        x = solarize(x, view.solarize)
    return x


class TwoViewAugment(nn.Module):
    """``(images, step) -> (view1, view2)``: the asymmetric views (module docstring), seeded per step.

    Args:
        size: output side ``S``.
        channels: 1 (grey) or 3 (RGB).
        mean, std: per-channel normalisation after augmentation (one value per channel, or one for all).
        seed: base seed of the views.
        views: the two :class:`ViewSettings` (default: BYOL's view 1 and view 2).
    """

    def __init__(
        self,
        *,
        size: int,
        channels: int = 3,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        seed: int = 0,
        views: tuple[ViewSettings, ViewSettings] | None = None,
    ) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"TwoViewAugment: `channels` must be 1 or 3; got {channels!r}")
        if size < 4:
            raise ValueError(f"TwoViewAugment: `size` must be >= 4; got {size!r}")
        mean = list(mean) * channels if len(mean) == 1 else list(mean)
        std = list(std) * channels if len(std) == 1 else list(std)
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"TwoViewAugment: `mean` / `std` need 1 or {channels} values; got {mean}, {std}")
        self.size, self.channels, self.seed = size, channels, int(seed)
        self.views = views or (ViewSettings(), VIEW_2)
        self.register_buffer("mean", torch.tensor(mean).view(1, channels, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, channels, 1, 1), persistent=False)
        self.calls = 0  # calls within the current step (gradient accumulation, evaluation)
        self._step: int | None = None

    def _seed(self, images: Tensor, step: int) -> int:
        if images.dim() != 4 or images.shape[1] != self.channels:
            raise ValueError(
                f"TwoViewAugment: expected images (N, {self.channels}, H, W) in [0, 1]; got "
                f"{tuple(images.shape)}"
            )
        if step != self._step:
            self._step, self.calls = step, 0
        seed = hash((self.seed, rank(), int(step), self.calls)) % (2**63 - 1)
        self.calls += 1
        return seed

    def views_of(self, images: Tensor, step: int, count: int) -> list[Tensor]:
        """The first ``count`` views (normalised) of ``images`` for ``step``, drawn from the seeded generator."""
        seed = self._seed(images, step)
        with random_state_kept(images.device), torch.no_grad():
            torch.manual_seed(seed)
            images = images.float()
            return [
                (make_view(images, view, self.size) - self.mean) / self.std for view in self.views[:count]
            ]

    def forward(self, images: Tensor, step: int = 0) -> tuple[Tensor, Tensor]:
        v1, v2 = self.views_of(images, step, 2)
        return v1, v2


class TrainingView:
    """``(pixel_values, step) -> pixel_values``: the light augmentation of supervised and contrastive training (one
    view): a random resized crop of ``crop_min_scale`` to all of each image's area, back to its own size, and a
    left-right flip with probability ``flip``. Both are geometric, so the images may come normalised (as the
    collators give them); seeded per (seed, rank, step, call) as :class:`TwoViewAugment`. ``crop_min_scale = 1``
    and ``flip = 0`` leave the images as they are (:attr:`active` is false)."""

    def __init__(self, *, crop_min_scale: float = 1.0, flip: float = 0.0, seed: int = 0) -> None:
        if not 0.0 < crop_min_scale <= 1.0 or not 0.0 <= flip <= 1.0:
            raise ValueError(
                f"TrainingView: needs 0 < crop_min_scale <= 1 and 0 <= flip <= 1; got {crop_min_scale}, {flip}"
            )
        self.view = ViewSettings(
            crop_scale=(float(crop_min_scale), 1.0), flip=float(flip), jitter=0.0, grayscale=0.0, blur=0.0
        )
        self.seed = int(seed)
        self._augment: TwoViewAugment | None = None

    @property
    def active(self) -> bool:
        return self.view.crop_scale[0] < 1.0 or self.view.flip > 0.0

    def __call__(self, pixel_values: Tensor, step: int) -> Tensor:
        if not self.active:
            return pixel_values
        side, channels = pixel_values.shape[-1], pixel_values.shape[1]
        if self._augment is None or (self._augment.size, self._augment.channels) != (side, channels):
            self._augment = TwoViewAugment(
                size=side, channels=channels, mean=(0.0,), std=(1.0,), seed=self.seed, views=(self.view,) * 2
            )
        view = self._augment.to(pixel_values.device).views_of(pixel_values, step, 1)[0]
        return view.to(pixel_values.dtype)

"""CLIPLoss (symmetric InfoNCE) and CrossModalMCELoss against transcriptions of their formulas.

Run: .venv/bin/python -m pytest tests/losses/test_losses_clip.py -q
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from matrix_llm import info
from matrix_llm.losses import LOSSES, CLIPLoss, CrossModalMCELoss

F64 = torch.float64


def _pairs(n=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64), torch.randn(n, d, generator=g, dtype=F64)


def _clip_reference(images: np.ndarray, texts: np.ndarray, scale: float) -> float:
    """The CLIP paper's pseudo-code (Radford et al. 2021, Figure 3), written out with loops."""
    i = images / np.linalg.norm(images, axis=1, keepdims=True)
    t = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    logits = scale * i @ t.T
    n = len(i)
    loss_i = -np.mean([logits[k, k] - math.log(np.exp(logits[k]).sum()) for k in range(n)])
    loss_t = -np.mean([logits[k, k] - math.log(np.exp(logits[:, k]).sum()) for k in range(n)])
    return (loss_i + loss_t) / 2


@pytest.mark.parametrize("log_scale", [0.0, math.log(1 / 0.07), math.log(100)])
def test_clip_loss_is_the_papers_symmetric_cross_entropy(log_scale):
    images, texts = _pairs()
    out = CLIPLoss()(images, texts, torch.tensor(log_scale, dtype=F64))
    assert out.total.item() == pytest.approx(
        _clip_reference(images.numpy(), texts.numpy(), math.exp(log_scale)), rel=1e-10
    )
    assert LOSSES["clip"] is CLIPLoss


def test_clip_loss_gradients_reach_both_towers_and_the_temperature_and_ties_stay_finite():
    images, texts = _pairs()
    texts[3] = texts[2]  # identical captions in a batch
    images[5] = images[4]  # duplicated images
    images.requires_grad_(True)
    texts.requires_grad_(True)
    scale = torch.tensor(math.log(1 / 0.07), dtype=F64, requires_grad=True)
    out = CLIPLoss()(images, texts, scale)
    out.total.backward()
    assert torch.isfinite(out.total) and all(torch.isfinite(x.grad).all() for x in (images, texts, scale))
    assert scale.grad.item() != 0.0
    aligned = CLIPLoss()(images.detach(), images.detach() * 3, torch.tensor(math.log(100.0), dtype=F64))
    assert aligned.parts["contrastive_accuracy"].item() >= 4 / 6  # duplicated rows tie; the rest are found
    with pytest.raises(ValueError, match="at least 2 image-text pairs"):
        CLIPLoss()(images[:1].detach(), texts[:1].detach(), scale)


def test_clip_loss_with_caption_keys_leaves_same_caption_pairs_out_of_both_softmaxes():
    images, texts = _pairs()
    scale = torch.tensor(math.log(1 / 0.07), dtype=F64)
    keys = torch.tensor([0, 1, 0, 2, 1, 0])
    i = (images / images.norm(dim=1, keepdim=True)).numpy()
    t = (texts / texts.norm(dim=1, keepdim=True)).numpy()
    logits, k = math.exp(scale.item()) * i @ t.T, keys.numpy()
    kept = [
        [j for j in range(6) if j == row or k[j] != k[row]] for row in range(6)
    ]  # own pair + other captions
    loss_i = -np.mean([logits[r, r] - math.log(np.exp(logits[r, kept[r]]).sum()) for r in range(6)])
    loss_t = -np.mean([logits[r, r] - math.log(np.exp(logits[kept[r], r]).sum()) for r in range(6)])
    out = CLIPLoss()(images, texts, scale, keys)
    assert out.total.item() == pytest.approx((loss_i + loss_t) / 2, rel=1e-10)
    assert out.total < CLIPLoss()(images, texts, scale).total  # fewer negatives
    distinct = CLIPLoss()(
        images, texts, scale, torch.tensor([5, 1, 0, 2, 9, 3])
    )  # one caption per pair: CLIP's loss
    torch.testing.assert_close(distinct.total, CLIPLoss()(images, texts, scale).total, rtol=0, atol=0)
    same = CLIPLoss()(
        images, texts, scale, torch.zeros(6, dtype=torch.long)
    )  # one caption: nothing to contrast
    assert same.total.item() == 0.0 and same.parts["contrastive_accuracy"].item() == 1.0
    for bad, match in (
        (keys.float(), "integer"),
        (keys[:5], r"shape \(6,\)"),
        (keys.tolist(), "torch.Tensor"),
    ):
        with pytest.raises((ValueError, TypeError), match=f"caption_keys.*{match}"):
            CLIPLoss()(images, texts, scale, bad)


def test_crossmodal_mce_is_the_symmetric_covariance_mce_and_smallest_for_matching_distributions():
    images, texts = _pairs(n=10, d=4)
    eye = torch.eye(4, dtype=F64)
    ci, ct = info.covariance(images) + 0.5 * eye, info.covariance(texts) + 0.5 * eye
    expected = 0.5 * (info.mce(ct, ci) + info.mce(ci, ct))
    out = CrossModalMCELoss(mu=0.5)(images, texts)
    torch.testing.assert_close(out.total, expected)
    same = CrossModalMCELoss(mu=0.5)(
        images, images.flip(0)
    )  # the same rows in another order: same covariance
    assert same.total.item() == pytest.approx(info.mce(ci, ci).item(), rel=1e-10) and same.total < out.total
    wide_i, wide_t = _pairs(n=6, d=64)  # batch < dim: the cheap side, same value as the d x d matrices
    big = torch.eye(64, dtype=F64)
    dense = 0.5 * (
        info.mce(info.covariance(wide_t) + 0.5 * big, info.covariance(wide_i) + 0.5 * big)
        + info.mce(info.covariance(wide_i) + 0.5 * big, info.covariance(wide_t) + 0.5 * big)
    )
    torch.testing.assert_close(CrossModalMCELoss()(wide_i, wide_t).total, dense)
    with pytest.raises(ValueError, match="at least 2 rows"):
        CrossModalMCELoss()(images[:1], texts)


def test_crossmodal_entropy_closed_form_for_pairs_equals_the_grouped_loop():
    from matrix_llm.losses import CrossModalEntropyLoss

    images, texts = _pairs(n=5, d=6)
    texts[2] = images[2] * 4  # an aligned pair: entropy 0, finite gradient
    labels = torch.arange(5)
    fast = CrossModalEntropyLoss()(images, texts, labels)
    loop = torch.stack([info.feature_entropy(torch.stack([images[i], texts[i]])) for i in range(5)]).mean()
    torch.testing.assert_close(fast.total, loop)
    normalised = CrossModalEntropyLoss(normalize=True)(images, texts, labels)
    torch.testing.assert_close(normalised.total, loop / math.log(2))
    images.requires_grad_(True)
    CrossModalEntropyLoss()(images, texts, labels).total.backward()
    assert torch.isfinite(images.grad).all()

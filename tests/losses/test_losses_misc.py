"""Tests for LossOutput, the LOSSES registry, the input check shared by every loss, CrossModalEntropyLoss, MIRHDRLoss and TCRLoss (MATH.md §5, §6.1).

.venv/bin/python -m pytest tests/losses/test_losses_misc.py -q
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from matrix_llm import losses
from matrix_llm.losses import LOSSES, CrossModalEntropyLoss, LossOutput, MIRHDRLoss, TCRLoss


def _etf(c: int) -> torch.Tensor:
    """Rows of a C-class simplex ETF in R^C: unit vectors with pairwise inner product -1/(C-1)."""
    m = torch.eye(c, dtype=torch.float64) - torch.ones(c, c, dtype=torch.float64) / c
    return torch.nn.functional.normalize(m, dim=1)


# ---------------------------------------------------------------------------------------------------------------
# The shared input check


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_finite_check_names_nan_and_inf_and_passes_overflowing_finite_sums(dtype):
    """The check flags a tensor by its sum: NaN, Inf and +Inf/-Inf pairs (whose sum is NaN) are caught and
    counted; finite values whose sum overflows (float32 3e38 twice; float16 sums in float32 and does not
    overflow) pass; labels out of range are reported after the features."""
    from matrix_llm.losses.base import check_finite_and_range

    big = torch.finfo(dtype).max
    ok = torch.full((2, 3), big, dtype=dtype)
    check_finite_and_range("f", {"a": ok, "b": torch.zeros(2, 3, dtype=dtype)})
    for values, counts in (([float("nan")], "1 NaN, 0 Inf"), ([float("inf"), -float("inf")], "0 NaN, 2 Inf")):
        bad = torch.zeros(2, 3, dtype=dtype)
        bad.view(-1)[: len(values)] = torch.tensor(values, dtype=dtype)
        with pytest.raises(ValueError, match=rf"f: `b` contains non-finite values \({counts} of 6\)"):
            check_finite_and_range("f", {"a": ok, "b": bad})
    labels = torch.tensor([0, 3])
    check_finite_and_range("f", {"a": ok}, labels, 4)
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, 3\); got values in \[0, 3\]"):
        check_finite_and_range("f", {"a": ok}, labels, 3)


# ---------------------------------------------------------------------------------------------------------------
# LossOutput and registry


def test_loss_output_is_frozen_and_checks_scalars():
    out = LossOutput(total=torch.tensor(1.0), parts={"a": torch.tensor(2.0)})
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.total = torch.tensor(3.0)  # type: ignore[misc]
    with pytest.raises(ValueError, match="total must be a scalar"):
        LossOutput(total=torch.ones(2))
    with pytest.raises(ValueError, match=r"parts\['a'\] must be a scalar"):
        LossOutput(total=torch.tensor(1.0), parts={"a": torch.ones(3)})


def test_registry_lists_every_loss_and_all_is_complete():
    assert set(LOSSES) == {
        "matrix_ssl",
        "mec",
        "nt_xent",
        "barlow_twins",
        "clip",
        "crossmodal_mce",
        "token_mce",
        "crossmodal_entropy",
        "mir_hdr",
        "tcr",
    }
    for name in losses.__all__:
        assert hasattr(losses, name)
    for cls in LOSSES.values():
        assert cls.__name__ in losses.__all__
        assert isinstance(cls(), torch.nn.Module)  # every loss builds with its defaults


# ---------------------------------------------------------------------------------------------------------------
# CrossModalEntropyLoss


def test_crossmodal_zero_when_images_collapse_onto_their_text():
    text = torch.randn(3, 5, dtype=torch.float64)
    labels = torch.tensor([0, 0, 2, 2, 2])
    images = text[labels] * torch.tensor([[1.0], [2.0], [0.5], [3.0], [1.0]], dtype=torch.float64)
    out = CrossModalEntropyLoss()(images, text, labels)
    assert abs(out.total.item()) < 1e-10
    assert out.parts["num_classes"].item() == 2.0


def test_crossmodal_orthogonal_rows_give_log_group_size_averaged_over_present_classes():
    basis = torch.eye(8, dtype=torch.float64)
    text = basis[:3]  # classes 0, 1, 2; class 1 is absent from the batch
    labels = torch.tensor([0, 2, 2, 2])
    images = basis[3:7]
    out = CrossModalEntropyLoss()(images, text, labels)
    expected = (math.log(2) + math.log(4)) / 2  # class 0: 1 image + text; class 2: 3 images + text
    assert abs(out.total.item() - expected) < 1e-10
    normalised = CrossModalEntropyLoss(normalize=True)(images, text, labels)
    assert abs(normalised.total.item() - 1.0) < 1e-10
    torch.testing.assert_close(out.parts["entropy"], out.total.detach())


def test_crossmodal_gradients_finite_and_reach_both_modalities():
    images = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    text = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 1, 2, 3, 3, 3, 0, 2, 1])
    out = CrossModalEntropyLoss()(images, text, labels)
    out.total.backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert torch.isfinite(text.grad).all() and text.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda x, t: CrossModalEntropyLoss()(x, t, labels).total, (images, text))


def test_crossmodal__errors():
    images, text, labels = torch.randn(4, 3), torch.randn(2, 3), torch.tensor([0, 1, 1, 0])
    with pytest.raises(ValueError, match="`text_features` must have 3 columns"):
        CrossModalEntropyLoss()(images, text[:, :2], labels)
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\)"):
        CrossModalEntropyLoss()(images, text, torch.tensor([0, 1, 2, 0]))
    bad = images.clone()
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="`image_features` contains non-finite"):
        CrossModalEntropyLoss()(bad, text, labels)


# ---------------------------------------------------------------------------------------------------------------
# MIRHDRLoss


@pytest.mark.parametrize(
    ("c", "per_class", "mir"), [(10, 1, 0.952350782540), (10, 3, 0.952350782540), (4, 2, 0.753953169048)]
)
def test_mir_hdr_at_neural_collapse_matches_math_md(c, per_class, mir):
    heads = _etf(c) * 3.0  # scale is irrelevant after row normalisation
    labels = torch.arange(c).repeat_interleave(per_class)
    features = _etf(c)[labels] * 0.5
    out = MIRHDRLoss(alpha=1.0, beta=2.0)(features, heads, labels)
    assert abs(out.parts["mir"].item() - mir) < 1e-9
    assert abs(out.parts["hdr"].item()) < 1e-9
    assert abs(out.total.item() + mir) < 1e-9


def test_mir_hdr_weights_and_gradients():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(12, 5, generator=g, dtype=torch.float64, requires_grad=True)
    heads = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(4).repeat(3)
    out = MIRHDRLoss(alpha=0.3, beta=0.7)(features, heads, labels)
    torch.testing.assert_close(out.total.detach(), -0.3 * out.parts["mir"] + 0.7 * out.parts["hdr"])
    out.total.backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
    assert torch.isfinite(heads.grad).all() and heads.grad.abs().sum() > 0


def test_mir_hdr__errors():
    features, heads = torch.randn(4, 3), torch.randn(2, 3)
    with pytest.raises(ValueError, match="`head_weight` must have 3 columns"):
        MIRHDRLoss()(features, heads[:, :2], torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="at least 2 samples"):
        MIRHDRLoss()(features[:1], heads, torch.tensor([0]))
    with pytest.raises(ValueError, match="alpha"):
        MIRHDRLoss(alpha=-1.0)


# ---------------------------------------------------------------------------------------------------------------
# TCRLoss


def test_tcr_four_orthonormal_rows_matches_math_md():
    # MATH.md §6.1: 4 orthonormal rows, d = 8, code mu = 3: logdet(I + (3/8) ZᵀZ) = 4 log(1 + 3/8) = 1.273814924474,
    # which is TCR_{d/3}(Z) - d log(d/3).
    z = torch.eye(8, dtype=torch.float64)[:4] * 2.0  # rows are normalised inside
    mu = 8 / 3
    out = TCRLoss(mu=mu, weight=0.5)(z)
    expected = 4 * math.log(1 + mu) + 4 * math.log(mu)
    assert abs(out.parts["tcr"].item() - expected) < 1e-10
    assert abs(out.parts["tcr"].item() - 8 * math.log(8 / 3) - 1.273814924474) < 1e-10
    assert abs(out.total.item() + 0.5 * expected) < 1e-10


def test_tcr_centering_uses_centred_normalised_rows():
    z = torch.randn(6, 4, dtype=torch.float64)
    zn = torch.nn.functional.normalize(z, dim=1)
    zc = zn - zn.mean(0)
    expected = torch.logdet(2.0 * torch.eye(4, dtype=torch.float64) + zc.T @ zc)
    out = TCRLoss(mu=2.0, center=True)(z)
    torch.testing.assert_close(out.parts["tcr"], expected)


def test_tcr_gradcheck_and_gather_identity():
    z = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: TCRLoss(mu=0.5)(x).total, (z,))
    torch.testing.assert_close(TCRLoss(gather=True)(z).total, TCRLoss()(z).total)


def test_umae_second_order_is_mean_squared_similarity_and_tracks_tcr_for_large_mu():
    """MATH.md 6.1: 4 orthonormal rows give mean(sim²) = 1/n = 0.25; for large mu, -TCR ≈ const + ||ZZᵀ||²/(2mu²)."""
    z = torch.eye(8, dtype=torch.float64)[:4] * 3.0
    out = TCRLoss(second_order=True, weight=2.0)(z)
    assert out.parts["uniformity"].item() == pytest.approx(
        0.25, abs=1e-12
    ) and out.total.item() == pytest.approx(0.5)
    a, b = torch.randn(256, 32, dtype=torch.float64), torch.randn(256, 32, dtype=torch.float64)
    b[:, 0] += 3.0  # less uniform: larger similarities
    mu = 1e5  # the third-order term is ~(2/3) λ_max/mu of the second: 1% here
    d_tcr = TCRLoss(mu=mu)(b).total - TCRLoss(mu=mu)(a).total
    d_umae = TCRLoss(second_order=True)(b).total - TCRLoss(second_order=True)(a).total
    assert d_tcr.item() == pytest.approx((d_umae * 256**2 / (2 * mu**2)).item(), rel=1e-2)


def test_tcr_bfloat16_close_to_float32():
    z = torch.randn(32, 8)
    ref = TCRLoss(mu=0.5)(z).total
    out = TCRLoss(mu=0.5)(z.bfloat16()).total
    assert out.dtype == torch.float32 and torch.isfinite(out)
    assert abs(out.item() - ref.item()) < 2e-2 * abs(ref.item())


def test_tcr__errors():
    with pytest.raises(ValueError, match="mu"):
        TCRLoss(mu=0.0)
    with pytest.raises(ValueError, match=r"`z` must have shape \(n, d\)"):
        TCRLoss()(torch.randn(3))

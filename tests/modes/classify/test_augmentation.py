"""The training augmentation of `matrix-llm classify` (``crop_min_scale``, ``horizontal_flip``): what
:class:`~matrix_llm.data.augment.TrainingView` does to a batch, that the objective applies it in training only, and
that the command wires the fields through to every training batch and into the model card.

    .venv/bin/python -m pytest tests/modes/classify/test_augmentation.py -q
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from matrix_llm.data.augment import TrainingView
from matrix_llm.modes import ClassificationObjective


def _rows_equal(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a == b).flatten(1).all(1)


def test_a_flip_only_view_mirrors_about_half_the_images_exactly_seeded_per_step():
    x = torch.rand(64, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    out = TrainingView(flip=0.5, seed=1)(x, 5)
    same, mirrored = _rows_equal(out, x), _rows_equal(out, x.flip(-1))
    assert (same ^ mirrored).all() and 16 < int(mirrored.sum()) < 48  # each image itself or its mirror
    torch.testing.assert_close(TrainingView(flip=0.5, seed=1)(x, 5), out)  # a rerun draws the same
    assert not torch.equal(TrainingView(flip=0.5, seed=1)(x, 6), out)  # another step, other flips


def test_a_crop_view_keeps_the_size_and_moves_the_pixels_and_an_inactive_view_is_the_identity():
    x = torch.rand(16, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    crops = TrainingView(crop_min_scale=0.3, seed=2)(x, 1)
    assert crops.shape == x.shape and not _rows_equal(crops, x).any()
    assert not _rows_equal(crops, x.flip(-1)).any()
    plain = TrainingView()
    assert not plain.active and plain(x, 1) is x
    with pytest.raises(ValueError, match="0 < crop_min_scale <= 1"):
        TrainingView(crop_min_scale=0.0)


class _Flat(nn.Module):
    """A linear classifier on the flattened image (the features its head sees are the pixels)."""

    def __init__(self, c: int, d: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(num_labels=c)
        self.classifier = nn.Linear(d, c, bias=False)

    def forward(self, pixel_values):
        class Out(dict):
            __getattr__ = dict.__getitem__

        return Out(logits=self.classifier(pixel_values.flatten(1)))


def test_the_objective_augments_training_batches_and_leaves_evaluation_alone():
    torch.manual_seed(0)
    model, x, labels = _Flat(4, 16), torch.rand(8, 1, 4, 4), torch.arange(4).repeat(2)
    flipping, plain = ClassificationObjective(augment=TrainingView(flip=1.0)), ClassificationObjective()
    model.train()
    loss = flipping(model, {"pixel_values": x, "labels": labels}, step=3).batch_loss
    torch.testing.assert_close(
        loss, plain(model, {"pixel_values": x.flip(-1), "labels": labels}, step=3).batch_loss
    )
    model.eval()
    loss = flipping(model, {"pixel_values": x, "labels": labels}, step=3).batch_loss
    torch.testing.assert_close(loss, plain(model, {"pixel_values": x, "labels": labels}, step=3).batch_loss)


DIGITS = ["--config", "classify/digits.yaml", "--max_train_samples", "96", "--max_eval_samples", "32"]
DIGITS += ["--per_device_train_batch_size", "16", "--max_steps", "3", "--eval_strategy", "steps"]
DIGITS += ["--eval_steps", "3", "--disable_tqdm", "true"]


def test_the_command_flips_every_training_batch_and_no_evaluation_batch(tmp_path, monkeypatch):
    """`--horizontal_flip true`: each of the 3 training batches reaches the model as the collated images, every one
    of them itself or its mirror and some mirrored; the evaluation batches are not augmented; the card says so."""
    from matrix_llm.modes.classify import command as classify

    calls = []
    original = TrainingView.__call__

    def recording(self, pixel_values, step):
        out = original(self, pixel_values, step)
        calls.append((pixel_values.clone(), out.clone(), step))
        return out

    monkeypatch.setattr(TrainingView, "__call__", recording)
    out = tmp_path / "run"
    assert classify.main([*DIGITS, "--horizontal_flip", "true", "--output_dir", str(out)]) == 0
    assert [step for *_, step in calls] == [0, 1, 2]
    for images, seen, _ in calls:
        assert (_rows_equal(seen, images) | _rows_equal(seen, images.flip(-1))).all()
    assert sum(int((~_rows_equal(seen, images)).sum()) for images, seen, _ in calls) > 0
    card = (out / "README.md").read_text()
    assert "Training augmentation: left-right flip (p 0.5)." in card

    calls.clear()
    assert classify.main([*DIGITS, "--output_dir", str(tmp_path / "plain")]) == 0
    assert calls == [] and "Training augmentation: none." in (tmp_path / "plain" / "README.md").read_text()


def test_bad_augmentation_settings_are_refused_before_anything_loads(capsys):
    from matrix_llm.modes.classify import command as classify

    assert classify.main([*DIGITS, "--crop_min_scale", "0"]) == 2
    assert "`crop_min_scale`: expected a number in (0, 1] (1: no crop); got 0.0" in capsys.readouterr().err
    argv = ["--config", "classify/digits.yaml", "--model_name_or_path", "tiny-bert", "--text_column", "text"]
    assert classify.main([*argv, "--horizontal_flip", "true"]) == 2
    assert "`crop_min_scale` / `horizontal_flip`: image augmentations" in capsys.readouterr().err

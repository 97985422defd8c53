"""ImageCollator on the images users bring: mixed sizes and PIL modes, arrays, unlabelled rows.

Run: .venv/bin/python -m pytest tests/data/test_images.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from matrix_llm.data.images import ImageCollator


def _pil(mode: str, size: tuple[int, int], value: int) -> Image.Image:
    rgb = Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8))
    return rgb.convert(mode)


@pytest.mark.filterwarnings("error")  # PIL's read-only arrays must not reach torch.from_numpy (it warns)
@pytest.mark.parametrize("channels", [1, 3])
def test_mixed_sizes_and_modes_are_converted(channels):
    rows = [
        {"image": _pil("L", (10, 7), 200), "label": 0},
        {"image": _pil("RGBA", (20, 20), 100), "label": 1},
        {"image": _pil("P", (5, 9), 50), "label": 2},
        {"image": np.full((6, 6), 255, np.uint8), "label": 0},
    ]
    batch = ImageCollator(image_size=8, channels=channels, mean=0.0, std=1.0)(rows)
    assert batch["pixel_values"].shape == (4, channels, 8, 8)
    means = batch["pixel_values"].mean(dim=(1, 2, 3))
    torch.testing.assert_close(means, torch.tensor([200, 100, 50, 255]) / 255.0, atol=0.02, rtol=0)
    assert batch["labels"].tolist() == [0, 1, 2, 0]


def test_unlabelled_rows_give_pixels_only_and_bad_labels_are_named():
    collate = ImageCollator(image_size=4)
    assert set(collate([{"image": np.zeros((4, 4), np.uint8)}])) == {"pixel_values"}
    with pytest.raises(ValueError, match="labels must be >= 0 or -100"):
        collate([{"image": np.zeros((4, 4), np.uint8), "label": -3}])


def test_an_unreadable_image_in_an_imagefolder_is_named(tmp_path):
    from matrix_llm.data.images import load_image_dataset

    for name in ("cat", "dog"):
        (tmp_path / "train" / name).mkdir(parents=True)
        _pil("RGB", (6, 6), 10).save(tmp_path / "train" / name / "ok.png")
    (tmp_path / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    ds = load_image_dataset(str(tmp_path), "train")
    collate = ImageCollator(image_size=4, channels=3)
    rows = [ds[i] for i in range(len(ds))]
    broken = [r for r in rows if "broken" in (r["image"].get("path") or "")]
    assert collate([r for r in rows if r not in broken])["pixel_values"].shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"cannot read the image .*broken\.png"):
        collate(rows)


def test_saved_image_collator_uses_the_processor_else_the_config(tmp_path):
    from transformers import ResNetConfig, ViTImageProcessor

    from matrix_llm.data.images import saved_image_collator
    from matrix_llm.models.tiny import build_image_classifier

    build_image_classifier("tiny-vit", num_labels=3, image_size=8).save_pretrained(tmp_path / "tiny")
    config = build_image_classifier("tiny-vit", num_labels=3, image_size=8).config
    plain = saved_image_collator(str(tmp_path / "tiny"), config)
    assert plain.processor is None and (plain.image_size, plain.channels) == (8, 1)
    ViTImageProcessor(size={"height": 12, "width": 12}).save_pretrained(tmp_path / "tiny")
    assert saved_image_collator(str(tmp_path / "tiny"), config).processor is not None
    with pytest.raises(ValueError, match="no image processor and no config.image_size"):
        saved_image_collator(str(tmp_path / "nothing"), ResNetConfig())

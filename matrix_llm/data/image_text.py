"""Image-text data for ``matrix-llm clip``: rendered scenes with captions (offline), image-caption datasets, and the
collator that makes ``pixel_values`` and tokenised captions.

:func:`scene_dataset` draws, seeded, one shape (circle, square, triangle, cross) of one colour (red, green,
blue, yellow, magenta, cyan) at one of five places (top left, top right, bottom left, bottom right, centre) in
one of two sizes on a dark, lightly noisy background, and captions it ("a small red circle in the top left").
Some colour-shape compositions (:data:`HELD_OUT`, one per colour) never appear in the ``train`` split: the
``zeroshot`` split holds only them, so zero-shot classification over the 24 colour-shape names there measures
composition, not memory. ``test`` holds fresh scenes of the training compositions (for retrieval).
``scenes-classes`` (:data:`SCENE_SOURCES`) draws the same scenes but captions them by class only ("a red circle"):
18 distinct training captions instead of 180, so captions repeat within a batch (several images per class, the
few-classes regime of the matrix-entropy alignment).

:func:`load_image_text_dataset` reads a Hub / local dataset with an image column and a caption column (a string
or a list of captions per image: each image is paired with one of them per epoch), naming the columns it has
when one is missing; or, with caption templates, a labelled image dataset (an IDX folder such as Fashion-MNIST,
an ``imagefolder``, a Hub classification set) captioned from its class names (:func:`class_captions`), optionally
without some classes, so that zero-shot evaluation on them measures classes never seen in training.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

import numpy as np

from .images import MissingColumnError, data_file, data_folder, load_split

__all__ = [
    "CLASS_NAMES",
    "HELD_OUT",
    "SCENE_SOURCES",
    "CaptionByClass",
    "ImageTextCollator",
    "captions_by_image",
    "class_captions",
    "image_paths",
    "load_image_text_dataset",
    "render_scene",
    "scene_dataset",
    "scene_templates",
]

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 220, 40),
    "magenta": (220, 50, 210),
    "cyan": (40, 210, 220),
}
PLACES = {
    "top left": (0.27, 0.27),
    "top right": (0.73, 0.27),
    "bottom left": (0.27, 0.73),
    "bottom right": (0.73, 0.73),
    "centre": (0.5, 0.5),
}
SIZES = {"small": 0.17, "large": 0.3}
# one held-out shape per colour, so every word is seen in training but these pairs never are
HELD_OUT = {
    ("red", "circle"),
    ("green", "square"),
    ("blue", "triangle"),
    ("yellow", "cross"),
    ("magenta", "circle"),
    ("cyan", "square"),
}
CLASS_NAMES = [
    f"{colour} {shape}" for colour, shape in itertools.product(COLOURS, SHAPES)
]  # zero-shot classes
CAPTIONS = {
    "full": "a {size} {name} in the {place}",
    "class": "a {name}",
}  # caption style -> format (name: a class)
SCENE_SOURCES = {
    "scenes": "full",
    "scenes-classes": "class",
}  # dataset name -> caption style of scene_dataset


def render_scene(
    shape: str, colour: str, place: str, size: str, *, side: int = 32, rng: np.random.Generator | None = None
) -> np.ndarray:
    """An ``(side, side, 3)`` uint8 image of one shape (a little position, size and background jitter with
    ``rng``)."""
    rng = rng or np.random.default_rng(0)
    cx, cy = (np.array(PLACES[place]) + rng.uniform(-0.04, 0.04, 2)) * side
    r = SIZES[size] * side * rng.uniform(0.9, 1.1)
    yy, xx = np.mgrid[0:side, 0:side] + 0.5
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        mask = dx**2 + dy**2 <= (r * 0.55) ** 2
    elif shape == "square":
        mask = (np.abs(dx) <= r * 0.5) & (np.abs(dy) <= r * 0.5)
    elif shape == "triangle":  # apex up
        mask = (dy <= r * 0.5) & (dy >= -r * 0.5) & (np.abs(dx) <= (dy + r * 0.5) * 0.6)
    elif shape == "cross":
        arm = r * 0.17
        mask = ((np.abs(dx) <= arm) & (np.abs(dy) <= r * 0.55)) | (
            (np.abs(dy) <= arm) & (np.abs(dx) <= r * 0.55)
        )
    else:
        raise ValueError(f"render_scene: `shape` must be one of {SHAPES}; got {shape!r}")
    image = rng.integers(0, 30, size=(side, side, 3)).astype(np.float64)
    image[mask] = np.array(COLOURS[colour]) * rng.uniform(0.85, 1.0)
    return image.clip(0, 255).astype(np.uint8)


def scene_dataset(
    split: str = "train", n: int = 2000, *, side: int = 32, seed: int = 0, captions: str = "full"
) -> Any:
    """``n`` captioned scenes as a ``datasets.Dataset`` (``image``, ``caption``, ``label`` = index in
    :data:`CLASS_NAMES`). ``train`` / ``test``: the compositions outside :data:`HELD_OUT`; ``zeroshot``: only
    those in it. Each split draws from its own seed. ``captions``: ``"full"`` ("a small red circle in the top
    left") or ``"class"`` ("a red circle"; the same images)."""
    import datasets

    if split not in ("train", "test", "zeroshot"):
        raise ValueError(f"scene_dataset: `split` must be 'train', 'test' or 'zeroshot'; got {split!r}")
    if captions not in CAPTIONS:
        raise ValueError(f"scene_dataset: `captions` must be 'full' or 'class'; got {captions!r}")
    pairs = [
        (c, s) for c, s in itertools.product(COLOURS, SHAPES) if ((c, s) in HELD_OUT) == (split == "zeroshot")
    ]
    rng = np.random.default_rng([seed, ("train", "test", "zeroshot").index(split)])
    images, texts, labels = [], [], []
    for _ in range(n):
        colour, shape = pairs[rng.integers(len(pairs))]
        place = list(PLACES)[rng.integers(len(PLACES))]
        size = list(SIZES)[rng.integers(len(SIZES))]
        images.append(render_scene(shape, colour, place, size, side=side, rng=rng))
        texts.append(CAPTIONS[captions].format(size=size, name=f"{colour} {shape}", place=place))
        labels.append(CLASS_NAMES.index(f"{colour} {shape}"))
    return datasets.Dataset.from_dict({"image": images, "caption": texts, "label": labels})


def scene_templates(captions: str = "full") -> list[str]:
    """The zero-shot prompt templates (``{}``: a class name) of a caption style: its caption format at every size and
    place it names (``"full"``: 10 templates, ``"class"``: one)."""
    fmt = CAPTIONS[captions]
    return list(
        dict.fromkeys(fmt.format(size=size, name="{}", place=place) for size in SIZES for place in PLACES)
    )


class CaptionByClass:
    """``{image, label} -> {image, caption}`` one row at a time (a stream's :func:`class_captions`): the caption is
    every template filled with the class name (a list; one template: a string); a row of an ``exclude`` class is
    left out (``None``); a label without a name is an error naming it."""

    def __init__(self, class_names: list[str], templates: list[str], exclude: tuple[str, ...] = ()) -> None:
        unknown = [c for c in exclude if c not in class_names]
        if unknown:
            raise ValueError(
                f"exclude_classes: {unknown} are not classes of this dataset; its classes are {class_names}"
            )
        if len(set(exclude)) == len(class_names):
            raise ValueError(f"exclude_classes: every class ({class_names}) would be left out of training")
        filled = [[t.format(name) for t in templates] for name in class_names]
        self.captions = [f if len(templates) > 1 else f[0] for f in filled]
        self.excluded = {class_names.index(c) for c in exclude}

    def __call__(self, row: dict[str, Any]) -> dict[str, Any] | None:
        label = int(row["label"])
        if not 0 <= label < len(self.captions):
            raise ValueError(f"label {label} has no class name (there are {len(self.captions)} class names)")
        return None if label in self.excluded else {"image": row["image"], "caption": self.captions[label]}


def class_captions(
    rows: Any, class_names: list[str], templates: list[str], *, exclude: tuple[str, ...] = ()
) -> Any:
    """``image`` / ``label`` rows captioned by class: each row's ``caption`` is every template filled with its class
    name (a list: the collator pairs the image with one of them per epoch; one template: a string). Rows of the
    ``exclude`` classes are left out.

    Raises:
        ValueError: a label without a name, or an excluded class that is not one of ``class_names`` (listing them),
            or every class excluded.
    """
    captioner = CaptionByClass(class_names, templates, exclude)
    labels = np.asarray(rows["label"])
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(
            f"labels run from {labels.min()} to {labels.max()}, but there are {len(class_names)} class "
            f"names ({class_names})"
        )
    keep = ~np.isin(labels, sorted(captioner.excluded))
    rows = rows.select(np.flatnonzero(keep)) if not keep.all() else rows
    captions = [captioner.captions[y] for y in labels[keep]]
    return rows.add_column("caption", captions)


def load_image_text_dataset(
    source: str,
    split: str = "train",
    *,
    config: str | None = None,
    image_column: str = "image",
    caption_column: str = "caption",
    n: int | None = None,
    seed: int = 0,
    caption_templates: list[str] | None = None,
    class_names: list[str] | None = None,
    exclude_classes: tuple[str, ...] = (),
    group_by_image: bool = False,
) -> Any:
    """``scenes`` / ``scenes-classes`` (:func:`scene_dataset`, ``n`` rows), or a Hub / local dataset with ``image_column`` and
    ``caption_column`` (renamed ``image`` / ``caption``; a caption may be a list of strings). With
    ``caption_templates``: a labelled image dataset (:func:`~matrix_llm.data.images.load_image_dataset`) captioned
    by :func:`class_captions` with ``class_names`` (default: the dataset's own,
    :func:`~matrix_llm.data.images.class_names_of`), without ``exclude_classes``; ``n`` rows of what is left.
    Images stay undecoded until the collator (which names an unreadable file). An image column of file paths (a
    CSV / TSV / JSON(L) / parquet file, :func:`~matrix_llm.data.images.load_split`) is read by
    :func:`image_paths`; with ``group_by_image`` (evaluation) the rows of one image become one row with all its
    captions (:func:`captions_by_image`), ``n`` then counting images.

    Raises:
        ValueError: a missing column, listing the dataset's columns; class names that are unknown or missing.
    """
    if source in SCENE_SOURCES:
        if caption_templates:
            raise ValueError(
                f"{source}: the scenes are captioned already; caption_templates are for labelled datasets"
            )
        return scene_dataset(
            split, n or (4000 if split == "train" else 1000), seed=seed, captions=SCENE_SOURCES[source]
        )
    if caption_templates:
        from .images import class_names_of, load_image_dataset

        rows = load_image_dataset(source, split, config=config, image_column=image_column)
        names = class_names or class_names_of(source, rows)
        if not names:
            raise ValueError(f"{source}: its class names are not in the data; give them as `class_names`")
        rows = class_captions(rows, list(names), list(caption_templates), exclude=tuple(exclude_classes))
        rows = rows.select_columns(["image", "caption"])
        return rows.select(range(min(n, len(rows)))) if n else rows
    import datasets

    ds = load_split(source, split, config=config)
    for kind, wanted in (("image", image_column), ("caption", caption_column)):
        if wanted not in ds.column_names:
            hint = (
                "; image-caption data needs one (`caption_column`), and a labelled image dataset can be captioned "
                "by class with `caption_templates` (e.g. ['a photo of a {}.'])"
                if kind == "caption"
                else ""
            )
            raise MissingColumnError(source, kind, wanted, ds.column_names, hint=hint)
    ds = ds.select_columns([image_column, caption_column])
    ds = ds.rename_columns(
        {old: new for old, new in ((image_column, "image"), (caption_column, "caption")) if old != new}
    )
    paths = getattr(ds.features["image"], "dtype", None) in (
        "string",
        "large_string",
    )  # a file of image paths
    if n and not (paths and group_by_image):
        ds = ds.select(range(min(n, len(ds))))
    if paths:
        ds = image_paths(ds, data_folder(source, split), f"{data_file(split) or source} ({split})")
        if group_by_image:
            ds = captions_by_image(ds)
            ds = ds.select(range(min(n, len(ds)))) if n else ds
    if type(ds.features["image"]).__name__ == "Image":
        ds = ds.cast_column("image", datasets.Image(decode=False))
    return ds


def image_paths(ds: Any, folder: Path | None, where: str) -> Any:
    """``ds`` with its ``image`` column of file paths made absolute (relative ones against ``folder``: the data
    file's) and typed ``datasets.Image`` (decoded by the collator).

    Raises:
        FileNotFoundError: naming the first row (from 1, the header not counted) whose image file does not exist.
    """
    import datasets

    resolved = []
    for i, value in enumerate(ds["image"]):
        path = Path(value).expanduser() if isinstance(value, str) and value else None
        if path is not None and not path.is_absolute() and folder is not None:
            path = folder / path
        if path is None or not path.is_file():
            raise FileNotFoundError(f"{where}: row {i + 1}: the image {value!r} does not exist ({path})")
        resolved.append(str(path))
    ds = ds.remove_columns("image").add_column("image", resolved)
    return ds.cast_column("image", datasets.Image(decode=False)).select_columns(["image", "caption"])


def captions_by_image(ds: Any) -> Any:
    """One row per image file with the list of its captions, in the order of first appearance: a file with one
    row per caption (Flickr30k / COCO exports) becomes the layout CLIP_benchmark's retrieval protocol reads
    (:func:`~matrix_llm.modes.clip.evaluate.retrieval_metrics`). Unchanged when no image repeats."""
    import datasets

    paths = [image["path"] for image in ds.cast_column("image", datasets.Image(decode=False))["image"]]
    if len(set(paths)) == len(paths):
        return ds
    captions: dict[str, list[str]] = {}
    for path, caption in zip(paths, ds["caption"], strict=True):
        captions.setdefault(path, []).extend([caption] if isinstance(caption, str) else caption)
    grouped = datasets.Dataset.from_dict({"image": list(captions), "caption": list(captions.values())})
    return grouped.cast_column("image", datasets.Image(decode=False))


class ImageTextCollator:
    """``{"image", "caption"}`` rows -> ``pixel_values`` (:class:`~matrix_llm.data.images.ImageCollator`) and the
    tokenised captions (``input_ids``, ``attention_mask``; padded, cut at ``max_length``). A row with a list of
    captions contributes one of them, drawn with ``seed`` and a hash of the batch's captions: the batches change
    from epoch to epoch, so an image shows its captions in turn, and the same batch always draws the same ones,
    whichever process, worker or resumed run collates it. Empty captions are an error naming the row's position.
    :func:`~matrix_llm.data.text.count_truncated` says beforehand how many captions ``max_length`` cuts."""

    def __init__(self, tokenizer: Any, images: Any, *, max_length: int = 32, seed: int = 0) -> None:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer, self.images, self.max_length, self.seed = tokenizer, images, max_length, seed

    @property
    def skipped(self) -> list[str]:
        """The unreadable images left out (``skip_corrupt`` of the image collator)."""
        return self.images.skipped

    def _caption(self, caption: Any, index: int, rng: np.random.Generator) -> str:
        if isinstance(caption, (list, tuple)):
            caption = caption[rng.integers(len(caption))] if caption else ""
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(
                f"ImageTextCollator: row {index} of the batch has an empty caption ({caption!r:.40})"
            )
        return caption

    def __call__(self, rows: Any) -> dict[str, Any]:
        if not rows:
            raise ValueError("ImageTextCollator: empty batch")
        kept, images = self.images.decode(rows)
        batch_key = hashlib.blake2b(repr([r["caption"] for r in rows]).encode(), digest_size=8).digest()
        rng = np.random.default_rng([self.seed, int.from_bytes(batch_key, "little")])
        captions = [self._caption(rows[i]["caption"], i, rng) for i in kept]
        text = self.tokenizer(
            captions, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {
            "pixel_values": self.images.pixel_values(images),
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
        }

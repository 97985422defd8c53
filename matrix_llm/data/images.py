"""Image classification data: scikit-learn's digits (the embedded default), IDX files (Fashion-MNIST / MNIST), any
``datasets`` dataset with ``image`` and ``label`` columns; a seeded class-balanced labelled fraction; the
collator that turns images into ``pixel_values``.

Every loader returns a ``datasets.Dataset`` with the columns ``image`` (``uint8`` array, ``H x W`` or
``H x W x C``, or a PIL image for Hub datasets) and ``label`` (int). Offline: ``digits`` ships with scikit-learn;
Fashion-MNIST's four ``*-ubyte.gz`` files are read as they are distributed.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .labels import IGNORE_INDEX

logger = logging.getLogger("matrix_llm.data.images")

__all__ = [
    "DATA_FILES",
    "FASHION_MNIST_CLASSES",
    "ImageCollator",
    "MissingColumnError",
    "UnreadableImageError",
    "check_readable",
    "class_names_of",
    "data_file",
    "data_folder",
    "decode_image",
    "load_split",
    "saved_image_collator",
    "tiny_image_processor",
    "digits_dataset",
    "load_idx_dataset",
    "load_image_dataset",
]

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_CLASSES = [
    "T-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]  # (../shared/data/fashion-mnist/README.md)


def _read_idx(path: Path, *, offset: int) -> bytes:
    """The bytes of an IDX file (gzip or plain), checked to hold at least its ``offset``-byte header."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < offset:
        raise ValueError(f"{path}: {len(data)} bytes, shorter than the IDX header ({offset} bytes)")
    return data


def load_idx_dataset(root: str | Path, split: str = "train") -> Any:
    """A ``train`` / ``test`` split of an IDX folder (``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``: the
    format of MNIST and of ``../shared/data/fashion-mnist/``) as a ``datasets.Dataset`` (``image``, ``label``)."""
    import datasets

    if split not in _IDX_FILES:
        raise ValueError(f"load_idx_dataset: `split` must be one of {sorted(_IDX_FILES)}; got {split!r}")
    root = Path(root).expanduser()
    images_file, labels_file = (root / name for name in _IDX_FILES[split])
    for path in (images_file, labels_file):
        if not path.is_file():
            raise FileNotFoundError(
                f"load_idx_dataset: no {path.name} in {root} (an IDX folder holds "
                f"{', '.join(n for pair in _IDX_FILES.values() for n in pair)})"
            )
    raw = _read_idx(images_file, offset=16)
    magic, count, rows, cols = (int(x) for x in np.frombuffer(raw[:16], dtype=">u4"))
    if magic != 2051:
        raise ValueError(f"{images_file}: not an IDX image file (magic {magic}, expected 2051)")
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)
    labels = np.frombuffer(_read_idx(labels_file, offset=8), dtype=np.uint8, offset=8)
    if len(labels) != count:
        raise ValueError(f"{root}: {count} images but {len(labels)} labels in the {split} split")
    return datasets.Dataset.from_dict({"image": list(images), "label": labels.astype(np.int64).tolist()})


def digits_dataset(split: str = "train", *, test_fraction: float = 0.2, seed: int = 0) -> Any:
    """scikit-learn's bundled digits (1797 real 8 x 8 grey images, 10 classes; values 0..16 scaled to 0..255),
    split into ``train`` / ``test`` with a seeded stratified draw (``test_fraction`` of each class is test)."""
    import datasets
    from sklearn.datasets import load_digits

    if split not in ("train", "test"):
        raise ValueError(f"digits_dataset: `split` must be 'train' or 'test'; got {split!r}")
    bunch = load_digits()
    images = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        test[rng.choice(idx, size=round(test_fraction * len(idx)), replace=False)] = True
    keep = test if split == "test" else ~test
    return datasets.Dataset.from_dict({"image": list(images[keep]), "label": labels[keep].tolist()})


DATA_FILES = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t"}),  # open_clip's --dataset-type csv default separator
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}
"""The single files a dataset may be (``dataset_name: pairs.csv``), with the ``datasets`` builder that reads them."""


def data_file(name: str | None) -> Path | None:
    """``name`` as a local CSV / TSV / JSON(L) / parquet file (:data:`DATA_FILES`), else ``None``.

    Raises:
        FileNotFoundError: ``name`` ends like such a file that does not exist.
    """
    if not name or Path(name).suffix.lower() not in DATA_FILES:
        return None
    path = Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such file")
    return path


def data_folder(source: str, split: str) -> Path | None:
    """The folder relative image paths of ``source``'s ``split`` are resolved against: that of the file the split
    comes from (:func:`load_split`), or the local dataset folder; ``None`` for a Hub dataset."""
    file = data_file(split) or data_file(source)
    if file is not None:
        return file.resolve().parent
    path = Path(source).expanduser()
    return path.resolve() if path.is_dir() else None


def load_split(source: str, split: str, *, config: str | None = None, streaming: bool = False) -> Any:
    """``datasets.load_dataset`` of a Hub id, a local folder or a single CSV / TSV / JSON(L) / parquet file
    (:data:`DATA_FILES`: the file is the ``train`` split), one split. ``split`` may itself name such a file (e.g.
    ``eval_split: val.csv``), which is then read whatever ``source`` is. ``streaming``: as a
    ``datasets.IterableDataset``.

    Raises:
        ValueError: a split the data does not have, naming the ones it has and the settings to change.
        FileNotFoundError: a data file that does not exist.
    """
    import datasets

    file = data_file(split)
    if file is None and data_file(source) is not None:
        if split != "train":
            raise ValueError(
                f"{source}: one file is the `train` split only; `{split}` can be another file (e.g. "
                "`eval_split: val.csv`), or `eval_split: null` for no eval set"
            )
        file = data_file(source)
    if file is not None:
        builder, options = DATA_FILES[file.suffix.lower()]
        return datasets.load_dataset(
            builder, data_files={"train": str(file)}, split="train", streaming=streaming, **options
        )
    path = Path(source).expanduser()
    try:
        return datasets.load_dataset(
            str(path) if path.is_dir() else source, config, split=split, streaming=streaming
        )
    except ValueError as e:
        if "Unknown split" not in str(e) and "Bad split" not in str(e):  # a streamed split: "Bad split"
            raise
        raise ValueError(
            f"{source}: {e} Set `train_split` / `eval_split` to one of them (`eval_split: null`: no eval set)"
        ) from None


class MissingColumnError(ValueError):
    """A dataset without the column a setting names; ``kind`` says which (``image`` / ``label`` / ``caption``),
    ``columns`` what the dataset has."""

    def __init__(self, source: str, kind: str, wanted: str, columns: Sequence[str], hint: str = "") -> None:
        self.kind, self.columns = kind, list(columns)
        super().__init__(f"{source}: no {kind} column {wanted!r}; the columns are {self.columns}{hint}")


def load_image_dataset(
    source: str,
    split: str = "train",
    *,
    config: str | None = None,
    image_column: str = "image",
    label_column: str | None = "label",
) -> Any:
    """``digits``, an IDX folder, or a Hub / local dataset (``datasets.load_dataset``, e.g. an ``imagefolder``)
    with an image column and (unless ``label_column`` is ``None``) a label column, returned as ``image`` /
    ``label``. With the default names, the common alternatives ``img`` / ``labels`` / ``fine_label`` are found
    too.

    Raises:
        MissingColumnError: a missing image or label column, listing the columns the dataset has.
    """
    if source == "digits":
        ds = digits_dataset(split)
    else:
        path = Path(source).expanduser()
        if path.is_dir() and (path / _IDX_FILES["train"][0]).is_file():
            ds = load_idx_dataset(path, "test" if split in ("test", "validation") else split)
        else:
            ds = load_split(source, split, config=config)
    columns = list(ds.column_names)
    renames = {}
    for wanted, alternatives in (
        (image_column, ("image", "img")),
        (label_column, ("label", "labels", "fine_label")),
    ):
        if wanted is None:
            continue
        candidates = (
            alternatives if wanted == alternatives[0] else (wanted,)
        )  # other names only for the default
        found = next((c for c in candidates if c in columns), None)
        if found is None:
            raise MissingColumnError(source, "image" if wanted == image_column else "label", wanted, columns)
        renames[found] = "image" if wanted == image_column else "label"
    ds = ds.select_columns(list(renames))
    ds = ds.rename_columns({old: new for old, new in renames.items() if old != new})
    feature = ds.features.get("image")
    if type(feature).__name__ == "Image" and getattr(feature, "decode", False):
        # decoded by ImageCollator, which names the file of an unreadable image (datasets' own decoding does not)
        import datasets

        ds = ds.cast_column("image", datasets.Image(decode=False))
    return ds


def class_names_of(source: str, rows: Any) -> list[str] | None:
    """The class names of a dataset from :func:`load_image_dataset` (label ``i`` is name ``i``): its ``label``
    column's ``datasets.ClassLabel`` names, Fashion-MNIST's (:data:`FASHION_MNIST_CLASSES`) for a source that names
    it (the IDX files carry no names), ``digits``' ``0``..``9``; else ``None``."""
    feature = (rows.features or {}).get("label")  # a stream may not know its features
    if type(feature).__name__ == "ClassLabel":
        return list(feature.names)
    if "fashion" in source.lower():
        return list(FASHION_MNIST_CLASSES)
    if source == "digits":
        return [str(i) for i in range(10)]
    return None


class UnreadableImageError(ValueError):
    """An image Pillow cannot read; the message names its file (or says it is stored as bytes)."""


def decode_image(image: Any) -> Any:
    """An image as the collators take it: arrays and PIL images as they are, nested lists (an array column of a
    ``datasets.Dataset``) as a uint8 array; ``{"bytes", "path"}`` (an undecoded ``datasets.Image``) opened with
    Pillow.

    Raises:
        UnreadableImageError: naming the file (or the row's bytes) when Pillow cannot read it.
    """
    if isinstance(image, list):  # an array stored in a datasets column comes back as nested lists
        return np.asarray(image, dtype=np.uint8)
    if not isinstance(image, dict):
        return image
    import io

    from PIL import Image

    source = image.get("path") or "stored as bytes in the dataset"
    try:
        pil = Image.open(io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"])
        pil.load()
    except Exception as e:  # Pillow raises several types (UnidentifiedImageError, OSError, SyntaxError)
        raise UnreadableImageError(f"cannot read the image {source}: {type(e).__name__}: {e}") from None
    return pil


def check_readable(rows: Any, split: str, n: int = 16) -> None:
    """Decode the first ``n`` images of ``rows`` (an ``image`` column), so that an unreadable file or a column that
    holds no images stops a run before any model loads.

    Raises:
        ValueError: naming the split, the row and (for a file) its path.
    """
    for i in range(min(n, len(rows))):
        image = rows[i]["image"]
        try:
            decoded = decode_image(image)
        except UnreadableImageError as e:
            raise ValueError(f"row {i} of the `{split}` split: {e}") from None
        if not hasattr(decoded, "convert") and np.asarray(decoded).ndim not in (2, 3):
            raise ValueError(
                f"row {i} of the `{split}` split: the image column holds {type(image).__name__} values, not images"
            )


def tiny_image_processor(image_size: int, channels: int, *, normalize: bool = True) -> Any:
    """The image processor of matrix_llm's tiny vision models, which their runs train and evaluate through and save
    beside them, so that ``AutoImageProcessor`` feeds a saved model exactly as its run did: resize to
    ``image_size`` (bilinear), scale to ``[0, 1]``, then (``normalize``) mean 0.5 / std 0.5 per channel, i.e.
    ``[-1, 1]``; ``normalize=False`` keeps ``[0, 1]`` (ssl normalises its views on the device). ``channels`` 1:
    grey (give ``L`` images), 3: RGB (others are converted). The backend is the one ``AutoImageProcessor`` picks
    in this environment (torchvision when it is installed, else PIL), so a saved folder loads the same class."""
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        from transformers import ViTImageProcessor as processor_class
    else:
        from transformers import ViTImageProcessorPil as processor_class

    return processor_class(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=2,  # PIL.Image.BILINEAR
        do_rescale=True,
        do_normalize=normalize,
        image_mean=[0.5] * channels,
        image_std=[0.5] * channels,
        do_convert_rgb=channels == 3,
    )


class ImageCollator:
    """``{"image", "label"}`` rows -> ``{"pixel_values": (N, C, S, S) float, "labels": (N,)}`` (rows without a
    ``label`` give ``pixel_values`` only).

    With an image ``processor`` (the model's ``AutoImageProcessor``) the images go through it; otherwise each
    image (any size; PIL modes such as L, RGBA and P converted) is scaled to ``[0, 1]``, given ``channels``
    channels (grey repeated, or RGB averaged to grey), resized to ``image_size`` (bilinear) and normalised with
    ``mean`` / ``std`` (``mean=0, std=1`` keeps ``[0, 1]``, for on-device augmentation). Unlabelled rows
    (``label == -100``, see :func:`label_fraction_mask`) keep ``-100``.

    An image Pillow cannot read raises :class:`UnreadableImageError` naming its file; with ``skip_corrupt`` its row
    is left out of the batch instead, with a warning, and the message is kept in ``skipped``.
    """

    def __init__(
        self,
        *,
        image_size: int,
        channels: int = 1,
        mean: float = 0.5,
        std: float = 0.5,
        processor: Any = None,
        skip_corrupt: bool = False,
    ) -> None:
        self.image_size, self.channels, self.mean, self.std, self.processor = (
            image_size,
            channels,
            mean,
            std,
            processor,
        )
        self.skip_corrupt = skip_corrupt
        self.skipped: list[str] = []

    def decode(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[Any]]:
        """``(positions, images)`` of the rows whose image decodes (all of them unless ``skip_corrupt``)."""
        kept, images = [], []
        for i, row in enumerate(rows):
            try:
                images.append(decode_image(row["image"]))
            except UnreadableImageError as e:
                if not self.skip_corrupt:
                    raise
                self.skipped.append(str(e))
                logger.warning("%s: skipped (skip_corrupt_images)", e)
                continue
            kept.append(i)
        if not kept:
            raise UnreadableImageError(
                f"no image of a batch of {len(rows)} could be read: {self.skipped[-1]}"
            )
        return kept, images

    def pixel_values(self, images: list[Any]) -> Any:
        """Decoded images -> ``(N, C, S, S)``: through the processor when there is one (as PIL images of this
        collator's channels: grey ``L`` or ``RGB``), else resized and scaled here."""
        if self.processor is not None:
            return self.processor(images=[self._pil(im) for im in images], return_tensors="pt")[
                "pixel_values"
            ]
        return self._pixels(images)

    def _pil(self, image: Any) -> Any:
        from PIL import Image

        if not hasattr(image, "convert"):
            a = np.asarray(image)
            image = Image.fromarray(a if a.ndim == 2 or a.shape[-1] in (3, 4) else a[..., 0])
        return image.convert("RGB" if self.channels == 3 else "L")

    def _pixels(self, images: list[Any]) -> Any:
        """Each image to ``(C, S, S)`` in ``[0, 1]`` (any size; PIL modes L / RGB / RGBA / P converted), stacked and
        normalised."""
        import torch
        import torch.nn.functional as F

        out = []
        for im in images:
            if hasattr(im, "convert"):  # PIL: palette / alpha / grey / RGB -> this collator's channels
                im = im.convert("RGB" if self.channels == 3 else "L")
            a = np.asarray(im)
            # astype copies: PIL's arrays are read-only, which torch.from_numpy warns about
            x = (
                torch.from_numpy((a if a.ndim == 3 else a[..., None]).astype(np.float32)).permute(2, 0, 1)
                / 255.0
            )
            if x.shape[0] != self.channels:  # arrays: grey <-> RGB (an alpha channel is dropped)
                x = x[:3].mean(0, keepdim=True).expand(self.channels, -1, -1)
            if x.shape[-2:] != (self.image_size, self.image_size):
                x = F.interpolate(
                    x[None], size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
                )[0]
            out.append(x)
        return (torch.stack(out) - self.mean) / self.std

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        if not rows:
            raise ValueError("ImageCollator: empty batch")
        kept, images = self.decode(rows)
        rows = [rows[i] for i in kept]
        pixel_values = self.pixel_values(images)
        if "label" not in rows[0]:  # unlabelled data (self-supervised training)
            return {"pixel_values": pixel_values}
        labels = torch.tensor([int(r["label"]) for r in rows], dtype=torch.long)
        if bool(((labels < 0) & (labels != IGNORE_INDEX)).any()):
            raise ValueError(
                f"ImageCollator: labels must be >= 0 or {IGNORE_INDEX} (unlabelled); got {labels.tolist()}"
            )
        return {"pixel_values": pixel_values, "labels": labels}


def saved_image_collator(name: str, config: Any, *, revision: str | None = None) -> ImageCollator:
    """The collator that feeds a saved or Hub model its images as it was trained: through its image processor when
    it was saved with one, else (matrix_llm's tiny models) resized to ``config.image_size`` with
    ``config.num_channels`` and scaled to ``[-1, 1]``. A dual encoder's ``vision_config`` is read.

    Raises:
        ValueError: no image processor and no ``image_size`` in the config.
    """
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(name, revision=revision)
    except (OSError, ValueError):  # saved without one (tiny models)
        processor = None
    vision = getattr(config, "vision_config", None) or config
    size = getattr(vision, "image_size", None)
    if processor is None and not isinstance(size, int):
        raise ValueError(f"{name}: no image processor and no config.image_size; save the model's processor")
    return ImageCollator(
        image_size=size if isinstance(size, int) else 224,
        channels=int(getattr(vision, "num_channels", 3)),
        processor=processor,
    )

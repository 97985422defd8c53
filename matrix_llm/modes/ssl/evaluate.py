"""Frozen-feature evaluation of vision backbones: the offline linear probe (logistic regression on frozen
features, as in the CLIP paper) and weighted cosine kNN (DINO's protocol), each also for the same architecture at
random initialisation so that a reader sees what training bought.

    matrix-llm eval probe --model outputs/ssl-demo/backbone --data digits
    matrix-llm eval knn   --model outputs/ssl-demo/backbone --data ../shared/data/fashion-mnist --k 20

Features: the backbone's pooled output (``--pooling``; by default :func:`~matrix_llm.models.ssl.vision_pooling`:
the pooler of a convolutional backbone, the class token otherwise) of every training and test image, in eval mode
(a ViT-MAE encoder unmasked: every patch). Images go through the backbone's image processor when it was saved with
one, else (tiny backbones) are resized to ``config.image_size`` and scaled to ``[-1, 1]``. Results:
``results.json`` in ``--output_dir``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from matrix_llm.features.pooled import POOLINGS
from matrix_llm.hub import RunFolder
from matrix_llm.parsing.usage import ToolParser, model_source

__all__ = [
    "RAW_PIXELS_SIDE",
    "SKLEARN_MAX_ROWS",
    "balanced_subset",
    "every_patch",
    "extract_features",
    "knn_accuracy",
    "linear_probe_accuracy",
    "main_knn",
    "main_probe",
    "probe_solver",
    "raw_pixels",
    "torch_linear_probe",
]


def _encode(
    rows: Any, collator: Any, encode: Any, *, batch_size: int, num_workers: int, desc: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(encode(pixel_values) of every row, labels)`` through :mod:`matrix_llm.features.sharded`."""
    from matrix_llm.features.sharded import gather_shards, shard_batches

    feats, labels = [], []
    for batch in shard_batches(rows, batch_size, collator, num_workers=num_workers, desc=desc):
        if "labels" not in batch:
            raise ValueError("extract_features: the rows have no labels; the probes need a label column")
        feats.append(encode(batch["pixel_values"]).float().cpu())
        labels.append(batch["labels"])
    return gather_shards(feats).numpy(), gather_shards(labels).numpy()


@contextmanager
def every_patch(backbone: torch.nn.Module) -> Iterator[None]:
    """A ViT-MAE encoder (``config.mask_ratio``) keeps every patch inside, its ratio restored after: Hugging
    Face's ``ViTMAEModel`` masks at random in eval mode too, so frozen features of an encoder with its training
    ratio (``facebook/vit-mae-*`` checkpoints: 0.75) would come from a random quarter of each image."""
    config = getattr(backbone, "config", None)
    ratio = getattr(config, "mask_ratio", None)
    if not ratio:
        yield
        return
    config.mask_ratio = 0.0
    try:
        yield
    finally:
        config.mask_ratio = ratio


@torch.no_grad()
def extract_features(
    backbone: torch.nn.Module,
    rows: Any,
    collator: Any,
    *,
    batch_size: int = 256,
    pooling: str | None = None,
    desc: str | None = None,
    num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(features (N, d) float32, labels (N,))`` of the ``image`` / ``label`` rows through ``backbone``, batch by
    batch; with several processes each encodes its shard and every process gets all N rows in order
    (:mod:`matrix_llm.features.sharded`). A ViT-MAE encoder sees every patch (:func:`every_patch`)."""
    from matrix_llm.features import evaluating, pool
    from matrix_llm.models.ssl import vision_pooling

    with evaluating(backbone) as device, every_patch(backbone):

        def encode(pixels: torch.Tensor) -> torch.Tensor:
            outputs = backbone(pixel_values=pixels.to(device))
            return pool(outputs, pooling or vision_pooling(outputs))

        return _encode(rows, collator, encode, batch_size=batch_size, num_workers=num_workers, desc=desc)


RAW_PIXELS_SIDE = 32
"""The raw-pixel baseline sees images of at most this side (area-downsampled): 3,072 features for RGB at 224²."""


def raw_pixels(
    rows: Any, collator: Any, *, batch_size: int = 256, num_workers: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(flattened pixels (N, C * s * s), labels)`` of the collated images, ``s = min(side, RAW_PIXELS_SIDE)``
    (area-downsampled above it), batch by batch like :func:`extract_features`."""

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        if max(pixels.shape[-2:]) > RAW_PIXELS_SIDE:
            pixels = torch.nn.functional.adaptive_avg_pool2d(pixels, RAW_PIXELS_SIDE)
        return pixels.flatten(1)

    return _encode(rows, collator, encode, batch_size=batch_size, num_workers=num_workers, desc=None)


def balanced_subset(labels: Sequence[int] | np.ndarray, size: int, seed: int) -> list[int]:
    """``size`` row indices (sorted) drawn class by class in turn, each class in a seeded random order: every
    class gets ``size // classes`` rows or all it has, the rest go to the larger classes. All indices when
    ``size >= len(labels)``."""
    labels = np.asarray(labels)
    if size >= len(labels):
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    shuffled = labels[order]
    turn = np.empty(len(labels), dtype=np.int64)  # each row's place among the rows of its class
    for c in np.unique(labels):
        at = np.flatnonzero(shuffled == c)
        turn[at] = np.arange(len(at))
    picked = order[np.argsort(turn, kind="stable")[:size]]
    return sorted(int(i) for i in picked)


SKLEARN_MAX_ROWS = 50_000
"""Above this many training rows :func:`linear_probe_accuracy` (``solver="auto"``) trains the torch probe."""


def probe_solver(rows: int, solver: str = "auto") -> str:
    """``sklearn`` or ``torch``: what :func:`linear_probe_accuracy` uses for ``rows`` training rows."""
    if solver not in ("auto", "sklearn", "torch"):
        raise ValueError(f"linear probe: solver must be auto, sklearn or torch; got {solver!r}")
    if solver != "auto":
        return solver
    return "sklearn" if rows <= SKLEARN_MAX_ROWS else "torch"


def linear_probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    c: float = 1.0,
    max_iter: int = 1000,
    solver: str = "auto",
    device: torch.device | str | None = None,
) -> float:
    """Test accuracy of an L2-regularised logistic regression (``C = c``) on standardised features.

    Up to :data:`SKLEARN_MAX_ROWS` training rows (``solver="auto"``) scikit-learn's ``LogisticRegression``
    (L-BFGS); above, :func:`torch_linear_probe` minimises the same objective on ``device`` with the features
    streamed through in chunks (what a million ImageNet features need: scikit-learn would hold several copies).
    """
    if probe_solver(len(train_x), solver) == "torch":
        return torch_linear_probe(train_x, train_y, test_x, test_y, c=c, max_iter=max_iter, device=device)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    probe.fit(train_x, train_y)
    return float((probe.predict(test_x) == test_y).mean())


def torch_linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    c: float = 1.0,
    max_iter: int = 1000,
    device: torch.device | str | None = None,
    chunk: int = 65_536,
) -> float:
    """scikit-learn's multinomial logistic regression objective, ``c * sum_i CE_i + ||W||^2 / 2`` (bias not
    penalised) on features standardised with the training mean and standard deviation, minimised by full-batch
    L-BFGS (strong Wolfe line search, from zero) in torch on ``device``. The loss and its gradient are summed over
    chunks of ``chunk`` rows, so the memory beyond the features is one chunk's logits. Returns the test
    accuracy."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    classes, targets = np.unique(train_y, return_inverse=True)
    x = torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.float32)).to(device)
    y = torch.from_numpy(targets).long().to(device)
    mean = x.mean(0)
    std = x.var(0, unbiased=False).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))  # StandardScaler leaves constant features unscaled
    linear = torch.nn.Linear(x.shape[1], len(classes), device=device)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(
        linear.parameters(),
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-6,
        tolerance_change=1e-10,
        history_size=10,
        line_search_fn="strong_wolfe",
    )
    n = len(x)

    def closure() -> torch.Tensor:  # the objective divided by c * n (same minimiser, scale-free tolerances)
        optimizer.zero_grad()
        total = 0.0
        for start in range(0, n, chunk):
            logits = linear((x[start : start + chunk] - mean) / std)
            part = torch.nn.functional.cross_entropy(logits, y[start : start + chunk], reduction="sum") / n
            part.backward()
            total += float(part.detach())
        penalty = linear.weight.square().sum() / (2 * c * n)
        penalty.backward()
        return torch.tensor(total + float(penalty.detach()))

    optimizer.step(closure)
    hits = 0
    with torch.no_grad():
        for start in range(0, len(test_x), chunk):
            part = torch.from_numpy(np.ascontiguousarray(test_x[start : start + chunk], dtype=np.float32))
            predicted = linear((part.to(device) - mean) / std).argmax(1).cpu().numpy()
            hits += int((classes[predicted] == test_y[start : start + chunk]).sum())
    return hits / len(test_x)


def knn_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """DINO's weighted kNN: cosine similarity to every training feature, the ``k`` nearest vote for their class
    with weight ``exp(similarity / temperature)``; the test accuracy of the top class."""
    if k < 1 or temperature <= 0:
        raise ValueError(
            f"knn_accuracy: needs k >= 1 and temperature > 0; got k={k}, temperature={temperature}"
        )
    train = torch.nn.functional.normalize(torch.from_numpy(train_x).float(), dim=1)
    test = torch.nn.functional.normalize(torch.from_numpy(test_x).float(), dim=1)
    labels = torch.from_numpy(train_y).long()
    classes = int(max(train_y.max(), test_y.max())) + 1
    correct = 0
    for start in range(0, len(test), 1024):
        sims, idx = (test[start : start + 1024] @ train.T).topk(min(k, len(train)), dim=1)
        votes = torch.zeros(sims.shape[0], classes).scatter_add_(1, labels[idx], (sims / temperature).exp())
        correct += int((votes.argmax(1).numpy() == test_y[start : start + 1024]).sum())
    return correct / len(test)


# -- command line ----------------------------------------------------------------------------------------------


def _load(args: argparse.Namespace, *, random_init: bool) -> torch.nn.Module:
    from transformers import AutoModel

    from matrix_llm.models.tiny import random_init as fresh

    model = AutoModel.from_pretrained(args.model, revision=args.revision)
    if random_init:
        model = fresh(type(model), model.config, seed=args.seed)
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval()


def _evaluate(args: argparse.Namespace, task: str) -> dict[str, Any]:
    from matrix_llm.data.images import load_image_dataset, saved_image_collator

    data = {
        split: load_image_dataset(
            args.data,
            split,
            config=args.data_config,
            image_column=args.image_column,
            label_column=args.label_column,
        )
        for split in (args.train_split, args.test_split)
    }
    if args.max_train_samples:
        data[args.train_split] = data[args.train_split].select(
            range(min(args.max_train_samples, len(data[args.train_split])))
        )
    result: dict[str, Any] = {
        "task": task,
        "model": args.model,
        "data": args.data,
        "train_split": args.train_split,
        "test_split": args.test_split,
        "train_size": len(data[args.train_split]),
        "test_size": len(data[args.test_split]),
        "pooling": args.pooling or "default",
    }
    if task == "probe":
        result["solver"] = probe_solver(result["train_size"])
    for label, random_init in (("trained", False), ("random_init", True)):
        model = _load(args, random_init=random_init)
        collator = saved_image_collator(args.model, model.config, revision=args.revision)
        features = dict(pooling=args.pooling)
        train_x, train_y = extract_features(
            model, data[args.train_split], collator, desc=f"{label} train", **features
        )
        test_x, test_y = extract_features(
            model, data[args.test_split], collator, desc=f"{label} test", **features
        )
        if task == "probe":
            result[label] = linear_probe_accuracy(train_x, train_y, test_x, test_y, c=args.c)
        else:
            result[label] = knn_accuracy(
                train_x, train_y, test_x, test_y, k=args.k, temperature=args.temperature
            )
    out = RunFolder(args.output_dir if args.output_dir else RunFolder(args.model).eval(task))
    path = out.write_results(result)
    print(  # noqa: T201
        f"{task} accuracy: {result['trained']:.4f} (same architecture at random init: {result['random_init']:.4f}); "
        f"wrote {path}"
    )
    return result


def _parser(task: str) -> argparse.ArgumentParser:
    what = (
        "logistic regression on frozen features"
        if task == "probe"
        else "weighted cosine kNN on frozen features"
    )
    parser = ToolParser(
        prog=f"matrix-llm eval {task}",
        description=f"Test accuracy of {what}, for the model and for its architecture at random init.",
    )
    parser.add_argument(
        "--model",
        required=True,
        type=model_source,
        help="a saved backbone (e.g. OUTPUT_DIR/backbone) or Hub id",
    )
    parser.add_argument("--data", required=True, help="digits, an IDX folder, or a Hub / local image dataset")
    parser.add_argument("--data_config", default=None)
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--test_split", default="test")
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--revision", default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-init reference")
    parser.add_argument("--output_dir", default=None, help="default: MODEL/eval/<task>")
    if task == "probe":
        parser.add_argument(
            "--c", type=float, default=1.0, help="inverse L2 strength of the logistic regression"
        )
    else:
        parser.add_argument("--k", type=int, default=20)
        parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument(
        "--pooling",
        choices=POOLINGS,
        default=None,
        help="the features: the class token (cls), the mean over every token (mean, as the ssl mode's pooling) "
        "or the backbone's pooler; default: the pooler of a convolutional backbone, the class token otherwise",
    )
    return parser


def main_probe(argv: Sequence[str]) -> dict[str, Any]:
    return _evaluate(_parser("probe").parse_args(list(argv)), "probe")


def main_knn(argv: Sequence[str]) -> dict[str, Any]:
    return _evaluate(_parser("knn").parse_args(list(argv)), "knn")

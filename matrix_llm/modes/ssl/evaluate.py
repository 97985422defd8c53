"""Frozen-feature evaluation of vision backbones: the offline linear probe (logistic regression on frozen
features, as in the CLIP paper) and weighted cosine kNN (DINO's protocol), each also for the same architecture at
random initialisation so that a reader sees what training bought.

    matrix-llm eval probe --model outputs/ssl-demo/backbone --data digits
    matrix-llm eval knn   --model outputs/ssl-demo/backbone --data ../shared/data/fashion-mnist --k 20

Features: the backbone's pooled output (:func:`~matrix_llm.models.ssl.vision_pooling`: the pooler of a
convolutional backbone, the class token otherwise) of every training and test image, in eval mode. Images go
through the backbone's image processor when it was saved with one, else (tiny backbones) are resized to
``config.image_size`` and scaled to ``[-1, 1]``. Results: ``results.json`` in ``--output_dir``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from matrix_llm.hub import RunFolder
from matrix_llm.parsing.usage import ToolParser, model_source

__all__ = ["extract_features", "knn_accuracy", "linear_probe_accuracy", "main_knn", "main_probe"]


@torch.no_grad()
def extract_features(
    backbone: torch.nn.Module,
    rows: Any,
    collator: Any,
    *,
    batch_size: int = 256,
    pooling: str | None = None,
    desc: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(features (N, d) float32, labels (N,))`` of the ``image`` / ``label`` rows through ``backbone``."""
    from matrix_llm.features import evaluating, pool
    from matrix_llm.models.ssl import vision_pooling

    feats, labels = [], []
    with evaluating(backbone) as device:
        for start in tqdm(
            range(0, len(rows), batch_size), desc=desc or "features", disable=desc is None, leave=False
        ):
            batch = collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            outputs = backbone(pixel_values=batch["pixel_values"].to(device))
            feats.append(pool(outputs, pooling or vision_pooling(outputs)).float().cpu().numpy())
            if "labels" not in batch:
                raise ValueError("extract_features: the rows have no labels; the probes need a label column")
            labels.append(batch["labels"].numpy())
    return np.concatenate(feats), np.concatenate(labels)


def linear_probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    c: float = 1.0,
    max_iter: int = 1000,
) -> float:
    """Test accuracy of an L2-regularised logistic regression (``C = c``, L-BFGS) on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    probe.fit(train_x, train_y)
    return float((probe.predict(test_x) == test_y).mean())


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
    }
    for label, random_init in (("trained", False), ("random_init", True)):
        model = _load(args, random_init=random_init)
        collator = saved_image_collator(args.model, model.config, revision=args.revision)
        train_x, train_y = extract_features(model, data[args.train_split], collator, desc=f"{label} train")
        test_x, test_y = extract_features(model, data[args.test_split], collator, desc=f"{label} test")
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
    return parser


def main_probe(argv: Sequence[str]) -> dict[str, Any]:
    return _evaluate(_parser("probe").parse_args(list(argv)), "probe")


def main_knn(argv: Sequence[str]) -> dict[str, Any]:
    return _evaluate(_parser("knn").parse_args(list(argv)), "knn")

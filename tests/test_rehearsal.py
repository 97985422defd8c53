"""Every shipped training recipe rehearses: each YAML of recipes/ and matrix_llm/recipes/ runs exactly as shipped
except for (i) the model: a random-init tiny model of the same family (a tiny Llama for Llemma-7B, tiny ResNet / ViT
for ResNet-50 / ViT-B/16, a tiny CLIPModel / DistilBERT saved with its processor / tokenizer for the Hub ones), (ii)
the data: an offline stand-in with the same columns, splits and format (webdataset shards, streamed, where the recipe
streams; the first 600 / 200 Fashion-MNIST images in IDX files for the shared copy), (iii) `max_steps: 2`, (iv) the output dir, plus the CPU switches (`use_cpu`, `tf32: false`). It must
train, run its end-of-run evaluation and save. A recipe needing a package `make install` does not install fails.

Run: .venv/bin/python -m pytest tests/test_rehearsal.py -q -m slow
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from matrix_llm.modes.classify import command as classify
from matrix_llm.modes.clip import command as clip
from matrix_llm.modes.lm import command as sft
from matrix_llm.modes.ssl import command as ssl

REPO = Path(__file__).resolve().parents[1]
FASHION = REPO.parent / "shared" / "data" / "fashion-mnist"
RECIPES = sorted((REPO / "recipes").rglob("*.yaml")) + sorted(
    (REPO / "matrix_llm" / "recipes").rglob("*.yaml")
)
TRAINING = [p for p in RECIPES if p.parent.name != "accelerate"]
COMMANDS = {"lm": sft, "classification": classify, "ssl": ssl, "clip": clip}
MODEL_FIELDS = ("model_name_or_path", "vision_model_name_or_path", "text_model_name_or_path")
DATA_FIELDS = ("dataset_name", "eval_dataset_name", "zeroshot_dataset")
CAPTIONS = [
    f"a {c} {s} on a {b} background"
    for c in ("red", "blue", "green")
    for s in ("cat", "dog", "car")
    for b in ("plain", "busy")
]


def _image(i: int, side: int = 24) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))


def _problems(n: int, seed: int, names=("question", "answer")) -> list[dict]:
    from matrix_llm.data.synthetic import synthetic_dataset

    rows = synthetic_dataset(n, seed=seed)
    return [{names[0]: r["question"], names[1]: r["answer"]} for r in rows]


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _parquet(path: Path, columns: dict, features=None) -> None:
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(columns, features=features).to_parquet(path)


def _shard(path: Path, first: int, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i in range(first, first + n):
            jpg = io.BytesIO()
            _image(i).save(jpg, format="JPEG")
            for suffix, data in (("jpg", jpg.getvalue()), ("txt", CAPTIONS[i % len(CAPTIONS)].encode())):
                info = tarfile.TarInfo(f"{i:06d}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _stand_ins(root: Path) -> dict[str, str]:
    """Offline stand-ins of the Hub datasets the recipes name: the same columns, splits and format."""
    import datasets

    labelled = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=4)})
    images = {
        split: {"image": [_image(i) for i in range(first, first + 48)], "label": [i % 4 for i in range(48)]}
        for split, first in (("train", 0), ("validation", 100))
    }
    for split, columns in images.items():
        _parquet(root / "imagenet" / f"{split}.parquet", columns, labelled)
    _jsonl(root / "gsm8k" / "train.jsonl", _problems(48, 0))
    _jsonl(root / "gsm8k" / "test.jsonl", _problems(16, 1))
    metamath = [
        {**r, "type": "GSM_Rephrased", "original_question": r["query"]}
        for r in _problems(48, 2, ("query", "response"))
    ]
    _jsonl(root / "metamathqa" / "train.jsonl", metamath)
    for split in ("train", "test"):
        texts = [
            f"{'great' if i % 2 else 'awful'} film number {i}, {CAPTIONS[i % len(CAPTIONS)]}"
            for i in range(48)
        ]
        _parquet(root / "imdb" / f"{split}.parquet", {"text": texts, "label": [i % 2 for i in range(48)]})
    flickr = {
        "image": [_image(i) for i in range(40)],
        "caption": [[CAPTIONS[(i + k) % len(CAPTIONS)] for k in range(5)] for i in range(40)],
    }
    _parquet(
        root / "flickr30k" / "test.parquet",
        flickr,
        datasets.Features(
            {"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string"))}
        ),
    )
    fashion = (
        root / "fashion-mnist"
    )  # the first rows of the shared IDX files, in the same format and file names
    fashion.mkdir(parents=True)
    for name, header, record, n in (
        ("train-images-idx3-ubyte.gz", 16, 784, 600),
        ("train-labels-idx1-ubyte.gz", 8, 1, 600),
        ("t10k-images-idx3-ubyte.gz", 16, 784, 200),
        ("t10k-labels-idx1-ubyte.gz", 8, 1, 200),
    ):
        raw = gzip.decompress((FASHION / name).read_bytes())
        count = n.to_bytes(4, "big")
        (fashion / name).write_bytes(
            gzip.compress(raw[:4] + count + raw[8:header] + raw[header : header + n * record])
        )
    _shard(root / "cc3m" / "train-000000.tar", 0, 40)
    _shard(root / "cc3m" / "train-000001.tar", 40, 40)
    _shard(root / "cc3m" / "validation-000000.tar", 200, 20)
    return {
        "ILSVRC/imagenet-1k": str(root / "imagenet"),
        "openai/gsm8k": str(root / "gsm8k"),
        "meta-math/MetaMathQA": str(root / "metamathqa"),
        "stanfordnlp/imdb": str(root / "imdb"),
        "nlphuji/flickr30k": str(root / "flickr30k"),
        "pixparse/cc3m-wds": str(root / "cc3m"),
        "../shared/data/fashion-mnist": str(fashion),
    }


def _tiny_models(root: Path) -> dict[str, str]:
    """Random-init tiny models of the recipes' Hub families, saved as the Hub ones are (with processor /
    tokenizer), or the built-in tiny models of the family."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    from matrix_llm.models.tiny import build_tokenizer

    tokenizer = build_tokenizer(
        CAPTIONS * 20 + [f"great awful film number {i}" for i in range(100)], vocab_size=200
    )
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=224,
        patch_size=32,
    )
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(
        root / "clip"
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(root / "clip")
    config = DistilBertConfig(
        vocab_size=len(tokenizer),
        dim=32,
        n_layers=1,
        n_heads=2,
        hidden_dim=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    DistilBertForSequenceClassification(config).save_pretrained(root / "distilbert")
    tokenizer.save_pretrained(root / "distilbert")
    return {
        "EleutherAI/llemma_7b": "tiny",
        "microsoft/resnet-50": "tiny-resnet",
        "google/vit-base-patch16-224-in21k": "tiny-vit",
        "openai/clip-vit-base-patch32": str(root / "clip"),
        "distilbert/distilbert-base-uncased": str(root / "distilbert"),
    }


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    root = tmp_path_factory.mktemp("stand-ins")
    return {**_stand_ins(root / "data"), **_tiny_models(root / "models")}


def test_every_hub_model_and_dataset_of_the_recipes_has_a_stand_in(stand_ins):
    """A new recipe naming another Hub model or dataset fails here until this file gives it a stand-in."""
    for path in TRAINING:
        recipe = yaml.safe_load(path.read_text())
        for field in (*MODEL_FIELDS, *DATA_FIELDS):
            value = recipe.get(field)
            if isinstance(value, str) and "/" in value and not value.startswith(("..", "/", ".")):
                assert value in stand_ins, f"{path.relative_to(REPO)}: {field} {value} has no stand-in"


@pytest.mark.slow
@pytest.mark.parametrize("path", TRAINING, ids=lambda p: str(p.relative_to(REPO)))
def test_the_recipe_trains_evaluates_and_saves(path, stand_ins, tmp_path):
    recipe = yaml.safe_load(path.read_text())
    overrides = []
    for field in (*MODEL_FIELDS, *DATA_FIELDS):
        if recipe.get(field) in stand_ins:
            overrides += [f"--{field}", stand_ins[recipe[field]]]
    out = tmp_path / "run"
    argv = ["--config", str(path), *overrides, "--max_steps", "2", "--output_dir", str(out)]
    argv += ["--use_cpu", "true", "--tf32", "false", "--disable_tqdm", "true"]
    assert COMMANDS[recipe.get("objective", "lm")].main(argv) == 0
    saved = [out / "config.json", out / "adapter_config.json", out / "backbone" / "config.json"]
    assert any(p.is_file() for p in saved), sorted(p.name for p in out.iterdir())
    final = json.loads((out / "all_results.json").read_text())
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    measured = [
        k for k in {**final, **results} if k.startswith(("eval_", "probe_", "zeroshot_", "image_to_text"))
    ]
    has_eval = recipe.get("eval_split", "test") is not None or recipe.get("zeroshot_dataset")
    assert measured or not has_eval, (final, results)

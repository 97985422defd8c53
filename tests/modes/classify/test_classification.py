"""The classification objective and `matrix-llm classify`: neural-collapse closed forms, labelled fraction,
pseudo-labels, regulariser gradients, the head search, and the command on real data (digits, Fashion-MNIST).

    .venv/bin/python -m pytest tests/modes/classify/test_classification.py -q
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from matrix_llm.data.images import ImageCollator, load_idx_dataset
from matrix_llm.data.labels import label_fraction_mask
from matrix_llm.losses.neural_collapse import MIRHDRLoss
from matrix_llm.modes import ClassificationObjective

FASHION = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "fashion-mnist"


class _Output(dict):
    def __getattr__(self, name):
        return self[name]


class _Classifier(nn.Module):
    """An identity backbone and a linear head: the features the head sees are the inputs themselves."""

    def __init__(self, head_weight: torch.Tensor):
        super().__init__()
        self.config = SimpleNamespace(num_labels=head_weight.shape[0])
        self.classifier = nn.Linear(head_weight.shape[1], head_weight.shape[0], bias=False)
        with torch.no_grad():
            self.classifier.weight.copy_(head_weight)

    def forward(self, pixel_values):
        return _Output(logits=self.classifier(pixel_values))


def _etf(c: int) -> torch.Tensor:
    return math.sqrt(c / (c - 1)) * (torch.eye(c, dtype=torch.float64) - 1.0 / c)


@pytest.mark.parametrize("c", [3, 4, 10])
def test_neural_collapse_configuration_gives_the_closed_forms(c):
    """Features at their class means, class means a simplex ETF, head rows aligned with them (MATH.md §5.1):
    MIR = 1/(C-1) + (C-2) log(C-2) / ((C-1) log(C-1)), HDR = 0, both matrix entropies log(C-1), on a
    class-balanced batch of 4 per class."""
    etf = _etf(c)
    model = _Classifier(etf).double()
    labels = torch.arange(c).repeat(4)
    out = ClassificationObjective()(model, {"pixel_values": etf[labels], "labels": labels}, step=None)
    closed_mir = 1 / (c - 1) + ((c - 2) * math.log(c - 2) / ((c - 1) * math.log(c - 1)) if c > 2 else 0.0)
    m = out.metrics
    assert m["mir"].item() == pytest.approx(closed_mir, abs=1e-6)
    assert m["hdr"].item() == pytest.approx(0.0, abs=1e-6)
    assert m["matrix_entropy"].item() == pytest.approx(math.log(c - 1), abs=1e-6)
    assert m["head_entropy"].item() == pytest.approx(math.log(c - 1), abs=1e-6)
    assert m["accuracy"].item() == 1.0


def _random_model(c=4, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return _Classifier(torch.randn(c, d, generator=g)), torch.randn(16, d, generator=g)


def test_weights_zero_is_plain_ce_on_the_labelled_rows():
    model, x = _random_model()
    labels = torch.tensor([0, 1, 2, 3] * 4)
    labels[::3] = -100  # unlabelled rows
    out = ClassificationObjective(metrics_steps=2)(
        model, {"pixel_values": x, "labels": labels}, step=1
    )  # not due
    keep = labels != -100
    manual = F.cross_entropy(model.classifier(x)[keep], labels[keep])
    torch.testing.assert_close(out.batch_loss, manual)
    assert "matrix_entropy" not in out.metrics and set(out.metrics) == {"ce_loss", "accuracy"}


def test_regulariser_adds_minus_mir_plus_hdr_and_reaches_features_and_head():
    model, x = _random_model()
    x.requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 3] * 4)
    out = ClassificationObjective(mir_weight=0.5, hdr_weight=0.25)(
        model, {"pixel_values": x, "labels": labels}
    )
    reg = MIRHDRLoss(alpha=0.5, beta=0.25)(x, model.classifier.weight, labels)
    ce = F.cross_entropy(model.classifier(x), labels)
    torch.testing.assert_close(out.batch_loss, ce + reg.total, rtol=1e-5, atol=1e-6)
    out.batch_loss.backward()
    assert x.grad.abs().sum() > 0 and model.classifier.weight.grad.abs().sum() > 0


def test_unlabelled_rows_join_the_regulariser_with_pseudo_labels(monkeypatch):
    """Mutation caught: dropping unlabelled rows from the regulariser when pseudo_labels is on."""
    seen = []
    real = MIRHDRLoss.forward
    monkeypatch.setattr(
        MIRHDRLoss, "forward", lambda self, f, w, y: seen.append(len(y)) or real(self, f, w, y)
    )
    model, x = _random_model()
    labels = torch.tensor([0, 1, 2, 3] * 4)
    labels[8:] = -100
    ClassificationObjective(mir_weight=0.1, pseudo_labels=True)(
        model, {"pixel_values": x, "labels": labels}, step=1
    )
    ClassificationObjective(mir_weight=0.1, pseudo_labels=False)(
        model, {"pixel_values": x, "labels": labels}, step=1
    )
    assert seen == [16, 8]
    only_unlabelled = torch.full((16,), -100)
    out = ClassificationObjective(pseudo_labels=False)(
        model, {"pixel_values": x, "labels": only_unlabelled}, step=1
    )
    assert out.batch_loss.item() == 0.0 and out.batch_loss.requires_grad  # a graph for DDP, no NaN


def test_a_model_without_a_classifier_head_is_named():
    model = _Classifier(torch.randn(3, 5))
    model.config.num_labels = 7
    with pytest.raises(ValueError, match="out_features == config.num_labels"):
        ClassificationObjective()(
            model, {"pixel_values": torch.randn(4, 5), "labels": torch.zeros(4, dtype=torch.long)}
        )


def test_label_fraction_is_class_balanced_and_seeded():
    labels = np.repeat(np.arange(10), 50)
    mask = label_fraction_mask(labels, 0.1, seed=3)
    assert mask.sum() == 50 and all(mask[labels == c].sum() == 5 for c in range(10))
    assert (mask == label_fraction_mask(labels, 0.1, seed=3)).all()
    assert (mask != label_fraction_mask(labels, 0.1, seed=4)).any()
    assert all(label_fraction_mask(labels, 0.001)[labels == c].sum() == 1 for c in range(10))  # at least one


def test_image_collator_shapes_and_normalisation():
    rows = [
        {"image": np.full((8, 8), 255, dtype=np.uint8), "label": 3},
        {"image": np.zeros((8, 8), np.uint8), "label": -100},
    ]
    batch = ImageCollator(image_size=16, channels=3)(rows)
    assert batch["pixel_values"].shape == (2, 3, 16, 16) and batch["labels"].tolist() == [3, -100]
    assert (
        batch["pixel_values"][0].min().item() == pytest.approx(1.0)
        and batch["pixel_values"][1].max().item() == -1.0
    )


@pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(), reason="../shared/data/fashion-mnist"
)
def test_fashion_mnist_idx_files_load():
    train, test = load_idx_dataset(FASHION, "train"), load_idx_dataset(FASHION, "test")
    assert len(train) == 60000 and len(test) == 10000
    assert np.asarray(train[0]["image"]).shape == (28, 28)
    assert np.bincount(test["label"]).tolist() == [1000] * 10


def test_classify_command_trains_on_digits_and_writes_the_run(tmp_path):
    from matrix_llm.modes.classify import command as classify

    out = tmp_path / "digits"
    argv = [
        "--config",
        "classify/digits.yaml",
        "--output_dir",
        str(out),
        "--num_train_epochs",
        "3",
        "--matrix_mir_weight",
        "0.1",
        "--matrix_hdr_weight",
        "0.1",
        "--label_fraction",
        "0.5",
        "--disable_tqdm",
        "true",
    ]
    assert classify.main(argv) == 0
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_accuracy"] > 0.3  # well above chance (0.1) after 3 epochs
    assert 0.0 < results["eval_mir"] < 1.0 and results["eval_hdr"] >= 0.0
    assert json.loads((out / "matrix_llm_run.json").read_text())["objective"] == "classification"
    from conftest import card_eval_results

    names = {
        "Accuracy": "eval_accuracy",
        "Neural collapse: MIR (features vs head rows)": "eval_mir",
        "Neural collapse: HDR (features vs head rows)": "eval_hdr",
        "Feature matrix entropy": "eval_matrix_entropy",
        "Head matrix entropy": "eval_head_entropy",
    }
    assert card_eval_results(out) == {name: results[key] for name, key in names.items()}
    card = (out / "README.md").read_text()
    assert "matrix_mir_weight" in card and "Labelled fraction" in card
    assert "| `label_fraction` |" in card and "| `image_size` |" in card  # the run's data settings
    # a saved tiny classifier (no image processor) is a starting point: fine-tuned again from its weights
    again = tmp_path / "again"
    assert (
        classify.main(
            [
                "--config",
                "classify/digits.yaml",
                "--model_name_or_path",
                str(out),
                "--max_steps",
                "1",
                "--learning_rate",
                "1e-6",
                "--output_dir",
                str(again),
                "--disable_tqdm",
                "true",
            ]
        )
        == 0
    )
    continued = json.loads((again / "all_results.json").read_text())["eval_accuracy"]
    assert abs(continued - results["eval_accuracy"]) < 0.05  # the trained weights, not a fresh init


def test_classify_config_errors_are_listed(capsys, tmp_path):
    from matrix_llm.modes.classify import command as classify

    code = classify.main(
        [
            "--config",
            "classify/digits.yaml",
            "--output_dir",
            str(tmp_path / "x"),
            "--label_fraction",
            "0",
            "--matrix_hdr_weight",
            "-1",
            "--image_size",
            "2",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "3 configuration problem(s)" in err
    assert "`label_fraction`" in err and "`matrix_hdr_weight`" in err and "`image_size`" in err
    assert classify.main(["--config", "classify/digits.yaml", "--objective", "lm"]) == 2  # an LM recipe field
    assert "runs ['classification']" in capsys.readouterr().err


def test_a_local_imagefolder_loads_and_collates(tmp_path):
    """A local `imagefolder` (class sub-folders of PNGs, the layout `datasets` reads): image / label columns,
    PIL images through the collator."""
    from PIL import Image

    from matrix_llm.data.images import load_image_dataset

    for c, name in enumerate(("cat", "dog")):
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((10, 12, 3), 40 * c + i, dtype=np.uint8)).save(
                tmp_path / "train" / name / f"{i}.png"
            )
    ds = load_image_dataset(str(tmp_path), "train")
    assert ds.column_names == ["image", "label"] and sorted(ds["label"]) == [0, 0, 0, 1, 1, 1]
    batch = ImageCollator(image_size=8, channels=3)([ds[0], ds[5]])
    assert batch["pixel_values"].shape == (2, 3, 8, 8)


def _topic_texts(path, n: int, seed: int) -> None:
    """Three topics told apart by two of their words among filler words (a real, if easy, text task)."""
    import random

    rng = random.Random(seed)
    topics = [
        ["goal", "match", "team", "score", "coach"],
        ["bread", "soup", "salad", "cheese", "apple"],
        ["rain", "wind", "snow", "cloud", "storm"],
    ]
    filler = ["the", "a", "today", "very", "we", "saw", "and", "big", "small", "after", "quite", "then"]
    with open(path, "w") as f:
        for i in range(n):
            label = i % 3
            words = rng.sample(filler, 6) + rng.sample(topics[label], 2)
            rng.shuffle(words)
            f.write(json.dumps({"sentence": " ".join(words), "topic": label}) + "\n")


def test_classify_trains_a_text_classifier_and_saves_its_tokenizer(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from matrix_llm.modes.classify import command as classify
    from matrix_llm.tools import analyze

    _topic_texts(tmp_path / "train.jsonl", 240, 0)
    _topic_texts(tmp_path / "test.jsonl", 60, 1)
    out = tmp_path / "text"
    argv = [
        "--config",
        "classify/digits.yaml",
        "--model_name_or_path",
        "tiny-bert",
        "--dataset_name",
        str(tmp_path),
        "--text_column",
        "sentence",
        "--label_column",
        "topic",
        "--max_length",
        "16",
        "--output_dir",
        str(out),
        "--num_train_epochs",
        "8",
        "--matrix_mir_weight",
        "0.1",
        "--matrix_probe_samples",
        "30",
        "--disable_tqdm",
        "true",
    ]
    assert classify.main(argv) == 0
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_accuracy"] > 0.8  # chance: 1/3
    assert 0.0 < results["eval_probe_mir"] < 1.0 and "eval_probe_layer1_matrix_entropy" in results
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    logits = model(**tokenizer(["the big goal and match"], return_tensors="pt")).logits
    assert logits.shape == (1, 3)
    card = (out / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card and "AutoModelForSequenceClassification" in card
    assert (
        analyze.main(
            [
                "--model",
                str(out),
                "--data",
                str(tmp_path),
                "--text_column",
                "sentence",
                "--label_column",
                "topic",
                "--output_dir",
                str(tmp_path / "an"),
            ]
        )
        == 0
    )
    table = json.loads((tmp_path / "an" / "layers.json").read_text())["tables"][str(out)]
    assert [r["layer"] for r in table] == [0, 1]


def test_tiny_models_and_text_columns_must_agree(capsys):
    from matrix_llm.modes.classify import command as classify

    assert classify.main(["--config", "classify/digits.yaml", "--model_name_or_path", "tiny-bert"]) == 2
    assert "tiny-bert classifies texts: set `text_column`" in capsys.readouterr().err
    assert classify.main(["--config", "classify/digits.yaml", "--text_column", "text"]) == 2
    assert "tiny-vit classifies images" in capsys.readouterr().err


def record_labels(monkeypatch) -> list[torch.Tensor]:
    """The labels of every batch the classify command's trainer computes a loss on, in order (its MatrixTrainer
    replaced by one that records them)."""
    import matrix_llm.trainer

    seen = []

    class Recording(matrix_llm.trainer.MatrixTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            seen.append(inputs["labels"].clone())
            return super().compute_loss(model, inputs, *args, **kwargs)

    monkeypatch.setattr(matrix_llm.trainer, "MatrixTrainer", Recording)
    return seen


def test_the_command_trains_on_the_labelled_fraction_only(tmp_path, monkeypatch):
    """`--label_fraction 0.05`: the batches the objective sees over one epoch carry exactly the class-balanced 5 %
    of the training labels that label_fraction_mask keeps (seeded), each its own label; the rest are -100."""
    from matrix_llm.data.images import load_image_dataset
    from matrix_llm.modes.classify import command as classify

    seen = record_labels(monkeypatch)
    assert (
        classify.main(
            [
                "--config",
                "classify/digits.yaml",
                "--output_dir",
                str(tmp_path / "run"),
                "--max_train_samples",
                "400",
                "--num_train_epochs",
                "1",
                "--label_fraction",
                "0.05",
                "--label_seed",
                "2",
                "--eval_strategy",
                "no",
                "--eval_split",
                "null",
                "--dataloader_drop_last",
                "false",
                "--disable_tqdm",
                "true",
            ]
        )
        == 0
    )
    labels = np.asarray(load_image_dataset("digits", "train")["label"][:400])
    keep = label_fraction_mask(labels, 0.05, seed=2)
    batches = torch.cat(seen).numpy()
    assert len(batches) == 400 and (batches != -100).sum() == keep.sum() == 20  # 2 of about 40 per class
    assert sorted(batches[batches != -100].tolist()) == sorted(labels[keep].tolist())


def test_labelled_per_batch_puts_that_many_labelled_rows_in_every_batch_the_trainer_draws(
    tmp_path, monkeypatch, capsys
):
    """`--label_fraction 0.05 --labelled_per_batch 4` with batches of 16: through the Trainer's (accelerate's) data
    loader every training batch the objective sees holds 4 labelled rows, and the epoch passes over each unlabelled
    row once (uniform batches of 16 hold 0.8 on average, and often none); a share that leaves no room for
    unlabelled rows is refused before anything loads."""
    from matrix_llm.modes.classify import command as classify

    seen = record_labels(monkeypatch)
    argv = [
        "--config",
        "classify/digits.yaml",
        "--output_dir",
        str(tmp_path / "run"),
        "--max_train_samples",
        "400",
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "16",
        "--label_fraction",
        "0.05",
        "--eval_strategy",
        "no",
        "--eval_split",
        "null",
        "--disable_tqdm",
        "true",
    ]
    assert classify.main([*argv, "--labelled_per_batch", "4"]) == 0
    assert len(seen) == 32  # ceil(380 unlabelled / 12 per batch)
    assert [int((b != -100).sum()) for b in seen] == [4] * 32
    assert sum(int((b == -100).sum()) for b in seen) == 380
    card = (tmp_path / "run" / "README.md").read_text()
    assert "4 labelled rows in every training batch" in card
    assert classify.main([*argv, "--labelled_per_batch", "16"]) == 2
    assert "`labelled_per_batch`: 16 leaves no unlabelled row in a batch of 16" in capsys.readouterr().err


def test_labelled_per_batch_holds_on_each_of_two_processes(tmp_path):
    """Two gloo processes (torchrun, DDP): accelerate hands each rank whole batches of the sampler's order, so every
    batch on either rank holds the 4 labelled rows asked for, the ranks train on different batches, and their
    weights stay equal."""
    import json

    from conftest import run_two_processes

    argv = ["--config", "classify/digits.yaml", "--max_train_samples", "400", "--label_fraction", "0.05"]
    argv += ["--per_device_train_batch_size", "16", "--labelled_per_batch", "4", "--eval_strategy", "no"]
    run_two_processes("classify", argv, tmp_path, "ddp")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text())["batches"] for r in (0, 1)]
    assert [len(b) for b in ranks] == [3, 3]
    assert [n for b in ranks for n, _ in b] == [4] * 6
    assert {s for _, s in ranks[0]}.isdisjoint(s for _, s in ranks[1])


def test_the_best_checkpoint_of_a_tiny_vit_is_the_model_saved_at_the_end(tmp_path):
    """`load_best_model_at_end` with the first epoch's checkpoint as the best (the highest eval loss, by
    `greater_is_better`): the saved model is that checkpoint's weights, attention included. transformers saves
    ViT's attention weights under their old names and its own best-model loading does not rename them back, so
    they silently stayed at the last epoch's (MatrixTrainer._load_best_model)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForImageClassification

    from matrix_llm.modes.classify import command as classify

    out = tmp_path / "run"
    argv = ["--config", "classify/digits.yaml", "--num_train_epochs", "3", "--max_train_samples", "256"]
    argv += ["--max_eval_samples", "64", "--save_strategy", "epoch", "--load_best_model_at_end", "true"]
    argv += ["--metric_for_best_model", "eval_loss", "--greater_is_better", "true", "--learning_rate", "1e-2"]
    assert classify.main([*argv, "--disable_tqdm", "true", "--output_dir", str(out)]) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    best = Path(state["best_model_checkpoint"])
    steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert len(steps) == 3 and best.name == f"checkpoint-{steps[0]}"  # the first epoch's
    expected = AutoModelForImageClassification.from_pretrained(best).state_dict()
    saved = AutoModelForImageClassification.from_pretrained(out).state_dict()
    assert any("attention" in k for k in saved) and saved.keys() == expected.keys()
    assert all(torch.equal(saved[k], expected[k]) for k in saved)
    assert (
        load_file(str(out / "model.safetensors")).keys() == load_file(str(best / "model.safetensors")).keys()
    )


def test_tiny_dropout_switches_tiny_berts_dropout_and_only_tiny_bert_takes_it(capsys):
    from matrix_llm.models.tiny import build_text_classifier, build_tokenizer
    from matrix_llm.modes.classify import command as classify

    tokenizer = build_tokenizer(["aa plus bb", "cc plus dd"], vocab_size=64)
    batch = tokenizer(["aa plus bb", "cc plus dd"], return_tensors="pt")

    def train_and_eval_logits(dropout):
        model = build_text_classifier(tokenizer, num_labels=3, hidden_size=32, num_heads=2, dropout=dropout)
        torch.manual_seed(1)
        trained = model.train()(**batch).logits
        return trained, model.eval()(**batch).logits

    assert torch.equal(*train_and_eval_logits(0.0))  # no dropout: training mode is eval mode
    assert not torch.allclose(*train_and_eval_logits(0.1))  # BERT's default drops
    for dropout in ("0", "0.1"):  # BERT's own value too: set at all, it is refused on a model that ignores it
        assert classify.main(["--config", "classify/digits.yaml", "--tiny_dropout", dropout]) == 2
        assert "`tiny_dropout`: tiny-bert's; tiny-vit does not read it" in capsys.readouterr().err
    assert classify.main(["--config", "classify/grokking.yaml", "--tiny_dropout", "1"]) == 2
    assert "`tiny_dropout`" in capsys.readouterr().err

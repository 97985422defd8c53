"""A saved model carries its preprocessing: `AutoModel` + `AutoImageProcessor` (ssl's backbone, classify) or
`AutoProcessor` (clip) from the run's folder give the inputs, and so the features, that the run's own evaluation
used, for the tiny offline models (which have no Hub processor) as for Hub ones.

Run: .venv/bin/python -m pytest tests/modes/test_saved_preprocessing.py -q
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from matrix_llm.modes.classify import command as classify
from matrix_llm.modes.clip import command as clip
from matrix_llm.modes.ssl import command as ssl


def _pil(row, mode):
    image = row["image"]
    image = image if hasattr(image, "convert") else Image.fromarray(np.asarray(image, dtype=np.uint8))
    return image.convert(mode)


def test_an_ssl_backbone_loads_with_the_image_processor_its_probes_used(tmp_path, monkeypatch):
    from transformers import AutoImageProcessor, AutoModel

    seen = {}
    real = ssl.probe_results

    def recording(backbone, seed, train, evalset, collator, **kwargs):
        seen.update(backbone=backbone, evalset=evalset, collator=collator)
        return real(backbone, seed, train, evalset, collator, **kwargs)

    monkeypatch.setattr(ssl, "probe_results", recording)
    out = tmp_path / "run"
    argv = ["--config", "demo/ssl.yaml", "--tiny_hidden_size", "16", "--projector_hidden", "32"]
    argv += ["--projector_dim", "16", "--predictor_hidden", "16", "--max_train_samples", "64"]
    argv += ["--max_eval_samples", "24", "--per_device_train_batch_size", "32", "--max_steps", "2"]
    assert ssl.main([*argv, "--disable_tqdm", "true", "--output_dir", str(out)]) == 0
    rows = [seen["evalset"][i] for i in range(len(seen["evalset"]))]
    theirs = seen["collator"](rows)["pixel_values"]
    processor = AutoImageProcessor.from_pretrained(out / "backbone")
    ours = processor(images=[_pil(r, "L") for r in rows], return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (24, 1, 16, 16) and torch.equal(ours, theirs)
    model = AutoModel.from_pretrained(out / "backbone").eval()
    with torch.no_grad():
        trained = seen["backbone"].eval()(pixel_values=theirs).last_hidden_state
        loaded = model(pixel_values=ours).last_hidden_state
    torch.testing.assert_close(loaded, trained, rtol=0, atol=1e-6)


def test_a_classifier_is_saved_with_the_image_processor_it_was_evaluated_with(tmp_path, monkeypatch):
    from transformers import AutoImageProcessor

    seen = {}
    real = classify.build_model

    def recording(*args, **kwargs):
        model, collator, processor = real(*args, **kwargs)
        seen["collator"] = collator
        return model, collator, processor

    monkeypatch.setattr(classify, "build_model", recording)
    out = tmp_path / "run"
    argv = ["--config", "classify/digits.yaml", "--max_steps", "2", "--max_eval_samples", "16"]
    assert classify.main([*argv, "--disable_tqdm", "true", "--output_dir", str(out)]) == 0
    from matrix_llm.data.images import digits_dataset

    rows = [digits_dataset("test")[i] for i in range(16)]
    processor = AutoImageProcessor.from_pretrained(out)
    ours = processor(images=[_pil(r, "L") for r in rows], return_tensors="pt")["pixel_values"]
    assert torch.equal(ours, seen["collator"](rows)["pixel_values"])


def test_a_clip_model_loads_with_automodel_and_the_autoprocessor_its_evaluation_used(tmp_path, monkeypatch):
    from transformers import AutoModel, AutoProcessor

    from matrix_llm.modes.clip import evaluate

    seen = {}

    class Recording(evaluate.ImageTextEvalCallback):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.update(collator=self.collator, evalset=self.evalset, trainer=self.trainer)

    monkeypatch.setattr(evaluate, "ImageTextEvalCallback", Recording)
    out = tmp_path / "run"
    argv = ["--config", "demo/clip.yaml", "--model_name_or_path", "tiny-dual", "--tiny_hidden_size", "32"]
    argv += ["--projection_dim", "16", "--max_train_samples", "128", "--max_eval_samples", "16"]
    argv += ["--per_device_train_batch_size", "32", "--max_steps", "2", "--freeze_text_tower", "false"]
    assert clip.main([*argv, "--disable_tqdm", "true", "--output_dir", str(out)]) == 0
    rows = [seen["evalset"][i] for i in range(len(seen["evalset"]))]
    theirs = seen["collator"](rows)
    processor = AutoProcessor.from_pretrained(out)
    ours = processor(
        images=[_pil(r, "RGB") for r in rows],
        text=[r["caption"] for r in rows],
        padding=True,
        truncation=True,
        max_length=24,
        return_tensors="pt",
    )
    assert torch.equal(ours["pixel_values"], theirs["pixel_values"])
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    model = AutoModel.from_pretrained(out).eval()
    image_embeds = evaluate.encode_images(seen["trainer"].model, seen["evalset"], seen["collator"].images)
    with torch.no_grad():
        loaded = torch.nn.functional.normalize(
            evaluate._features(model.get_image_features(**{"pixel_values": ours["pixel_values"]})), dim=-1
        )
    torch.testing.assert_close(loaded, image_embeds, rtol=0, atol=1e-6)

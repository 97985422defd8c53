"""Worker for tests/modes/test_sharded_eval.py: the end-of-run evaluations of `ssl` (linear probe, kNN, raw pixels on
a capped class-balanced subset) and `clip` (retrieval with one or two captions per image, zero-shot) on fixed tiny
models and data, on however many processes launched it (gloo when under torchrun). Writes OUT/rank{r}.json: the
results and the number of rows this process's collators decoded.

    python tests/distributed/sharded_eval_worker.py OUT                                  # one process
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed/sharded_eval_worker.py OUT
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch


class Counting:
    """A collator that counts the rows it is given."""

    def __init__(self, inner):
        self.inner, self.rows = inner, 0
        self.image_size = getattr(inner, "image_size", None)

    def __call__(self, rows):
        self.rows += len(rows)
        return self.inner(rows)

    def decode(self, rows):
        self.rows += len(rows)
        return self.inner.decode(rows)

    def pixel_values(self, images):
        return self.inner.pixel_values(images)


def ssl_results() -> tuple[dict, int]:
    from matrix_llm.data.images import ImageCollator, load_image_dataset
    from matrix_llm.models.tiny import build_image_backbone
    from matrix_llm.modes.ssl.command import probe_results

    vit = build_image_backbone("tiny-vit", image_size=8, num_channels=1, hidden_size=32, seed=1)
    train = load_image_dataset("digits", "train").select(range(301))
    test = load_image_dataset("digits", "test").select(range(151))
    collator = Counting(ImageCollator(image_size=8, channels=1))
    results = probe_results(vit, 3, train, test, collator, raw_pixels_max_train=100, batch_size=32)
    return results, collator.rows


def clip_results() -> tuple[dict, int]:
    from matrix_llm.data.image_text import CLASS_NAMES, ImageTextCollator, scene_dataset, scene_templates
    from matrix_llm.modes.clip import command as clip
    from matrix_llm.modes.clip.evaluate import evaluate_dual_encoder

    model_args, data_args, training_args = clip.parse_args(
        ["--config", "demo/clip.yaml", "--model_name_or_path", "tiny-dual", "--tiny_hidden_size", "32"]
    )
    pairs = scene_dataset("test", n=61, side=data_args.image_size)
    model, tokenizer, images, _ = clip.build_model(model_args, data_args, training_args, pairs["caption"])
    rows = [  # every other image has two captions, one of them shared with other images
        {"image": r["image"], "caption": [r["caption"], "a scene"] if i % 2 else r["caption"]}
        for i, r in enumerate(pairs)
    ]
    counting = Counting(images)
    collator = ImageTextCollator(tokenizer, counting, max_length=data_args.max_length)
    zeroshot = (scene_dataset("zeroshot", n=47, side=data_args.image_size), CLASS_NAMES, scene_templates())
    results = evaluate_dual_encoder(model.eval(), tokenizer, collator, rows, zeroshot)
    return results, counting.rows


def main() -> int:
    out = Path(sys.argv[1])
    if "WORLD_SIZE" in os.environ:
        torch.distributed.init_process_group("gloo")
    ssl, ssl_rows = ssl_results()
    clip, clip_rows = clip_results()
    rank = int(os.environ.get("RANK", "0"))
    record = {"ssl": ssl, "ssl_rows": ssl_rows, "clip": clip, "clip_rows": clip_rows}
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    if "WORLD_SIZE" in os.environ:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())

"""CLIP data as open_clip users bring it: a CSV / TSV / JSONL / parquet file of image paths and captions (column
names configurable, relative paths against the file's folder), evaluation rows of one image grouped into its
captions, and the errors such files produce (a missing image named with its row, a missing column, a split a single
file does not have) before any model loads.

Run: .venv/bin/python -m pytest tests/modes/clip/test_clip_files.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from matrix_llm.data.image_text import load_image_text_dataset, scene_dataset
from matrix_llm.modes.clip import command as clip

TINY = [
    "--config",
    "demo/clip.yaml",
    "--model_name_or_path",
    "tiny-dual",
    "--freeze_text_tower",
    "false",
    "--tiny_hidden_size",
    "32",
    "--projection_dim",
    "16",
    "--per_device_train_batch_size",
    "16",
    "--max_steps",
    "3",
    "--logging_steps",
    "1",
    "--zeroshot_dataset",
    "null",
    "--disable_tqdm",
    "true",
]


def _write_scenes(folder, split, n, *, captions_per_image=1):
    """``n`` scenes of ``split`` as PNG files in ``folder/images/`` and their rows (relative paths), each image
    ``captions_per_image`` times with the caption numbered after the first."""
    scenes = scene_dataset(split, n, side=32)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, scene in enumerate(scenes):
        name = f"images/{split}-{i:04d}.png"
        Image.fromarray(np.asarray(scene["image"], dtype=np.uint8)).save(folder / name)
        for k in range(captions_per_image):
            rows.append({"filepath": name, "title": scene["caption"] + (f" ({k})" if k else "")})
    return scenes, pd.DataFrame(rows)


def _losses(out):
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [log["loss"] for log in history if "loss" in log]


def test_a_tsv_of_image_files_trains_like_the_same_pairs_in_a_dataset(tmp_path):
    """open_clip's CSV layout (tab-separated, `filepath` / `title`) read from another working directory: the images
    decode to the same pixels, so three steps give the losses of the same pairs given as the embedded dataset."""
    scenes, frame = _write_scenes(tmp_path / "data", "train", 48)
    frame.to_csv(tmp_path / "data" / "train.tsv", sep="\t", index=False)
    common = [*TINY, "--eval_split", "null", "--seed", "0"]
    reference = tmp_path / "scenes"
    assert clip.main([*common, "--max_train_samples", "48", "--output_dir", str(reference)]) == 0
    files = tmp_path / "files"
    argv = ["--dataset_name", str(tmp_path / "data" / "train.tsv"), "--image_column", "filepath"]
    assert clip.main([*common, *argv, "--caption_column", "title", "--output_dir", str(files)]) == 0
    assert len(_losses(files)) == 3 and _losses(files) == _losses(reference)


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_the_eval_file_groups_the_captions_of_each_image_for_retrieval(tmp_path, suffix):
    """Rows of one image (Flickr30k / COCO exports: one row per caption) become one image with its captions, so the
    end-of-run retrieval encodes 12 images and 36 captions (CLIP_benchmark's protocol); `eval retrieval` reads the
    same file the same way; training reads one row per caption."""
    folder = tmp_path / "data"
    _, train = _write_scenes(folder, "train", 32, captions_per_image=2)
    _, val = _write_scenes(folder, "test", 12, captions_per_image=3)
    for name, frame in (("train", train), ("val", val)):
        path = folder / f"{name}.{suffix}"
        if suffix == "csv":
            frame.to_csv(path, index=False)
        elif suffix == "jsonl":
            frame.to_json(path, orient="records", lines=True)
        else:
            frame.to_parquet(path)
    rows = load_image_text_dataset(
        str(folder / f"train.{suffix}"), image_column="filepath", caption_column="title"
    )
    assert len(rows) == 64 and isinstance(rows[0]["caption"], str)
    out = tmp_path / "run"
    argv = [
        *TINY,
        "--dataset_name",
        str(folder / f"train.{suffix}"),
        "--eval_split",
        str(folder / f"val.{suffix}"),
    ]
    argv += ["--image_column", "filepath", "--caption_column", "title", "--output_dir", str(out)]
    assert clip.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert (results["retrieval_images"], results["retrieval_captions"]) == (12, 36)
    from matrix_llm.tools.eval import main as eval_main

    data = ["--data", str(folder / f"val.{suffix}"), "--split", "train"]
    data += ["--image_column", "filepath", "--caption_column", "title", "--max_length", "24"]
    assert eval_main(["retrieval", "--model", str(out), *data, "--output_dir", str(tmp_path / "rt")]) == 0
    again = json.loads((tmp_path / "rt" / "results.json").read_text())
    assert (again["images"], again["captions"]) == (12, 36)
    assert again["image_to_text_R@5"] == pytest.approx(results["image_to_text_R@5"])


def test_bad_files_are_named_before_any_model_loads(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "data"
    _, frame = _write_scenes(folder, "train", 8)
    frame.to_csv(folder / "train.csv", index=False)
    frame.loc[5, "filepath"] = "images/missing.png"
    frame.to_csv(folder / "bad.csv", index=False)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(clip, "build_model", no_model)
    columns = ["--image_column", "filepath", "--caption_column", "title"]
    cases = [
        (
            "bad.csv",
            [*columns, "--eval_split", "null"],
            "bad.csv (train): row 6: the image 'images/missing.png'",
        ),
        ("train.csv", [*columns, "--eval_split", "test"], "one file is the `train` split only"),
        ("train.csv", [*columns, "--eval_split", str(folder / "val.csv")], "val.csv: no such file"),
        ("train.csv", ["--image_column", "filepath", "--eval_split", "null"], "no caption column 'caption'"),
    ]
    for name, argv, message in cases:
        out = ["--output_dir", str(tmp_path / "out")]
        assert clip.main([*TINY, "--dataset_name", str(folder / name), *out, *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()

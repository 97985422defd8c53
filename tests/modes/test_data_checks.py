"""What a user's own image data meets in `ssl`, `classify` and `clip` before and during training: a flat
(unlabelled) image folder, a data path that does not exist or is empty, a split it does not have, an unreadable
image among the first rows (all reported with exit status 2 before any model loads, nothing written) and one met
later (the run stops with one line naming the file, a checkpoint saved; `skip_corrupt_images` skips and counts it).

Run: .venv/bin/python -m pytest tests/modes/test_data_checks.py -q
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from matrix_llm.modes.classify import command as classify
from matrix_llm.modes.clip import command as clip
from matrix_llm.modes.ssl import command as ssl

TINY_SSL = [
    "--config",
    "demo/ssl.yaml",
    "--tiny_hidden_size",
    "16",
    "--projector_hidden",
    "32",
    "--projector_dim",
    "16",
    "--predictor_hidden",
    "16",
    "--per_device_train_batch_size",
    "8",
    "--num_channels",
    "3",
    "--eval_split",
    "null",
    "--disable_tqdm",
    "true",
]
MODES = {
    "ssl": (ssl.SSLMode, ["--config", "demo/ssl.yaml", "--num_channels", "3"]),
    "classify": (classify.ClassificationMode, ["--config", "classify/digits.yaml"]),
    "clip": (clip.CLIPMode, ["--config", "demo/clip.yaml"]),
}


def _folder(root, n=24, *, broken_at=None, labelled=False):
    """An imagefolder of ``n`` 12x12 RGB PNGs (flat, or in two class sub-folders), the file at sorted position
    ``broken_at`` unreadable. Returns the broken file's name."""
    rng = np.random.default_rng(0)
    broken = None
    for i in range(n):
        sub = root / (("a", "b")[i % 2] if labelled else "")
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"img{i:03d}.png"
        if i == broken_at:
            path.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
            broken = path.name
        else:
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(path)
    return broken


@pytest.fixture
def no_model(monkeypatch):
    """Building the trainer (the model) fails the test: what is checked must be reported before it."""

    def refuse(self, objective):
        raise AssertionError("the model was built")

    for mode, _ in MODES.values():
        monkeypatch.setattr(mode, "build", refuse)


def _run(name, argv):
    mode, base = MODES[name]
    from matrix_llm.runner import run_mode

    return run_mode(mode(), [*base, *argv])


@pytest.mark.parametrize("name", MODES)
def test_a_missing_or_empty_data_folder_is_a_configuration_problem(name, tmp_path, capsys, no_model):
    out = tmp_path / "out"
    assert _run(name, ["--dataset_name", str(tmp_path / "nope"), "--output_dir", str(out)]) == 2
    assert "`dataset_name`" in (err := capsys.readouterr().err) and "no such file or folder" in err
    (tmp_path / "empty").mkdir()
    assert _run(name, ["--dataset_name", str(tmp_path / "empty"), "--output_dir", str(out)]) == 2
    assert "the folder is empty" in capsys.readouterr().err
    assert not out.exists()


def test_a_flat_image_folder_trains_ssl_unlabelled_said_once(tmp_path, caplog):
    _folder(tmp_path / "data")
    out = tmp_path / "out"
    argv = [*TINY_SSL, "--dataset_name", str(tmp_path / "data"), "--max_steps", "2", "--output_dir", str(out)]
    with caplog.at_level(logging.WARNING, logger="matrix_llm.modes.ssl.command"):
        assert ssl.main([*argv, "--eval_split", "train"]) == 0
    said = [r for r in caplog.records if "training unlabelled" in r.getMessage()]
    assert len(said) == 1 and "set `label_column`" in said[0].getMessage()
    results = json.loads((out / "results.json").read_text())
    assert not any(k.startswith(("probe_", "knn_")) for k in results)


@pytest.mark.parametrize(
    "name, message",
    [
        ("classify", "no label column 'label'; the columns are ['image']: classify trains on labels"),
        ("clip", "no caption column 'caption'; the columns are ['image']; image-caption data needs one"),
    ],
)
def test_a_flat_image_folder_is_refused_where_labels_or_captions_are_needed(
    name, message, tmp_path, capsys, no_model
):
    _folder(tmp_path / "data")
    out = tmp_path / "out"
    assert _run(name, ["--dataset_name", str(tmp_path / "data"), "--output_dir", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_a_split_the_data_does_not_have_names_the_fields_to_change(tmp_path, capsys, no_model):
    _folder(tmp_path / "data", labelled=True)
    out = tmp_path / "out"
    assert _run("classify", ["--dataset_name", str(tmp_path / "data"), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert 'Unknown split "test"' in err and "`eval_split: null`" in err and not out.exists()


@pytest.mark.parametrize("name", MODES)
def test_an_unreadable_image_among_the_first_rows_is_named_before_any_model_loads(
    name, tmp_path, capsys, no_model
):
    broken = _folder(tmp_path / "data", broken_at=2, labelled=name != "ssl")
    out = tmp_path / "out"
    argv = ["--dataset_name", str(tmp_path / "data"), "--eval_split", "null", "--output_dir", str(out)]
    if name == "clip":  # captioned by class: the folder names
        argv += ["--caption_templates", "a {}.", "--zeroshot_dataset", "null"]
    assert _run(name, argv) == 2
    err = capsys.readouterr().err
    assert "of the `train` split: cannot read the image" in err
    assert broken in err and not out.exists()


def test_an_unreadable_image_met_in_training_stops_with_one_line_and_a_checkpoint(tmp_path, capsys):
    """The broken file is past the rows decoded up front: the run stops with exit status 1 and one line naming
    it, a checkpoint is saved; with `skip_corrupt_images` the same run finishes and counts it."""
    broken = _folder(tmp_path / "data", n=40, broken_at=30)
    argv = [*TINY_SSL, "--dataset_name", str(tmp_path / "data"), "--max_steps", "5", "--logging_steps", "1"]
    out = tmp_path / "out"
    assert ssl.main([*argv, "--output_dir", str(out)]) == 1
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("matrix-llm ssl:"))
    assert broken in line and "--skip_corrupt_images true" in line and "--resume_from_checkpoint true" in line
    assert "Traceback" not in err
    checkpoints = list(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "trainer_state.json").is_file()
    step = json.loads((checkpoints[0] / "trainer_state.json").read_text())["global_step"]
    assert checkpoints[0].name == f"checkpoint-{step}" and step < 5

    skipping = tmp_path / "skipping"
    assert ssl.main([*argv, "--skip_corrupt_images", "true", "--output_dir", str(skipping)]) == 0
    train = json.loads((skipping / "train_results.json").read_text())
    assert train["skipped_images"] == 1

"""`streaming: true`: the training split read as a stream (matrix_llm.data.streaming), window-shuffled, split
across processes and workers, resumed exactly from a checkpoint; and the errors a stream can give before any model
loads.

Run: .venv/bin/python -m pytest tests/modes/test_streaming.py -q   (the two-process test: -m slow)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import datasets
import pytest
import torch
from conftest import REPO, kill_and_resume

from matrix_llm.data.images import load_image_dataset
from matrix_llm.data.streaming import StreamCheckpoint, StreamingRows, stream_collator
from matrix_llm.modes.ssl import command as ssl

SSL = [
    "--config",
    "demo/ssl.yaml",
    "--tiny_hidden_size",
    "32",
    "--projector_hidden",
    "64",
    "--projector_dim",
    "32",
    "--predictor_hidden",
    "16",
    "--per_device_train_batch_size",
    "16",
    "--logging_steps",
    "1",
    "--eval_split",
    "null",
    "--disable_tqdm",
    "true",
]


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    """256 digits images in 4 parquet files (the label of a row is its number) and the same rows in one file."""
    folder = tmp_path_factory.mktemp("numbered")
    rows = load_image_dataset("digits", "train").select(range(256))
    rows = rows.remove_columns("label").add_column("label", list(range(256)))
    (folder / "shards").mkdir()
    for i in range(4):
        rows.select(range(64 * i, 64 * (i + 1))).to_parquet(folder / "shards" / f"train-{i}.parquet")
    rows.to_parquet(folder / "train.parquet")
    return folder


def _losses(out):
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {log["step"]: log["loss"] for log in history if "loss" in log}


def _rows(n=50, shards=4):
    return datasets.Dataset.from_dict({"a": list(range(n))}).to_iterable_dataset(num_shards=shards)


def _batches(rows, workers, passes=1, stop=None, checkpoint=None):
    collate = stream_collator(lambda rs: {"a": [r["a"] for r in rs]})
    loader = torch.utils.data.DataLoader(rows, batch_size=4, collate_fn=collate, num_workers=workers)
    out = []
    for epoch in range(passes):
        rows.set_epoch(epoch)
        for batch in loader:
            if checkpoint is not None:
                checkpoint.consumed(batch)
            out.append(batch["a"])
            if len(out) == stop:
                return out
    return out


def test_the_stream_is_window_shuffled_each_row_once_per_pass():
    rows = StreamingRows(_rows(), buffer_size=7, seed=1)
    first = [a for b in _batches(rows, 0) for a in b]
    assert sorted(first) == list(range(50)) and first != list(range(50))
    assert all(set(first[7 * w : 7 * w + 7]) == set(range(7 * w, min(7 * w + 7, 50))) for w in range(8))
    assert [a for b in _batches(StreamingRows(_rows(), buffer_size=1), 0) for a in b] == list(range(50))
    assert _batches(StreamingRows(_rows(), buffer_size=7, seed=2), 0) != _batches(rows, 0)


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_a_restored_stream_goes_on_after_the_last_consumed_row(workers, tmp_path):
    """Positions of the batches consumed (5 of them, mid-window) written into a checkpoint folder and loaded by a new
    stream: the batches of an uninterrupted run follow, in order, into the next pass, with DataLoader workers too
    (each reads its own files; the resumed DataLoader's first worker reads the stream of the one that was next)."""
    from types import SimpleNamespace

    full = _batches(StreamingRows(_rows(), buffer_size=7, seed=1), workers, passes=2)
    first = StreamingRows(_rows(), buffer_size=7, seed=1)
    checkpoint = StreamCheckpoint(first, rank=0, workers=workers)
    seen = _batches(first, workers, stop=5, checkpoint=checkpoint)
    (tmp_path / "checkpoint-5").mkdir()
    checkpoint.on_save(SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=5), None)
    resumed = StreamingRows(_rows(), buffer_size=7, seed=1)
    StreamCheckpoint(resumed, rank=0, workers=workers).load(tmp_path / "checkpoint-5")
    rest = _batches(resumed, workers, passes=2)[: len(full) - 5]
    assert seen == full[:5] and seen + rest == full


def test_two_processes_read_disjoint_shares():
    shares = [[a for b in _batches(StreamingRows(_rows(), rank=r, world=2), 0) for a in b] for r in (0, 1)]
    assert not set(shares[0]) & set(shares[1]) and sorted(shares[0] + shares[1]) == list(range(50))


def test_streamed_and_in_memory_runs_in_the_same_order_train_alike(numbered, tmp_path):
    """The same rows, unshuffled: read as a stream from four parquet files, or whole from one, the four steps have
    the same losses."""
    argv = [*SSL, "--max_steps", "4", "--label_column", "null"]
    stream, whole = tmp_path / "stream", tmp_path / "whole"
    data = ["--dataset_name", str(numbered / "shards"), "--streaming", "true", "--shuffle_buffer_size", "1"]
    assert ssl.main([*argv, *data, "--output_dir", str(stream)]) == 0
    data = ["--dataset_name", str(numbered / "train.parquet"), "--train_sampling_strategy", "sequential"]
    assert ssl.main([*argv, *data, "--output_dir", str(whole)]) == 0
    assert len(_losses(stream)) == 4 and _losses(stream) == pytest.approx(_losses(whole), rel=1e-6)


def test_a_killed_streaming_run_resumes_exactly(numbered, tmp_path, monkeypatch):
    argv = [
        *SSL,
        "--dataset_name",
        str(numbered / "shards"),
        "--streaming",
        "true",
        "--shuffle_buffer_size",
        "48",
    ]
    argv += ["--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2"]
    full_dir, cut_dir = kill_and_resume(ssl.main, argv, tmp_path, monkeypatch)
    assert (cut_dir / "checkpoint-2" / "stream_state_rank0.json").is_file()
    full, cut = _losses(full_dir), _losses(cut_dir)
    assert set(full) == set(cut) == {1, 2, 3, 4}
    for step in full:
        assert cut[step] == pytest.approx(full[step], rel=1e-6), step


def test_stream_problems_are_named_before_any_model_loads(numbered, tmp_path, capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(ssl, "build_model", no_model)
    (tmp_path / "bad.tar").write_text("not a tar archive")
    base = [*SSL, "--streaming", "true", "--output_dir", str(tmp_path / "out")]
    cases = [
        (
            ["--dataset_name", str(numbered / "shards")],
            "a stream has no length to count epochs by; set `max_steps`",
        ),
        (["--dataset_name", str(tmp_path / "bad.tar"), "--max_steps", "2"], "bad.tar: not a tar archive"),
        (["--dataset_name", str(tmp_path / "no-*.tar"), "--max_steps", "2"], "no-*.tar': it matches none"),
        (
            ["--dataset_name", str(numbered / "shards"), "--max_steps", "2", "--image_column", "img"],
            "no image column",
        ),
    ]
    for argv, message in cases:
        assert ssl.main([*base, *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_processes_stream_disjoint_rows_and_resume_exactly(numbered, tmp_path):
    """`matrix-llm ssl --streaming true` on two real processes (gloo): the ranks never share a row; killed after
    checkpoint 2 and resumed, each rank consumes at steps 3 and 4 the rows of the uninterrupted run."""
    env = dict(
        os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(REPO)
    )
    worker = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    worker.append(str(REPO / "tests" / "distributed" / "stream_worker.py"))
    argv = [
        *SSL,
        "--dataset_name",
        str(numbered / "shards"),
        "--streaming",
        "true",
        "--shuffle_buffer_size",
        "16",
    ]
    argv += ["--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", "--use_cpu", "true"]

    def run(name, *extra, kill=None):
        record = tmp_path / f"{name}-record"
        record.mkdir(exist_ok=True)
        run_env = dict(env, **({"KILL_AFTER_SAVE": str(kill)} if kill else {}))
        cmd = [*worker, str(record), *argv, "--output_dir", str(tmp_path / name), *extra]
        result = subprocess.run(cmd, env=run_env, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert (result.returncode == 0) == (kill is None), result.stderr[-3000:]
        return [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]

    full = run("full")
    shares = [{label for batch in rank.values() for label in batch} for rank in full]
    assert not shares[0] & shares[1] and all(len(s) == 4 * 16 for s in shares)
    run("cut", kill=2)
    resumed = run(
        "resumed-record-only", "--output_dir", str(tmp_path / "cut"), "--resume_from_checkpoint", "true"
    )
    for rank in (0, 1):
        assert set(resumed[rank]) == {"3", "4"}
        assert [resumed[rank][s] for s in ("3", "4")] == [full[rank][s] for s in ("3", "4")], rank


def _shards(folder, split, n, per_shard):
    """``n`` scenes of ``split`` as webdataset shards ``folder/{split}-{i}.tar`` of ``per_shard`` pairs each:
    ``{key}.png`` with ``{key}.txt`` (the caption)."""
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    from matrix_llm.data.image_text import scene_dataset

    scenes = scene_dataset(split, n, side=32)
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(0, n, per_shard):
        with tarfile.open(folder / f"{split}-{shard // per_shard}.tar", "w") as tar:
            for i in range(shard, min(shard + per_shard, n)):
                png = io.BytesIO()
                Image.fromarray(np.asarray(scenes[i]["image"], dtype=np.uint8)).save(png, format="PNG")
                for suffix, data in (("png", png.getvalue()), ("txt", scenes[i]["caption"].encode())):
                    info = tarfile.TarInfo(f"{i:05d}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return scenes


def test_clip_streams_webdataset_shards_like_the_same_pairs_in_memory(tmp_path):
    """Two .tar shards of `{key}.png` / `{key}.txt` streamed in order train like the same 48 scenes in memory (same
    losses); the eval shard is read into memory and measured; two processes would read one shard each."""
    from matrix_llm.data.streaming import open_stream
    from matrix_llm.modes.clip import command as clip

    _shards(tmp_path / "train", "train", 48, 24)
    _shards(tmp_path / "test", "test", 20, 20)
    tiny = ["--config", "demo/clip.yaml", "--model_name_or_path", "tiny-dual", "--freeze_text_tower", "false"]
    tiny += ["--tiny_hidden_size", "32", "--projection_dim", "16", "--per_device_train_batch_size", "16"]
    tiny += [
        "--max_steps",
        "3",
        "--logging_steps",
        "1",
        "--zeroshot_dataset",
        "null",
        "--disable_tqdm",
        "true",
    ]
    streamed = tmp_path / "streamed"
    data = [
        "--dataset_name",
        str(tmp_path / "train" / "*.tar"),
        "--eval_split",
        str(tmp_path / "test" / "*.tar"),
    ]
    data += [
        "--image_column",
        "png",
        "--caption_column",
        "txt",
        "--streaming",
        "true",
        "--shuffle_buffer_size",
        "1",
    ]
    assert clip.main([*tiny, *data, "--max_eval_samples", "20", "--output_dir", str(streamed)]) == 0
    memory = tmp_path / "memory"
    scenes = ["--max_train_samples", "48", "--eval_split", "null", "--train_sampling_strategy", "sequential"]
    assert clip.main([*tiny, *scenes, "--output_dir", str(memory)]) == 0
    assert len(_losses(streamed)) == 3 and _losses(streamed) == pytest.approx(_losses(memory), rel=1e-6)
    results = json.loads((streamed / "results.json").read_text())
    assert results["retrieval_images"] == 20 and results["train_pairs"] is None
    stream = open_stream(str(tmp_path / "train" / "*.tar"), "train")
    shares = [[r["__key__"] for r in StreamingRows(stream, rank=r, world=2)] for r in (0, 1)]
    assert [len(s) for s in shares] == [24, 24] and not set(shares[0]) & set(shares[1])


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    """A folder of `train.jsonl` (48 synthetic problems, MetaMathQA's `query` / `response` names) and `test.jsonl`."""
    from matrix_llm.data.synthetic import synthetic_dataset

    folder = tmp_path_factory.mktemp("problems")
    for split, n in (("train", 48), ("test", 8)):
        rows = synthetic_dataset(n, seed=3, split=split).rename_columns(
            {"question": "query", "answer": "response"}
        )
        rows.to_json(folder / f"{split}.jsonl")
    return folder


def _sft(problems):
    from conftest import SFT_TINY

    argv = [a for a in SFT_TINY]
    argv[argv.index("synthetic")] = str(problems)
    return [*argv, "--logging_steps", "1", "--disable_tqdm", "true"]


def test_sft_streamed_and_in_memory_runs_in_the_same_order_train_alike(problems, tmp_path):
    """Rows tokenised as they are read (MetaMathQA's column names renamed on the way) train like the same rows
    tokenised whole, unshuffled: the same losses at each of 4 steps; the eval rows are measured."""
    from matrix_llm.modes.lm import command as sft

    stream, whole = tmp_path / "stream", tmp_path / "whole"
    argv = [*_sft(problems), "--max_steps", "4"]
    assert (
        sft.main([*argv, "--streaming", "true", "--shuffle_buffer_size", "1", "--output_dir", str(stream)])
        == 0
    )
    assert sft.main([*argv, "--train_sampling_strategy", "sequential", "--output_dir", str(whole)]) == 0
    assert len(_losses(stream)) == 4 and _losses(stream) == pytest.approx(_losses(whole), rel=1e-6)
    final = json.loads((stream / "all_results.json").read_text())
    assert final["eval_loss"] == pytest.approx(
        json.loads((whole / "all_results.json").read_text())["eval_loss"]
    )


def test_a_killed_sft_stream_resumes_exactly(problems, tmp_path, monkeypatch):
    from matrix_llm.modes.lm import command as sft

    argv = [*_sft(problems), "--streaming", "true", "--shuffle_buffer_size", "16", "--eval_split", "null"]
    argv += ["--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2"]
    full_dir, cut_dir = kill_and_resume(sft.main, argv, tmp_path, monkeypatch)
    full, cut = _losses(full_dir), _losses(cut_dir)
    assert set(full) == set(cut) == {1, 2, 3, 4}
    for step in full:
        assert cut[step] == pytest.approx(full[step], rel=1e-6), step


def test_classify_streams_labelled_images(numbered, tmp_path):
    """The head is sized from the labels of the stream's first rows and the eval rows; four steps train."""
    from matrix_llm.modes.classify import command as classify

    out = tmp_path / "run"
    argv = [
        "--config",
        "classify/digits.yaml",
        "--dataset_name",
        str(numbered / "shards"),
        "--streaming",
        "true",
    ]
    argv += ["--max_steps", "4", "--eval_split", "null", "--eval_strategy", "no", "--save_strategy", "no"]
    argv += ["--logging_steps", "1", "--disable_tqdm", "true", "--output_dir", str(out)]
    assert classify.main(argv) == 0
    assert len(json.loads((out / "config.json").read_text())["id2label"]) == 256
    assert len(_losses(out)) == 4


def test_streamed_sft_rows_are_tokenised_and_dropped_like_the_whole_set(tiny_tokenizer):
    """TokenizedRows (a stream's rows, one at a time) gives the examples tokenize_dataset gives the same rows whole:
    MetaMathQA's names renamed, the rows longer than max_length dropped (or kept cut with drop_truncated false)."""
    from matrix_llm.data.gsm8k.loading import TokenizedRows, sft_columns, tokenize_dataset
    from matrix_llm.data.synthetic import synthetic_dataset

    rows = synthetic_dataset(12, seed=1).rename_columns({"question": "query", "answer": "response"})
    names = sft_columns(rows.column_names, source="rows")
    lengths = sorted(
        len(tiny_tokenizer(q + a)["input_ids"]) for q, a in zip(rows["query"], rows["response"], strict=True)
    )
    max_length = lengths[len(lengths) // 2]  # about half of the rows are too long
    for drop in (True, False):
        streamed = TokenizedRows(
            names, tiny_tokenizer, template="qa", max_length=max_length, drop_truncated=drop
        )
        one_by_one = [r for r in map(streamed, rows) if r is not None]
        whole, _ = tokenize_dataset(
            rows.rename_columns({"query": "question", "response": "answer"}),
            tiny_tokenizer,
            template="qa",
            max_length=max_length,
            drop_truncated=drop,
        )
        assert one_by_one == [dict(r) for r in whole] and (len(whole) < 12) == drop


def test_clip_streams_a_labelled_set_captioned_by_class_like_in_memory(tmp_path):
    """caption_templates on a stream: each row captioned by its class as it is read, the excluded class left out;
    the same losses as the same rows captioned in memory (a pretrained text tower: no tokenizer trained on them)."""
    from datasets import ClassLabel

    from matrix_llm.data.image_text import CaptionByClass
    from matrix_llm.modes.clip import command as clip

    rows = load_image_dataset("digits", "train").select(range(96))
    rows = rows.cast_column("label", ClassLabel(names=[str(i) for i in range(10)]))
    for i in range(2):
        rows.select(range(48 * i, 48 * (i + 1))).to_parquet(tmp_path / "digits" / f"train-{i}.parquet")
    argv = ["--config", "demo/clip.yaml", "--dataset_name", str(tmp_path / "digits"), "--eval_split", "null"]
    argv += ["--caption_templates", "a photo of the digit {}.", "--exclude_classes", "3"]
    argv += ["--zeroshot_dataset", "null", "--per_device_train_batch_size", "16", "--max_steps", "3"]
    argv += ["--logging_steps", "1", "--disable_tqdm", "true"]
    stream, memory = tmp_path / "stream", tmp_path / "memory"
    assert (
        clip.main([*argv, "--streaming", "true", "--shuffle_buffer_size", "1", "--output_dir", str(stream)])
        == 0
    )
    assert clip.main([*argv, "--train_sampling_strategy", "sequential", "--output_dir", str(memory)]) == 0
    assert len(_losses(stream)) == 3 and _losses(stream) == pytest.approx(_losses(memory), rel=1e-6)
    caption = CaptionByClass(["0", "1", "2", "3"], ["a {}", "the {}"], ("3",))
    assert caption({"image": 0, "label": 2}) == {"image": 0, "caption": ["a 2", "the 2"]}
    assert caption({"image": 0, "label": 3}) is None
    with pytest.raises(ValueError, match="label 7 has no class name"):
        caption({"image": 0, "label": 7})


def test_an_unreadable_image_in_a_shard_names_the_shard(tmp_path):
    """Member names repeat across webdataset shards (each starts at 00000.png): the error names the shard too."""
    import io
    import tarfile

    from matrix_llm.data.images import ImageCollator, UnreadableImageError
    from matrix_llm.data.streaming import Columns, open_stream, streamed_columns

    _shards(tmp_path, "train", 4, 4)
    with tarfile.open(tmp_path / "train-1.tar", "w") as tar:
        for suffix, data in (("png", b"not a png"), ("txt", b"a caption")):
            info = tarfile.TarInfo(f"00000.{suffix}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    source = str(tmp_path / "*.tar")
    stream, kept = streamed_columns(open_stream(source, "train"), source, {"png": "image", "txt": "caption"})
    rows = list(StreamingRows(stream, Columns(kept, None), buffer_size=1))
    paths = [f"{tmp_path / 'train-0.tar'}:{i:05d}.png" for i in range(4)] + [
        f"{tmp_path / 'train-1.tar'}:00000.png"
    ]
    assert [r["image"]["path"] for r in rows] == paths
    with pytest.raises(UnreadableImageError, match=r"train-1\.tar:00000\.png"):
        ImageCollator(image_size=8).decode(rows)

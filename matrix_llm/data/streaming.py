"""Training data read as a stream (``streaming: true``): a ``datasets.IterableDataset`` of a Hub id, a local folder,
a CSV / JSON(L) / parquet file or webdataset tar shards, split across processes and across DataLoader workers
(``datasets.distributed.split_dataset_by_node``), shuffled within windows of ``shuffle_buffer_size`` rows,
transformed row by row (column names, tokenisation) as it is read, and resumable exactly.

Why windows rather than ``datasets``' own buffer shuffle: a checkpoint cannot hold the buffer (``datasets`` reloads
a shuffled stream without it, huggingface/datasets#7444), so a resumed run would not see what an uninterrupted one
sees. A window is ``shuffle_buffer_size`` consecutive rows of this process's (and worker's) stream, permuted with a
seed of (``seed``, pass, window number); every row carries where it came from (the stream's ``state_dict`` at the
start of its window and its place in the window), :class:`StreamCheckpoint` keeps the position of the last row each
worker's batches handed to the optimizer and writes it into every checkpoint (``stream_state_rank{r}.json``), and a
resumed run reloads the window and goes on after that row. DataLoader workers take their share here (whole files
when they divide among the workers, else every ``num_workers``-th row), so that in the pass a run resumes in,
worker ``i`` can read the stream of worker ``i + k``, ``k`` the worker whose batch was next: the resumed run sees the
very batches of the uninterrupted one, in the same order, with or without workers.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from .images import load_split

__all__ = [
    "POSITION",
    "Chain",
    "Columns",
    "StreamCheckpoint",
    "StreamingRows",
    "column_names",
    "open_stream",
    "stream_collator",
    "streamed_columns",
    "streaming_rows",
    "take",
]

logger = logging.getLogger("matrix_llm.data.streaming")

POSITION = "_stream_position"
"""The key of a streamed row (and of a collated batch: the list of its rows') that says where it came from."""


def open_stream(source: str, split: str, *, config: str | None = None) -> Any:
    """``source``'s ``split`` as a ``datasets.IterableDataset``: a Hub id (with ``config``) or a local folder
    (``load_dataset(..., streaming=True)``), a CSV / TSV / JSON(L) / parquet file (the ``train`` split; ``split`` may
    name another file; :func:`~matrix_llm.data.images.load_split`), or webdataset ``.tar`` shards (one file or a glob such as
    ``shards/*.tar``: the ``train`` split; a folder of them, whose file names give the splits, e.g.
    ``train-0000.tar`` / ``validation-0000.tar``): ``{key}.jpg`` with ``{key}.txt`` / ``.json`` become the columns
    ``jpg`` / ``txt`` / ``json``.

    Raises:
        ValueError: a split the data does not have; a ``.tar`` file that is not a tar archive.
        FileNotFoundError: a data file or shard pattern that matches nothing.
    """
    import datasets

    shards = _tar_shards(source)
    if shards is not None:
        import tarfile

        if not tarfile.is_tarfile(
            shards[0]
        ):  # the first shard is opened now: a file that is no tar stops here
            raise ValueError(f"{shards[0]}: not a tar archive (webdataset shards are .tar files)")
        return datasets.load_dataset(
            "webdataset", data_files={"train": shards}, split="train", streaming=True
        )
    # a local folder has no named configs (the LM mode's default `main` is GSM8K's)
    local_folder = Path(source).expanduser().is_dir()
    return load_split(source, split, config=None if local_folder else config, streaming=True)


def _tar_shards(source: str) -> list[str] | None:
    """The ``.tar`` files ``source`` names (a file, or a glob of them), sorted; ``None`` when it names no tar
    file (a folder of shards is ``datasets``' to read: it finds the splits in the file names)."""
    import glob

    if not str(source).endswith(".tar"):
        return None
    found = sorted(glob.glob(str(Path(source).expanduser())))
    if not found:
        raise FileNotFoundError(f"{source}: no such shard (a .tar file, or a glob of them)")
    return found


class Columns:
    """``row -> row`` of a stream: the ``names`` columns (source -> mode's name) kept and renamed, an image given as
    a file path made ``{"path", "bytes": None}`` (relative paths against ``folder``), as ``datasets.Image(decode=
    False)`` gives it; the image is decoded by the collator, which names a file it cannot read. An image of a
    webdataset shard (a row with ``__url__``) is named ``shard.tar:member``: member names repeat across shards."""

    def __init__(self, names: dict[str, str], folder: Path | None) -> None:
        self.names, self.folder = names, folder

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        out = {new: row[old] for old, new in self.names.items()}
        image = out.get("image")
        if isinstance(image, str):
            path = Path(image).expanduser()
            out["image"] = {
                "path": str(self.folder / path if self.folder and not path.is_absolute() else path),
                "bytes": None,
            }
        elif isinstance(image, dict) and image.get("bytes") and "__url__" in row:
            out["image"] = {**image, "path": f"{row['__url__']}:{image.get('path') or row.get('__key__')}"}
        return out


def streamed_columns(
    stream: Any, source: str, names: dict[str, str], optional: tuple[str, ...] = ()
) -> tuple[Any, dict[str, str]]:
    """``(stream with its image column undecoded, the names of ``names`` it has)``: a missing column raises
    :class:`~matrix_llm.data.images.MissingColumnError` (with the columns the stream has), unless its mode name is
    in ``optional``. The columns come from the stream's features, else from its first row."""
    import datasets

    from .images import MissingColumnError

    features = stream.features
    columns = column_names(stream)
    kept = {}
    for old, new in names.items():
        if old in columns:
            kept[old] = new
        elif new not in optional:
            raise MissingColumnError(source, new, old, columns)
    for old, new in kept.items():
        if new == "image" and features is not None and type(features.get(old)).__name__ == "Image":
            stream = stream.cast_column(old, datasets.Image(decode=False))
    return stream, kept


class Chain:
    """``second(first(row))``, ``None`` (the row left out) when either gives ``None``."""

    def __init__(self, first: Callable, second: Callable) -> None:
        self.first, self.second = first, second

    def __call__(self, row: dict[str, Any]) -> dict[str, Any] | None:
        row = self.first(row)
        return None if row is None else self.second(row)


def column_names(stream: Any) -> list[str]:
    """The columns of a ``datasets.IterableDataset``: its features', else its first row's."""
    if stream.features is not None:
        return list(stream.features)
    return list(next(iter(stream.take(1)), {}))


def streaming_rows(stream: Any, transform: Any, data_args: Any, training_args: Any) -> StreamingRows:
    """:class:`StreamingRows` of ``stream`` for this process of the run (``shuffle_buffer_size``, ``seed``, its
    rank among ``world_size`` processes)."""
    return StreamingRows(
        stream,
        transform,
        buffer_size=data_args.shuffle_buffer_size,
        seed=training_args.seed,
        rank=training_args.process_index,
        world=training_args.world_size,
    )


def take(stream: Any, n: int, transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Any:
    """The first ``n`` rows of a ``datasets.IterableDataset``, ``transform``-ed, as a ``datasets.Dataset`` (the
    evaluation set, the probes' training sample, the captions a tiny tokenizer is trained on), written to an Arrow
    cache file as they are read and memory-mapped, as ``load_dataset`` would: memory does not grow with ``n``."""
    import uuid

    import datasets

    def rows() -> Iterator[dict[str, Any]]:
        for row in stream.take(n):
            row = transform(row) if transform is not None else row
            if row is not None:  # a row the transform leaves out (an excluded class)
                yield row

    from datasets.arrow_writer import SchemaInferenceError

    try:  # a fresh fingerprint: no hashing of the stream, no cache shared with other data
        return datasets.Dataset.from_generator(rows, fingerprint=uuid.uuid4().hex)
    except datasets.exceptions.DatasetGenerationError as e:
        if isinstance(e.__cause__, SchemaInferenceError):
            raise ValueError("the stream holds no rows") from None
        if e.__cause__ is not None:
            raise e.__cause__ from None  # the row's own error (a missing column, an unreadable file)
        raise


class StreamingRows(torch.utils.data.IterableDataset):
    """This process's share of a ``datasets.IterableDataset``, window-shuffled, ``transform``-ed row by row and
    position-tagged (module docstring). Passes over the data follow one another; ``set_epoch`` (the Trainer's)
    counts them from the pass a resumed run started in.

    Args:
        stream: the whole ``datasets.IterableDataset`` (:func:`open_stream`); this process keeps its share
            (``split_dataset_by_node``: whole files when their number divides by the processes, else every
            ``world``-th row).
        transform: ``row -> row`` (or ``None`` to drop the row), applied in the DataLoader worker.
        buffer_size: the shuffle window (1: the stream's order).
        seed, rank, world: the run's seed and this process's place.
    """

    def __init__(
        self,
        stream: Any,
        transform: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
        *,
        buffer_size: int = 1000,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        from datasets.distributed import split_dataset_by_node

        if buffer_size < 1:
            raise ValueError(f"shuffle_buffer_size must be >= 1; got {buffer_size}")
        self.stream = split_dataset_by_node(stream, rank=rank, world_size=world) if world > 1 else stream
        self.transform, self.buffer_size, self.seed, self.rank = transform, buffer_size, seed, rank
        self.epoch = 0
        self.first_pass = 0  # the pass a resumed run starts in (the Trainer's epoch 0)
        self.resume: dict[int, dict[str, Any]] = {}  # worker -> the position of its last consumed row
        # in the pass a run resumes in: DataLoader worker i reads worker (i + rotation)'s stream
        self.rotation = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def restore(self, positions: dict[int, dict[str, Any]], next_worker: int = 0) -> None:
        """Go on after the rows ``positions`` name (worker -> :data:`POSITION` of its last consumed row), the
        DataLoader's first batch coming from worker ``next_worker`` as it would have in the interrupted run."""
        self.resume = dict(positions)
        self.rotation = next_worker
        if positions:
            self.first_pass = min(p["pass"] for p in positions.values())

    def _windows(
        self, worker: int, workers: int, data_pass: int, start: dict[str, Any] | None
    ) -> Iterator[tuple[int, Any, list[dict]]]:
        """``(window number, stream state at its start or None for the start of the pass, its rows)`` of worker
        ``worker``'s stream (of ``workers``) in pass ``data_pass``, from the window of ``start`` (a resumed
        position in this pass) when given."""
        stream = copy.deepcopy(self.stream)  # a loaded state would otherwise start every later pass
        # this worker's share, chosen here (not by `datasets`) so that a resumed run can rotate the workers
        if workers > 1:
            from datasets.distributed import split_dataset_by_node

            stream = split_dataset_by_node(stream, rank=worker, world_size=workers)
        stream.set_epoch(data_pass)
        number, state = (start["window"], start["state"]) if start is not None else (0, None)
        if state is not None:
            stream.load_state_dict(copy.deepcopy(state))
        rows = ({k: v[0] for k, v in one.items()} for one in stream.iter(batch_size=1))  # no split by worker
        while True:
            window = [row for _, row in zip(range(self.buffer_size), rows, strict=False)]
            if not window:
                return
            yield number, state, window
            number += 1
            # after the window's last row: where the next one starts
            state = copy.deepcopy(stream.state_dict())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        data_pass = self.first_pass + self.epoch
        workers = info.num_workers if info is not None else 1
        rotation = self.rotation if data_pass == self.first_pass else 0
        worker = (info.id + rotation) % workers if info is not None else 0
        start = self.resume.get(worker)
        if start is not None and start["pass"] != data_pass:
            start = None
        skip = start["index"] + 1 if start is not None else 0
        for number, state, window in self._windows(worker, workers, data_pass, start):
            order = np.random.default_rng([self.seed, self.rank, worker, data_pass, number]).permutation(
                len(window)
            )
            for index in range(skip, len(window)):
                row = window[order[index]]
                row = self.transform(row) if self.transform is not None else row
                if row is None:
                    continue
                position = {
                    "worker": worker,
                    "pass": data_pass,
                    "window": number,
                    "state": state,
                    "index": index,
                }
                yield {**row, POSITION: position}
            skip = 0
        self.resume.pop(worker, None)


def stream_collator(collate: Callable[[list[dict]], Any]) -> Callable[[list[dict]], Any]:
    """``collate`` for position-tagged rows: the positions are taken off the rows and handed on as the batch's
    :data:`POSITION` (the list of them), which :meth:`StreamCheckpoint.consumed` reads."""

    def collate_tagged(rows: list[dict]) -> Any:
        positions = [row.pop(POSITION) for row in rows if POSITION in row]
        batch = collate(rows)
        if positions:
            batch[POSITION] = positions
        return batch

    return collate_tagged


class StreamCheckpoint(TrainerCallback):
    """Keeps, per DataLoader worker, the position of the last streamed row a training step consumed
    (:meth:`consumed`, called by the trainer with each batch) and writes them into each checkpoint as
    ``stream_state_rank{r}.json``; :meth:`load` gives them back to the :class:`StreamingRows` of a resumed run."""

    def __init__(self, rows: StreamingRows, rank: int, workers: int) -> None:
        self.rows, self.rank, self.workers = rows, rank, workers
        self.positions: dict[int, dict[str, Any]] = {}
        self.last = -1  # the worker of the last consumed batch

    def consumed(self, batch: dict[str, Any]) -> None:
        for position in batch.pop(POSITION, None) or ():
            self.positions[position["worker"]] = position
            self.last = position["worker"]

    def file(self, checkpoint: str | Path) -> Path:
        return Path(checkpoint) / f"stream_state_rank{self.rank}.json"

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            record = {
                "workers": self.workers,
                "next_worker": (self.last + 1) % max(self.workers, 1),
                "positions": {str(k): v for k, v in self.positions.items()},
            }
            self.file(folder).write_text(json.dumps(record))
        return control

    def load(self, checkpoint: str | Path) -> None:
        """Restore the stream of ``checkpoint`` (a warning, and the stream from its start, when it has none)."""
        path = self.file(checkpoint)
        if not path.is_file():
            logger.warning(
                "%s: no stream position in the checkpoint; the stream starts from its beginning", path
            )
            return
        record = json.loads(path.read_text())
        if record["workers"] != self.workers:
            raise ValueError(
                f"{checkpoint}: saved with dataloader_num_workers={record['workers']}; a streaming run resumes "
                f"with the same number of workers (now {self.workers})"
            )
        self.positions = {int(k): v for k, v in record["positions"].items()}
        self.rows.restore(self.positions, record["next_worker"])


def stream_splits(
    data_args: Any,
    training_args: Any,
    names: dict[str, str],
    *,
    optional: tuple[str, ...] = (),
    sample: int = 1000,
    sample_columns: tuple[str, ...] | None = None,
    then: tuple[Any, Any] = (None, None),
) -> tuple[StreamingRows, Any, Any]:
    """``(train stream, its first sample rows, eval rows)`` of a mode's ``data_args`` (``dataset_name``,
    ``dataset_config``, ``train_split``, ``eval_split``, ``max_eval_samples`` (default 1000),
    ``shuffle_buffer_size``, ``skip_corrupt_images``): the columns ``names`` (source -> mode's name; those in
    ``optional`` may be missing) renamed as they are read; the sample (only its ``sample_columns``, mode names, when
    given: captions without their images) and the eval rows as ``datasets.Dataset`` (what the model is sized from,
    what evaluation reads). ``then``: a second ``row -> row`` (or ``None``) for the training and the eval rows, after
    the renaming (class captions). The first images of the stream and of the eval rows are decoded here, before any
    model loads (:func:`~matrix_llm.data.images.check_readable`)."""
    from .images import check_readable, data_folder

    source = data_args.dataset_name

    def split_of(split: str, second: Any) -> tuple[Any, Any]:
        stream, kept = streamed_columns(
            open_stream(source, split, config=data_args.dataset_config), source, names, optional
        )
        columns = Columns(kept, data_folder(source, split))
        return stream, columns if second is None else Chain(columns, second)

    stream, columns = split_of(data_args.train_split, then[0])
    if sample_columns is None:
        first = take(stream, sample, columns)
    else:
        renamed = columns.first if isinstance(columns, Chain) else columns
        wanted = {old: new for old, new in renamed.names.items() if new in sample_columns}
        first = take(stream.select_columns(list(wanted)), sample, Columns(wanted, renamed.folder))
    evalset = None
    if data_args.eval_split:
        eval_stream, eval_columns = split_of(data_args.eval_split, then[1])
        evalset = take(eval_stream, data_args.max_eval_samples or 1000, eval_columns)
    if not data_args.skip_corrupt_images:
        check_readable(take(stream, 16, columns), data_args.train_split)
        if evalset is not None:
            check_readable(evalset, data_args.eval_split)
    return streaming_rows(stream, columns, data_args, training_args), first, evalset

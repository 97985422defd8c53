"""Scale rehearsal: does a run's memory stay flat as the dataset grows? For `ssl`, `clip` and `sft` at N = 1k, 10k,
100k examples of a realistic shape (224 x 224 JPEGs in webdataset shards, generated here; ~450-token text rows in
JSONL), each run a fresh process with a tiny model, `streaming: true` and a few steps, measures wall time and peak
RSS of each phase: load (parse, data, model, trainer), first step, steady steps, save, end-of-run evaluation
(evaluate + the mode's finish: probes / kNN, zero-shot / retrieval, card, report). Ratios: peak RSS at the largest N
over the next (goal: within 1.2x in every phase) and evaluation time per evaluated row.

What grows with N by design is said in the table: `ssl` evaluates on up to 10,000 held-out images (features N x d;
about 11 ms per image per pass on a CPU, three passes; the probes fit on the first `probe_max_train_samples` =
10,000 training images), `clip` measures retrieval on at most 5,000
held-out pairs (its N x N similarity would be 40 GB at 100k; COCO's test set is 5,000), `sft` evaluates on 1,000 rows.

Run:   .venv/bin/python bench/scale.py --sizes 1000 10000          (minutes)
       .venv/bin/python bench/scale.py --write                     (1k, 10k, 100k; long; writes BENCHMARKS.md)
Runs are kept in DATA/scale.json: an invocation for some modes or sizes adds its rows to the earlier ones'.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SECTION = "## Scale: memory and time per phase against the number of examples"
PHASES = ("load", "first step", "steady steps", "save", "evaluation")
STEPS = 5
SHARD = 1000
CLIP_EVAL = 5000
SSL_EVAL = 10_000
WORDS = "the a of and to in is was for on with as by at from that this it be are".split()


# -- data ------------------------------------------------------------------------------------------------------


def _jpeg(i: int) -> bytes:
    """A smooth 224 x 224 RGB image (random 8 x 8 colours, upsampled): about the size of a photo's JPEG."""
    from PIL import Image

    rng = np.random.default_rng(i)
    small = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    out = io.BytesIO()
    small.resize((224, 224), Image.BILINEAR).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _shards(folder: Path, split: str, n: int, first: int) -> None:
    for start in range(0, n, SHARD):
        with tarfile.open(folder / f"{split}-{start // SHARD:05d}.tar", "w") as tar:
            for i in range(first + start, first + min(start + SHARD, n)):
                label = i % 10
                caption = f"picture {i % 97} of kind {label}: " + " ".join(
                    WORDS[(i + k) % len(WORDS)] for k in range(8)
                )
                for suffix, data in (
                    ("jpg", _jpeg(i)),
                    ("cls", str(label).encode()),
                    ("txt", caption.encode()),
                ):
                    info = tarfile.TarInfo(f"{i:08d}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def image_data(root: Path, n: int) -> Path:
    """``root/images-N``: N training and N validation images as webdataset shards (made once)."""
    folder = root / f"images-{n}"
    if not (folder / "done").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        _shards(folder, "train", n, 0)
        _shards(folder, "validation", n, 10**8)
        (folder / "done").touch()
    return folder


def text_data(root: Path, n: int) -> Path:
    """``root/text-N``: N training rows and 1,000 test rows of `question` / `answer` text, ~450 tokens each."""
    folder = root / f"text-{n}"
    if not (folder / "done").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for split, count in (("train", n), ("test", 1000)):
            with open(folder / f"{split}.jsonl", "w") as f:
                for i in range(count):
                    words = rng.choice(WORDS, size=300)
                    f.write(
                        json.dumps(
                            {
                                "question": " ".join(words[:200]),
                                "answer": " ".join(words[200:]) + f" #### {i}",
                            }
                        )
                        + "\n"
                    )
        (folder / "done").touch()
    return folder


def argv_for(mode: str, data: Path, n: int, out: Path) -> list[str]:
    common = [
        "--max_steps",
        str(STEPS),
        "--streaming",
        "true",
        "--output_dir",
        str(out),
        "--overwrite_output_dir",
        "true",
    ]
    common += [
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
    ]
    if mode == "ssl":
        return [
            "--config",
            "demo/ssl.yaml",
            "--dataset_name",
            str(data),
            "--image_column",
            "jpg",
            "--label_column",
            "cls",
            "--eval_split",
            "validation",
            "--max_eval_samples",
            str(min(n, SSL_EVAL)),
            "--image_size",
            "224",
            "--num_channels",
            "3",
            "--per_device_train_batch_size",
            "32",
            *common,
        ]
    if mode == "clip":
        return [
            "--config",
            "demo/clip.yaml",
            "--model_name_or_path",
            "tiny-dual",
            "--dataset_name",
            str(data),
            "--image_column",
            "jpg",
            "--caption_column",
            "txt",
            "--eval_split",
            "validation",
            "--max_eval_samples",
            str(min(n, CLIP_EVAL)),
            "--zeroshot_dataset",
            "null",
            "--image_size",
            "224",
            "--per_device_train_batch_size",
            "32",
            *common,
        ]
    return [
        "--config",
        "demo/mce.yaml",
        "--dataset_name",
        str(data),
        "--max_length",
        "512",
        "--gsm8k_eval_samples",
        "0",
        "--eval_strategy",
        "no",
        "--per_device_train_batch_size",
        "8",
        *common,
    ]


# -- one measured run (a child process) ------------------------------------------------------------------------


class Phases:
    """Peak RSS (sampled every 10 ms from /proc/self/statm) and wall time of each named phase."""

    def __init__(self) -> None:
        self.current, self.start = "load", time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self.page = os.sysconf("SC_PAGE_SIZE")
        threading.Thread(target=self._sample, daemon=True).start()

    def _rss_mb(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page / 2**20

    def _sample(self) -> None:
        while True:
            self.peak[self.current] = max(self.peak.get(self.current, 0.0), self._rss_mb())
            time.sleep(0.01)

    def enter(self, name: str) -> None:
        now = time.perf_counter()
        self.peak[self.current] = max(self.peak.get(self.current, 0.0), self._rss_mb())
        self.seconds[self.current] = self.seconds.get(self.current, 0.0) + now - self.start
        self.current, self.start = name, now


def child(mode: str, argv: list[str]) -> dict:
    from transformers import TrainerCallback

    import matrix_llm.trainer

    phases = Phases()

    class Marks(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            phases.enter("first step")

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                phases.enter("steady steps")

    class Measured(matrix_llm.trainer.MatrixTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(Marks())

        def save_model(self, *args, **kwargs):
            phases.enter("save")
            result = super().save_model(*args, **kwargs)
            phases.enter("evaluation")
            return result

    matrix_llm.trainer.MatrixTrainer = Measured
    from matrix_llm import cli

    code = cli.main([{"ssl": "ssl", "clip": "clip", "sft": "sft"}[mode], *argv])
    phases.enter("done")
    if code != 0:
        raise SystemExit(f"{mode}: exit status {code}")
    return {"seconds": phases.seconds, "peak_mb": phases.peak}


# -- the grid ----------------------------------------------------------------------------------------------------


def run_grid(modes: list[str], sizes: list[int], root: Path) -> dict:
    results: dict = {}
    for mode in modes:
        for n in sizes:
            data = text_data(root, n) if mode == "sft" else image_data(root, n)
            out = root / "runs" / f"{mode}-{n}"
            env = dict(
                os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false"
            )
            cmd = [sys.executable, __file__, "--child", mode, json.dumps(argv_for(mode, data, n, out))]
            started = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
            if proc.returncode != 0:
                raise SystemExit(f"{mode} N={n} failed:\n{proc.stderr[-3000:]}")
            record = json.loads(proc.stdout.strip().splitlines()[-1])
            record["wall"] = time.perf_counter() - started
            results.setdefault(mode, {})[n] = record
            print(
                f"{mode:5s} N={n:>7d}  "
                + "  ".join(  # noqa: T201
                    f"{p}: {record['seconds'].get(p, 0):.1f}s {record['peak_mb'].get(p, 0):.0f}MB"
                    for p in PHASES
                ),
                flush=True,
            )
    return results


def _evaluated(mode: str, n: int) -> int:
    return {"ssl": min(n, SSL_EVAL), "clip": min(n, CLIP_EVAL), "sft": 1000}[mode]


def markdown(results: dict, command: str) -> str:
    import torch

    lines = [
        SECTION,
        "",
        (
            f"Written by `bench/scale.py` on {_dt.date.today()} (torch {torch.__version__}, {platform.machine()}, "
            f"{os.cpu_count()} CPUs). Each run: a fresh process, `streaming: true`, a tiny model, {STEPS} steps; RSS "
            "sampled every 10 ms. Evaluated rows: ssl min(N, {SSL_EVAL}) held-out images (trained and random-init "
            f"features, raw pixels); clip min(N, {CLIP_EVAL}) held-out pairs; sft 1,000 rows."
        ),
        "",
        "| mode | N | phase | seconds | peak RSS (MB) |",
        "|---|---:|---|---:|---:|",
    ]
    for mode, runs in results.items():
        for n in sorted(runs):
            for p in PHASES:
                lines.append(
                    f"| {mode} | {n} | {p} | {runs[n]['seconds'].get(p, 0):.1f} | {runs[n]['peak_mb'].get(p, 0):.0f} |"
                )
    lines += [
        "",
        "Ratios, each mode's largest N over its next (goal: peak RSS within 1.2x; evaluation time per row flat):",
        "",
        "| mode | N | " + " | ".join(f"RSS {p}" for p in PHASES) + " | eval s / row |",
        "|---|---|" + "---:|" * (len(PHASES) + 1),
    ]
    for mode, runs in results.items():
        sizes = sorted(runs)
        if len(sizes) < 2:
            continue
        top, prev = sizes[-1], sizes[-2]
        rss = [runs[top]["peak_mb"].get(p, 0) / max(runs[prev]["peak_mb"].get(p, 1), 1) for p in PHASES]
        per_row = [runs[m]["seconds"].get("evaluation", 0) / _evaluated(mode, m) for m in (prev, top)]
        lines.append(
            f"| {mode} | {top} / {prev} | "
            + " | ".join(f"{r:.2f}x" for r in rss)
            + f" | {per_row[1] / per_row[0]:.2f}x |"
        )
    lines += ["", "Command:", "", "```", command, "```", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", nargs="+", default=["ssl", "clip", "sft"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000, 100000])
    parser.add_argument("--data", default=str(REPO / "outputs" / "scale"), help="where the data and runs go")
    parser.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "ARGV"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        record = child(args.child[0], json.loads(args.child[1]))
        print(json.dumps(record))  # noqa: T201
        return 0
    root = Path(args.data)
    root.mkdir(parents=True, exist_ok=True)
    stored = root / "scale.json"  # runs of earlier invocations (other modes or sizes) join the table
    results = (
        {m: {int(n): r for n, r in runs.items()} for m, runs in json.loads(stored.read_text()).items()}
        if stored.is_file()
        else {}
    )
    for mode, runs in run_grid(args.modes, sorted(args.sizes), root).items():
        results.setdefault(mode, {}).update(runs)
    command = "\n".join(
        f".venv/bin/python bench/scale.py --modes {mode} --sizes {' '.join(map(str, sorted(runs)))}"
        for mode, runs in results.items()
    )
    text = markdown(results, command)
    print(text)  # noqa: T201
    stored.write_text(json.dumps(results, indent=1))
    if args.write:
        from benchmarks_md import write_section

        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

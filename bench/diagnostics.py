"""Overhead of MatrixMetricsCallback: training time with and without it at the default cadence, and one probe
against one training step, same process, interleaved.

Model and data are those of `matrix-llm classify --config classify/digits.yaml` (random-init tiny ViT, digits
8x8 upsampled to 16x16, batch 64), and a wider ViT (hidden 256, 4 layers) for a heavier model. Each repeat runs
`--steps` optimizer steps with logging every `--logging-steps` (the callback's default cadence is
`matrix_metrics_steps`, i.e. `logging_steps`), once without the callback and once with it (probe of
`--probe` rows); the median ratio is reported.

Run:   .venv/bin/python bench/diagnostics.py            (a few minutes on 2 cores)
       .venv/bin/python bench/diagnostics.py --write    (also write the section of BENCHMARKS.md)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks_md import write_section  # noqa: E402

from matrix_llm.callbacks import MatrixMetricsCallback  # noqa: E402
from matrix_llm.data.images import ImageCollator, digits_dataset  # noqa: E402
from matrix_llm.models.tiny import build_image_classifier  # noqa: E402
from matrix_llm.modes import ClassificationConfig  # noqa: E402
from matrix_llm.trainer import MatrixTrainer  # noqa: E402

SECTION = "## MatrixMetricsCallback overhead"


def _trainer(out: str, hidden: int, layers: int, steps: int, logging_steps: int, train):
    model = build_image_classifier(
        "tiny-vit", num_labels=10, image_size=16, hidden_size=hidden, num_layers=layers, num_heads=4
    )
    args = ClassificationConfig(
        output_dir=out,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=logging_steps,
        max_steps=steps,
        per_device_train_batch_size=64,
        learning_rate=3e-3,
        seed=0,
        remove_unused_columns=False,
    )
    return MatrixTrainer(
        model=model, args=args, train_dataset=train, data_collator=ImageCollator(image_size=16)
    )


def measure(hidden: int, layers: int, steps: int, logging_steps: int, probe: int, repeats: int) -> dict:
    train = digits_dataset("train")
    rows = [train[i] for i in range(probe)]
    base, watched, probe_s, step_s = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats + 1):  # the first round warms up and is dropped
            times = {}
            for with_cb in (False, True):
                trainer = _trainer(f"{tmp}/{r}{with_cb}", hidden, layers, steps, logging_steps, train)
                if with_cb:
                    cb = MatrixMetricsCallback(rows, trainer=trainer)
                    trainer.add_callback(cb)
                t0 = time.perf_counter()
                trainer.train()
                times[with_cb] = time.perf_counter() - t0
                if with_cb:
                    t1 = time.perf_counter()
                    cb.compute(trainer.model)
                    probe_s.append(time.perf_counter() - t1)
            if r:
                base.append(times[False])
                watched.append(times[True])
                step_s.append(times[False] / steps)
    row = {
        "hidden": hidden,
        "layers": layers,
        "steps": steps,
        "logging_steps": logging_steps,
        "probe": probe,
        "base_s": statistics.median(base),
        "cb_s": statistics.median(watched),
        "ratio": statistics.median(w / b for w, b in zip(watched, base, strict=True)),
        "probe_ms": 1e3 * statistics.median(probe_s[1:] or probe_s),
        "step_ms": 1e3 * statistics.median(step_s),
    }
    print(_fmt(row), flush=True)
    return row


HEADER = (
    "| model | steps | logging_steps | probe rows | train s (no callback) | train s (callback) | overhead | "
    "one probe ms | one step ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _fmt(r: dict) -> str:
    return (
        f"| ViT hidden {r['hidden']}, {r['layers']} layers | {r['steps']} | {r['logging_steps']} | {r['probe']} | "
        f"{r['base_s']:.2f} | {r['cb_s']:.2f} | {100 * (r['ratio'] - 1):+.1f}% | {r['probe_ms']:.0f} | "
        f"{r['step_ms']:.0f} |"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--logging-steps", type=int, default=20)
    parser.add_argument("--probe", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    print(HEADER, flush=True)
    rows = [
        measure(h, n, args.steps, args.logging_steps, args.probe, args.repeats)
        for h, n in ((64, 2), (256, 4))
    ]
    text = "\n".join(
        [
            SECTION,
            "",
            (
                f"Written by `bench/diagnostics.py` on {started} UTC ({platform.machine()}, torch {torch.__version__}, 1 "
                "thread). Training time of the classify digits set-up with and without MatrixMetricsCallback at its default "
                "cadence (every logging step: per-layer entropy / effective rank and the classification pair metrics of the "
                "probe rows), interleaved in one process, median of the repeats after a warm-up; 'one probe' is a single "
                "`compute` call, 'one step' the mean optimizer step without the callback. Target: <= 2% overhead."
            ),
            "",
            HEADER,
            *[_fmt(r) for r in rows],
            "",
            "Command:",
            "",
            "```",
            "python bench/diagnostics.py " + " ".join(argv),
            "```",
            "",
        ]
    )
    if args.write:
        write_section(SECTION, text, REPO / "BENCHMARKS.md")
        print(f"wrote {SECTION!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

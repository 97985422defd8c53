"""The ``matrix-llm`` command: one entry point, one sub-command per job.

    matrix-llm sft  --config demo/mce.yaml [--field value ...]
    matrix-llm classify --config classify/digits.yaml [--field value ...]
    matrix-llm ssl --config demo/ssl.yaml [--field value ...]
    matrix-llm clip --config demo/clip.yaml [--field value ...]
    matrix-llm eval gsm8k --model PATH_OR_HUB_ID [...]
    matrix-llm analyze --model PATH_OR_HUB_ID --data SOURCE [--compare OTHER]
    matrix-llm analyze lmc A B --data SOURCE
    matrix-llm plot RUN_DIR
    matrix-llm demo [--output_dir outputs/demo]
    matrix-llm env

Each sub-command lives in its own module and exposes ``main(argv) -> int``; this file only dispatches, so
``matrix-llm --help`` stays fast (no transformers import). ``matrix-llm sft|ssl|clip|classify --help`` prints the
command's help from ``matrix_llm/help/<command>.txt`` without importing anything heavy (generating it imports
transformers, peft and torch: about 5 s); ``make help-text`` rewrites those files from the configuration classes,
and a test fails when they are not what the classes give.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

COMMANDS = {
    "sft": ("matrix_llm.modes.lm.command", "fine-tune a causal LM with LM loss + matrix loss"),
    "ssl": (
        "matrix_llm.modes.ssl.command",
        "train a vision backbone self-supervised (Matrix-SSL, MEC, SimCLR, Barlow Twins, M-MAE) + probes",
    ),
    "clip": (
        "matrix_llm.modes.clip.command",
        "align image and text encoders (InfoNCE + matrix terms), zero-shot and retrieval",
    ),
    "classify": (
        "matrix_llm.modes.classify.command",
        "train an image or text classifier with CE + MIR / HDR / matrix-entropy terms",
    ),
    "eval": (
        "matrix_llm.tools.eval",
        "evaluate: GSM8K (lm-eval scoring), probe / knn (vision), zeroshot / retrieval (image-text)",
    ),
    "analyze": (
        "matrix_llm.tools.analyze",
        "per-layer matrix entropy / eRank / Diff-eRank / nuclear norm; `analyze lmc A B`",
    ),
    "plot": ("matrix_llm.plotting", "draw the metrics of a run directory as PNG"),
    "demo": ("matrix_llm.tools.demo", "the embedded default: tiny model, synthetic GSM8K, CE + MCE, offline"),
    "env": (
        "matrix_llm.tools.env",
        "print versions of torch/CUDA/transformers/... and the accelerate config",
    ),
}


HELP_DIR = Path(__file__).resolve().parent / "help"
TRAINING_COMMANDS = ("sft", "ssl", "clip", "classify")


def help_text(name: str) -> str:
    """The ``--help`` text of the training command ``name``, generated from its configuration classes."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        importlib.import_module(COMMANDS[name][0]).main(["--help"])
    return out.getvalue()


def write_help_files() -> None:
    """``make help-text``: (re)write ``matrix_llm/help/<command>.txt`` for every training command."""
    HELP_DIR.mkdir(exist_ok=True)
    for name in TRAINING_COMMANDS:
        (HELP_DIR / f"{name}.txt").write_text(help_text(name), encoding="utf-8")


def _usage() -> str:
    lines = ["usage: matrix-llm <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `matrix-llm <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        sys.stdout.write(_usage() + "\n")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"matrix-llm: unknown command {name!r}; expected one of {sorted(COMMANDS)}\n\n")
        sys.stderr.write(_usage() + "\n")
        return 2
    cached = HELP_DIR / f"{name}.txt"
    if name in TRAINING_COMMANDS and rest in (["-h"], ["--help"]) and cached.is_file():
        sys.stdout.write(cached.read_text(encoding="utf-8"))
        return 0
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

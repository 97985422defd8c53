"""What the commands print about their own options: the training commands' short ``--help``
(:func:`format_help`) and the parser of the tool commands (:class:`ToolParser`, :func:`model_source`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import default_text, looks_like_path, own_fields, suggest

__all__ = ["EVERYDAY_TRAINING_FIELDS", "ToolParser", "format_help", "model_source"]


# the TrainingArguments a run sets most often, listed in the short help (``--help_all``: every one)
EVERYDAY_TRAINING_FIELDS = (
    "output_dir",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "logging_steps",
    "eval_strategy",
    "eval_steps",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "resume_from_checkpoint",
    "seed",
    "bf16",
    "report_to",
    "push_to_hub",
)


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def format_help(prog: str, classes: Sequence[type], *, example: str, summary: str = "") -> str:
    """Short help: usage, an example, the fields matrix_llm adds, then the everyday fields of
    ``transformers.TrainingArguments`` (:data:`EVERYDAY_TRAINING_FIELDS`; ``--help_all`` lists every field)."""
    lines = [
        f"usage: {prog} --config RECIPE.yaml [--field value ...]",
        "",
        *([summary, ""] if summary else []),
        "A YAML recipe sets any field below or of transformers.TrainingArguments; `--field value` on the command",
        "line overrides it. Booleans: `--flag`, `--flag false`, `--no_flag`. Lists: `--field a b c`.",
        "",
        "example:",
        f"  {example}",
    ]
    for cls in classes:
        own = own_fields(cls)
        if not own:
            continue
        lines += ["", f"{cls.__name__}:"]
        for f in own:
            choices = f.metadata.get("choices")
            extra = f" (choices: {', '.join(map(str, choices))})" if choices else ""
            lines.append(f"  --{f.name}  [default: {default_text(f)}]{extra}")
            text = f.metadata.get("help", "")
            if text:
                lines.append(f"      {text}")
    fields = {f.name: f for cls in classes for f in dataclasses.fields(cls) if f.init}
    own = {f.name for cls in classes for f in own_fields(cls)}
    everyday = [fields[name] for name in EVERYDAY_TRAINING_FIELDS if name in fields and name not in own]
    if everyday:
        lines += ["", "transformers.TrainingArguments, the everyday ones (the recipe may set them):"]
        for f in everyday:
            lines.append(f"  --{f.name}  [default: {default_text(f)}]")
            text = _first_sentence(f.metadata.get("help", ""))
            if text:
                lines.append(f"      {text}")
    lines += [
        "",
        f"Every other transformers.TrainingArguments field is accepted too: `{prog} --help_all` lists them all.",
    ]
    return "\n".join(lines)


def model_source(value: str) -> str:
    """``type=`` of a tool's ``--model`` option: a Hub id or an existing local directory.

    Raises:
        argparse.ArgumentTypeError: a value that can only be a local path (:func:`looks_like_path`) and is not a
            directory (argparse reports it as a usage error, exit status 2).
    """
    if looks_like_path(value) and not Path(value).expanduser().is_dir():
        raise argparse.ArgumentTypeError(
            f"{value}: no such directory (a saved model is the folder save_pretrained wrote; a Hub id is "
            "`name` or `org/name`)"
        )
    return value


class ToolParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` of the tool commands (``eval``, ``analyze``, ``plot``): an option it does not
    know is a usage error naming the closest one it does (``--dta: unknown option; did you mean `--data`?``),
    reported before argparse's own complaints (such as the then missing ``--data``)."""

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        known = [s for s in self._option_string_actions if s.startswith("--")]
        for token in args:
            if token == "--":
                break
            name = token.split("=", 1)[0]
            if name.startswith("--") and not any(option.startswith(name) for option in known):
                self.error(f"{name}: unknown option{suggest(name, known)}")
        return super().parse_known_args(args, namespace)

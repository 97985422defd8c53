"""``matrix-llm env``: the versions and settings people ask for in bug reports (TRL's ``trl env`` convention)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

from matrix_llm.parsing.usage import ToolParser

PACKAGES = (
    "matrix-llm",
    "torch",
    "transformers",
    "accelerate",
    "deepspeed",
    "peft",
    "datasets",
    "evaluate",
    "safetensors",
    "tokenizers",
    "huggingface-hub",
    "vllm",
    "lm-eval",
)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _accelerate_config() -> str:
    from accelerate.commands.config import default_config_file, load_config_from_file

    path = os.environ.get("ACCELERATE_CONFIG_FILE", default_config_file)
    if not os.path.isfile(path):
        return f"not found ({path})"
    config = load_config_from_file(path).to_dict()
    return "\n".join(f"    {key}: {value}" for key, value in sorted(config.items()))


def collect() -> dict[str, str]:
    """Versions of the stack and what the accelerator looks like, as an ordered dict of strings."""
    import torch

    info = {"platform": platform.platform(), "python": sys.version.split()[0]}
    info.update({dist: _version(dist) for dist in PACKAGES})
    info["torch CUDA"] = torch.version.cuda or "none (CPU build)"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["accelerators"] = ", ".join(names)
        info["bf16 supported"] = str(torch.cuda.is_bf16_supported())
    else:
        info["accelerators"] = "none (CPU only)"
    info["accelerate config"] = _accelerate_config()
    return info


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(prog="matrix-llm env", description=__doc__)
    parser.parse_args(argv)
    lines = [
        f"- {key}: {value}" if "\n" not in value else f"- {key}:\n{value}" for key, value in collect().items()
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0

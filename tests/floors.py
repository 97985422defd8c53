"""The dependency floors of pyproject.toml as exact pins, for the second test environment of `make test`
(Makefile, `test-floors`): every ``name>=X`` of the core dependencies and of the `deepspeed` extra becomes
``name==X``; torch is left to the Makefile's pin (the CPU build; README, "Versions").

    python tests/floors.py > floors.txt && pip install -c floors.txt ...
"""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def pins() -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    out = []
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["deepspeed"]]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9A-Za-z.]*)", requirement.strip())
        if match is None:
            raise ValueError(f"pyproject.toml: expected `name>=version`, got {requirement!r}")
        if match.group(1) != "torch":
            out.append(f"{match.group(1)}=={match.group(2)}")
    return out


if __name__ == "__main__":
    print("\n".join(pins()))

"""Layering: the pure-maths packages never import the Hugging Face stack.

Run: .venv/bin/python -m pytest tests/test_layering.py -q
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FORBIDDEN = ("transformers", "accelerate", "datasets")

_PROBE = """
import json, sys
import {module}
print(json.dumps(sorted(m for m in {forbidden!r} if m in sys.modules)))
"""


def _imported_forbidden(module: str) -> list[str]:
    code = _PROBE.format(module=module, forbidden=FORBIDDEN)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"importing {module} failed:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_info_does_not_import_hf_stack():
    assert _imported_forbidden("matrix_llm.info") == []


def test_losses_does_not_import_hf_stack():
    if importlib.util.find_spec("matrix_llm.losses") is None:
        pytest.skip("matrix_llm.losses does not exist yet")
    assert _imported_forbidden("matrix_llm.losses") == []

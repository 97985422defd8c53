"""The built wheel carries what an installed user needs: the demo recipes (package data), found from any folder.

.venv/bin/python -m pytest tests/test_packaging.py -q
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_PROBE = """
import matrix_llm, matrix_llm.tools.demo, matrix_llm.parsing
from pathlib import Path
assert Path(matrix_llm.__file__).is_relative_to(Path({site!r})), matrix_llm.__file__  # the installed copy
assert matrix_llm.tools.demo.DEFAULT_CONFIG.is_file(), matrix_llm.tools.demo.DEFAULT_CONFIG
from matrix_llm.metrics import MODULES, module_path
assert all(Path(module_path(m), m + ".py").is_file() for m in MODULES)  # the evaluate modules are shipped
from matrix_llm.modes.lm.command import parse_args
m, d, t = parse_args(["--config", "demo/ce.yaml", "--output_dir", "out", "--use_cpu", "true"])
assert m.model_name_or_path == "tiny" and d.dataset_name == "synthetic" and t.matrix_loss_type == "none"
print("ok")
"""


@pytest.mark.slow
def test_wheel_ships_the_demo_recipes_and_they_resolve_outside_the_checkout(tmp_path):
    """Mutation caught: dropping [tool.setuptools.package-data] (the wheel then has no recipes and an installed
    `matrix-llm demo` cannot find its default)."""
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ and egg-info behind
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "matrix_llm", source / "matrix_llm", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "deprecat" not in (build.stdout + build.stderr).lower()  # e.g. setuptools: the license table
    (wheel,) = wheels.glob("matrix_llm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {
        "matrix_llm/recipes/demo/mce.yaml",
        "matrix_llm/recipes/demo/ce.yaml",
        "matrix_llm/recipes/classify/digits.yaml",
        "matrix_llm/help/ssl.txt",
    } <= set(names)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(site=str(site))],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


def test_the_floors_subset_names_existing_tests_and_pins_every_floor():
    """tests/floors.txt (what `make test-floors` runs at the exact floors) names test files and functions that
    exist, and tests/floors.py pins each core dependency and DeepSpeed at its floor (torch: the Makefile's pin)."""
    sys.path.insert(0, str(REPO / "tests"))
    from floors import pins

    for line in (REPO / "tests" / "floors.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            path, _, name = line.partition("::")
            assert (REPO / path).is_file(), line
            assert not name or f"def {name}(" in (REPO / path).read_text(), line
    pinned = {p.split("==")[0] for p in pins()}
    for package in ("transformers", "accelerate", "datasets", "peft", "deepspeed", "huggingface_hub"):
        assert package in pinned, package
    assert "torch" not in pinned


@pytest.mark.network
def test_the_vllm_extra_resolves_without_moving_torch_or_leaving_the_floors(tmp_path):
    """`pip install ".[vllm]"` (a dry run against the index) keeps the tested torch and a transformers within
    matrix_llm's floors: vLLM pins its own torch, and an unpinned extra once pulled whatever the newest vLLM wanted."""
    import json

    import tomllib
    from packaging.version import Version

    report = tmp_path / "report.json"
    torch_pin = "torch==2.13.0"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report"]
        + [str(report), torch_pin, f"{REPO}[vllm]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    versions = {
        i["metadata"]["name"].lower(): i["metadata"]["version"]
        for i in json.loads(report.read_text())["install"]
    }
    assert Version(versions["torch"]).base_version == "2.13.0"
    floors = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    transformers_floor = next(d.split(">=")[1] for d in floors if d.startswith("transformers>="))
    assert Version(versions["transformers"]) >= Version(transformers_floor)
    assert versions["vllm"] == "0.32.0"

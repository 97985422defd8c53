"""Layering (DESIGN.md, "Layers"): dependencies point down only.

- at run time: importing ``matrix_llm.info`` / ``matrix_llm.losses`` never imports the Hugging Face stack;
- statically (every ``import`` statement, also inside functions): the forbidden directions of :data:`FORBIDDEN_EDGES`.

Run: .venv/bin/python -m pytest tests/test_layering.py -q
"""

from __future__ import annotations

import ast
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


# package (path under matrix_llm/) -> module prefixes its files may never import
HF_STACK = ("transformers", "accelerate", "datasets", "peft", "deepspeed")
MODES = ("matrix_llm.modes.lm", "matrix_llm.modes.ssl", "matrix_llm.modes.clip", "matrix_llm.modes.classify")
TOP = ("matrix_llm.trainer", "matrix_llm.runner", "matrix_llm.cli", "matrix_llm.tools")
FORBIDDEN_EDGES = {
    "info": (*HF_STACK, "matrix_llm.losses", "matrix_llm.modes", "matrix_llm.trainer", "matrix_llm.data"),
    "losses": (*HF_STACK, "matrix_llm.modes", "matrix_llm.trainer", "matrix_llm.data", "matrix_llm.features"),
    "data": ("matrix_llm.losses", "matrix_llm.models", "matrix_llm.modes", *TOP),
    "data/labels.py": ("matrix_llm",),  # a leaf: every layer may use it
    # features sit below data: of it they may use the shared labels only
    "features": (
        "matrix_llm.losses",
        "matrix_llm.models",
        "matrix_llm.modes",
        *TOP,
        *(
            f"matrix_llm.data.{m}"
            for m in ("gsm8k", "images", "augment", "collator", "text", "synthetic", "image_text")
        ),
    ),
    "models": ("matrix_llm.modes", *TOP),
    "modes/base.py": ("matrix_llm.modes.", *TOP),
    # a mode never imports another mode (only its own folder, the layers below and the run tail)
    **{
        f"modes/{m.rsplit('.', 1)[1]}": tuple(o for o in MODES if o != m)
        + ("matrix_llm.tools", "matrix_llm.cli")
        for m in MODES
    },
    # analysis of saved models: measures, never trains
    "tools/analysis.py": ("matrix_llm.trainer", "matrix_llm.modes", "matrix_llm.losses", "matrix_llm.runner"),
}


def _imports(source: str, package: str) -> set[str]:
    """Absolute names of every module ``source`` imports (relative imports resolved against ``package``)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN_EDGES))
def test_no_forbidden_import_direction(package):
    offenders = []
    root = REPO / "matrix_llm" / package
    assert root.exists(), root
    for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
        module_package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
        for name in _imports(path.read_text(encoding="utf-8"), module_package):
            if any(
                name == bad.rstrip(".")
                and not bad.endswith(".")
                or name.startswith(bad if bad.endswith(".") else bad + ".")
                for bad in FORBIDDEN_EDGES[package]
            ):
                offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert offenders == []


def test_the_static_check_sees_relative_and_function_level_imports():
    """The checker itself can fail: a relative import inside a function is resolved and seen."""
    source = "def f():\n    from ..trainer import MatrixTrainer\n    import transformers.trainer\n"
    names = _imports(source, "matrix_llm.modes")
    assert {"matrix_llm.trainer.MatrixTrainer", "transformers.trainer"} <= names


def test_no_module_over_500_lines():
    """One concern per file: a module that grows past 500 lines is split (as data/gsm8k/ was)."""
    long = {
        str(p.relative_to(REPO)): n
        for p in (REPO / "matrix_llm").rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert long == {}


def test_a_mode_loads_no_other_mode():
    """`matrix-llm ssl` parses its arguments and builds its objective with nothing of the LM (GSM8K data among
    it), CLIP or classification modes imported: `modes.OBJECTIVES` names the modes by module path, and
    `matrix_llm.data` loads its submodules on first use."""
    code = (
        "import json, sys\n"
        "from matrix_llm.modes.ssl import command\n"
        "from matrix_llm.modes import build_objective\n"
        "_, _, args = command.parse_args(['--config', 'demo/ssl.yaml', '--output_dir', 'unused'])\n"
        "build_objective(args)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('matrix_llm.modes.lm', "
        "'matrix_llm.modes.clip', 'matrix_llm.modes.classify', 'matrix_llm.data.gsm8k')))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_the_top_level_holds_at_most_ten_modules():
    top = sorted(p.name for p in (REPO / "matrix_llm").glob("*.py"))
    assert len(top) <= 10, top


def test_the_package_face_is_lazy_and_names_the_public_classes():
    """`from matrix_llm import MatrixTrainer, LMConfig, ...` works, and `import matrix_llm` loads no HF stack."""
    assert _imported_forbidden("matrix_llm") == []
    import matrix_llm

    for name in matrix_llm.__all__:
        value = getattr(matrix_llm, name)
        if name != "__version__":
            assert value.__name__ == name and value.__module__.startswith("matrix_llm."), name
    assert {"MatrixTrainer", "LMConfig", "SSLConfig", "CLIPConfig", "ClassificationConfig"} <= set(
        dir(matrix_llm)
    )
    with pytest.raises(AttributeError):
        matrix_llm.NoSuchThing  # noqa: B018

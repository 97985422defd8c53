"""The README's Python blocks run as they are (offline, in seconds), in a fresh process from a scratch folder.

.venv/bin/python -m pytest tests/test_readme.py -q
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path):
    """Mutation caught: a snippet naming something that does not exist (the old `MatrixTrainingArguments(...,
    matrix_loss_type=...)` with undefined `model`, `train`, `collator`)."""
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


USE_BLOCK = re.search(r"## Use\n.*?```bash\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
# appended to each command of the Use block: the same commands, shortened (later flags override earlier ones)
SHORT = {
    "sft": [
        "--max_steps",
        "4",
        "--eval_steps",
        "4",
        "--gsm8k_eval_samples",
        "2",
        "--synthetic_train_size",
        "200",
    ],
    "classify": ["--max_steps", "3"],
    "ssl": ["--max_steps", "3"],
    "clip": ["--max_steps", "3", "--max_train_samples", "256", "--max_eval_samples", "64"],
    "gsm8k": ["--limit", "2", "--max_new_tokens", "16"],
    "knn": ["--max_train_samples", "500"],
    "analyze": ["--num_samples", "16"],
    "lmc": ["--num_samples", "16", "--grid", "3"],
}


def _use_commands() -> list[list[str]]:
    """The Use block's commands, one argv each (continuation lines joined, comments dropped)."""
    import shlex

    text = USE_BLOCK.group(1).replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in text.splitlines() if line.strip()]


@pytest.mark.slow
def test_the_use_block_runs_top_to_bottom_as_written(tmp_path, monkeypatch, capsys):
    """After `make demo` (here a short one), every `matrix-llm` line of the README's Use block runs in order from
    a fresh folder, shortened only by the flags of SHORT; the multi-GPU launch lines name files that exist. Before,
    the three classify lines shared one output folder (the second was refused) and `analyze --compare` / `analyze
    lmc` named folders no command created."""
    from matrix_llm.cli import main

    commands = _use_commands()
    launches = [argv for argv in commands if argv[0] != "matrix-llm"]
    assert launches and all(argv[0] in ("accelerate", "torchrun") for argv in launches)
    for argv in launches:  # 7B on GPUs: not run here, but what they name must exist
        for value in argv:
            if value.startswith("recipes/"):
                assert (REPO / value).is_file(), value
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(
        REPO.parent / "shared"
    )  # ../shared from the work folder, as from the repo
    monkeypatch.chdir(work)
    demo = [
        "demo",
        "--output_dir",
        "outputs/demo",
        "--eval_size",
        "4",
        "--max_new_tokens",
        "8",
        "--disable_tqdm",
    ]
    assert main([*demo, "true", *SHORT["sft"]]) == 0
    for argv in (argv[1:] for argv in commands if argv[0] == "matrix-llm"):
        task = argv[1] if argv[0] in ("eval", "analyze") and argv[1] in SHORT else argv[0]
        extra = [
            *SHORT.get(task, []),
            *(["--disable_tqdm", "true"] if task in ("sft", "classify", "ssl", "clip") else []),
        ]
        try:
            status = main([*argv, *extra])
        except SystemExit as stop:  # --help, and argparse's usage errors
            status = stop.code
        assert status in (0, None), (
            f"`matrix-llm {' '.join(argv)}` exited {status}:\n{capsys.readouterr().err[-2000:]}"
        )
    assert (work / "outputs" / "analyze" / "mce_vs_ce" / "layers.json").is_file()

"""Shared by the bench/ scripts: replace (or append) one ``## ...`` section of BENCHMARKS.md, leaving the rest alone."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEach section is written by the benchmark script it names.\n"


def write_section(section: str, text: str, path: Path = BENCHMARKS_MD) -> None:
    """Put ``text`` (which starts with the heading line ``section``) in place of that section of ``path``."""
    old = path.read_text() if path.exists() else HEADER
    lines = old.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == section), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + text.rstrip("\n") + "\n" + ("\n" + tail if tail else "")
    path.write_text(new.rstrip("\n") + "\n")

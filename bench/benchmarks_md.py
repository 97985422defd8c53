"""Shared by the bench/ scripts: replace (or append) one ``## ...`` section of BENCHMARKS.md, leaving the rest alone;
and the interleaved timing loop they measure with."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
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


def interleaved_medians(
    candidates: Mapping[str, Callable[[int], object]], *, rounds: int, calls: int
) -> dict[str, float]:
    """Median seconds per call of each candidate over ``rounds`` timed rounds after one warm-up round; a round runs
    every candidate ``calls`` times in turn (``fn(i)``, ``i`` the call's index in the round), so a slow spell of the
    machine falls on all of them."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for r in range(rounds + 1):
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            for i in range(calls):
                fn(i)
            if r:
                times[name].append((time.perf_counter() - t0) / calls)
    return {name: statistics.median(ts) for name, ts in times.items()}

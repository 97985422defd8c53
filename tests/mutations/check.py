"""Run the mutation catalogue: each deliberate one-line break (catalog.py) in a scratch copy of the tree, followed
by the tests that should catch it; a mutation the tests still pass is reported as missed.

    .venv/bin/python tests/mutations/check.py                 # every mutation (about 20-30 min on 2 cores)
    .venv/bin/python tests/mutations/check.py ema-never-updates gather-ssl
    .venv/bin/python tests/mutations/check.py --list          # the ids
    .venv/bin/python tests/mutations/check.py --markdown      # the table of tests/mutations/README.md
    .venv/bin/python tests/mutations/check.py --readme        # write that table into the README

The copy holds the files git tracks plus the untracked ones it does not ignore (work in progress counts), has
../shared beside it as the checkout has, and runs with this interpreter, so the installed packages are the same. The chosen mutations' tests are first run on
the unbroken copy, which must pass them. Exit status 1 when a mutation is missed or
its text is no longer in its file (the catalogue then needs updating), 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalog import MUTATIONS, Mutation, markdown  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- the table below is written by `check.py --readme` from catalog.py -->"


def _tree_copy(dest: Path) -> None:
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _pytest(scratch: Path, tests: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(scratch), PYTHONDONTWRITEBYTECODE="1")
    # -m "": the named tests run whatever their markers (pyproject's addopts leave the slow ones out)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-m", "", "-p", "no:cacheprovider", *tests],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def run(mutation: Mutation, scratch: Path) -> tuple[str, float, str]:
    """``(verdict, seconds, output tail)``; verdict: caught, MISSED, or STALE (the text is not in its file once)."""
    target = scratch / mutation.file
    original = target.read_text()
    if original.count(mutation.old) != 1:
        return "STALE", 0.0, f"{mutation.file}: the text to break occurs {original.count(mutation.old)} times"
    target.write_text(original.replace(mutation.old, mutation.new))
    start = time.perf_counter()
    try:
        proc = _pytest(scratch, list(mutation.tests))
    finally:
        target.write_text(original)
    seconds = time.perf_counter() - start
    # 1: a test failed (caught); 0: all passed (missed); killed by a signal (a SIGTERM test without its handler):
    # caught; anything else (no tests collected, usage or import error) says the catalogue's test ids are
    # wrong, not that the break was caught
    if proc.returncode < 0:
        return f"caught (killed by signal {-proc.returncode})", seconds, ""
    verdict = {0: "MISSED", 1: "caught"}.get(proc.returncode, f"ERROR (pytest exit {proc.returncode})")
    return verdict, seconds, (proc.stdout + proc.stderr)[-1500:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ids", nargs="*", help="mutation ids (default: all)")
    parser.add_argument("--list", action="store_true", help="print the ids and exit")
    parser.add_argument("--markdown", action="store_true", help="print the README table and exit")
    parser.add_argument(
        "--readme", action="store_true", help="write the table into tests/mutations/README.md"
    )
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(m.id for m in MUTATIONS))
        return 0
    if args.markdown:
        print(markdown())
        return 0
    if args.readme:
        readme = Path(__file__).with_name("README.md")
        text = readme.read_text()
        head = text[: text.index(MARKER) + len(MARKER)] if MARKER in text else text.rstrip() + "\n\n" + MARKER
        readme.write_text(f"{head}\n\n{markdown()}\n")
        return 0
    known = {m.id: m for m in MUTATIONS}
    unknown = [i for i in args.ids if i not in known]
    if unknown:
        parser.error(f"unknown mutation ids {unknown}; --list shows them")
    chosen = [known[i] for i in args.ids] if args.ids else MUTATIONS
    failed = 0
    with tempfile.TemporaryDirectory(prefix="matrix-llm-mutations-") as tmp:
        scratch = Path(tmp) / REPO.name
        _tree_copy(scratch)
        if (REPO.parent / "shared").is_dir():  # the tests read ../shared/data, beside the checkout
            (Path(tmp) / "shared").symlink_to(REPO.parent / "shared")
        # the unbroken copy must pass the tests, or a failure below would say nothing about the break
        baseline = _pytest(scratch, sorted({t for m in chosen for t in m.tests}))
        if baseline.returncode != 0:
            print("the tests fail on the unbroken tree:\n" + (baseline.stdout + baseline.stderr)[-3000:])
            return 1
        for mutation in chosen:
            verdict, seconds, tail = run(mutation, scratch)
            print(f"{verdict:<8} {seconds:6.1f}s  {mutation.id}", flush=True)
            if not verdict.startswith("caught"):
                failed += 1
                print("    " + tail.replace("\n", "\n    "), flush=True)
    print(f"{len(chosen) - failed} of {len(chosen)} mutations caught")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

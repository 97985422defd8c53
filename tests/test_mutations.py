"""The mutation catalogue (tests/mutations/catalog.py) stays runnable: every break's text is in its file once, every
named test exists, and tests/mutations/README.md shows this catalogue. Running the breaks themselves takes
`tests/mutations/check.py` (about 25 minutes), not this suite.

Run: .venv/bin/python -m pytest tests/test_mutations.py -q
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "mutations"))
from catalog import MUTATIONS, markdown  # noqa: E402


def test_ids_are_unique():
    ids = [m.id for m in MUTATIONS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.id)
def test_each_break_applies_once_and_names_existing_tests(mutation):
    text = (REPO / mutation.file).read_text()
    assert text.count(mutation.old) == 1, (
        f"{mutation.file}: the text to break occurs {text.count(mutation.old)} times"
    )
    assert mutation.new != mutation.old and mutation.tests
    for test in mutation.tests:
        path, _, name = test.partition("::")
        source = (REPO / path).read_text()
        name = name.partition("[")[0]  # a parametrized test may be named with one of its ids
        assert re.search(rf"^def {re.escape(name)}\(", source, flags=re.M), test


def test_the_readme_table_is_the_catalogue():
    readme = (REPO / "tests" / "mutations" / "README.md").read_text()
    assert markdown() in readme, "regenerate it: .venv/bin/python tests/mutations/check.py --readme"

"""RESULTS.md is the results schema's reader's guide: it must describe every record kind the
schema declares, and every example it shows must pass the schema."""

from __future__ import annotations

import json
import re

from harness.results import RECORD_KINDS, REPO_ROOT, _record_problem

DOC = (REPO_ROOT / "harness" / "RESULTS.md").read_text()


def test_every_record_kind_is_described_with_an_example_that_passes_the_schema():
    found = re.findall(r"^### `(\w+)` \((\w+)\)\n(.*?)(?=^### |\Z)", DOC, re.M | re.S)
    sections = {name: body for name, _kind, body in found}
    assert sorted(sections) == sorted(RECORD_KINDS)
    for name, body in sections.items():
        example = json.loads(re.search(r"```json\n(.*?)\n```", body, re.S).group(1))
        assert example["record"] == name
        assert _record_problem(RECORD_KINDS[name].kind, example) is None, name


def test_the_doc_names_every_status():
    from harness.results import STATUSES

    table = DOC[DOC.index("| status | meaning |") :]
    assert all(f"| `{s}` |" in table for s in STATUSES)

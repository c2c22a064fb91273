"""Progress on long work: a bar on stderr with items/s and the time left, shown only when stderr is
a terminal (logs and CI stay clean) and not asked to be quiet; and the columns that open each
case's progress line (``row_head``), so that every engine's lines line up."""

from __future__ import annotations

import sys

# Each column as wide as the longest name it shows (tests/test_progress_lines.py checks the tables
# against it): V2-104M_CLcancer; te-attention-kernel, the attention check's; fp8-current-dpa.
HEAD_WIDTHS = {"variant": 16, "backend": 19, "precision": 15}


def progress_bar(total: int, what: str, quiet: bool = False, unit: str = "cell"):
    """A context manager whose ``update(n)`` advances the bar (a no-op bar when hidden)."""
    from tqdm import tqdm

    return tqdm(
        total=total, desc=what, unit=unit, disable=quiet or not sys.stderr.isatty(), file=sys.stderr, leave=False
    )


def row_head(record: dict) -> str:
    """The columns that open a case's progress line: its variant, backend and precision, each at a
    fixed width; what the line says of the case follows."""
    return " ".join(f"{record[column]:{width}s}" for column, width in HEAD_WIDTHS.items())

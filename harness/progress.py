"""Progress on long work: a bar on stderr with items/s and the time left, shown only when stderr is
a terminal (logs and CI stay clean) and not asked to be quiet."""

from __future__ import annotations

import sys

from harness.backend_names import BACKENDS
from harness.precision import PRECISIONS
from models.registry import VARIANTS

# Each column as wide as the longest name its table holds, so that the lines of one run line up.
_HEAD_WIDTHS = {
    column: max(map(len, table))
    for column, table in (("variant", VARIANTS), ("backend", BACKENDS), ("precision", PRECISIONS))
}


def progress_bar(total: int, what: str, quiet: bool = False, unit: str = "cell"):
    """A context manager whose ``update(n)`` advances the bar (a no-op bar when hidden)."""
    from tqdm import tqdm

    return tqdm(
        total=total, desc=what, unit=unit, disable=quiet or not sys.stderr.isatty(), file=sys.stderr, leave=False
    )


def row_head(record: dict) -> str:
    """The columns that open a case's progress line: its variant, backend and precision, each at a
    fixed width; what the line says of the case follows."""
    return " ".join(f"{record[column]:{width}s}" for column, width in _HEAD_WIDTHS.items())

"""Progress on long work: a bar on stderr with items/s and the time left, shown only when stderr is
a terminal (logs and CI stay clean) and not asked to be quiet."""

from __future__ import annotations

import sys


def progress_bar(total: int, what: str, quiet: bool = False, unit: str = "cell"):
    """A context manager whose ``update(n)`` advances the bar (a no-op bar when hidden)."""
    from tqdm import tqdm

    return tqdm(
        total=total, desc=what, unit=unit, disable=quiet or not sys.stderr.isatty(), file=sys.stderr, leave=False
    )

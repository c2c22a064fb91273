"""Shared set-up of the suites (``pytest suites``): the seeded random HF model a test compares.

Each test module gets its own loader, so a model one module changes is never another module's, and
the model goes when its module ends instead of living to the end of the session.
"""

from __future__ import annotations

import pytest

from models.hf import random_hf_model
from models.registry import Variant


@pytest.fixture(scope="module")
def hf_model():
    """``hf_model(variant)`` → ``random_hf_model(variant, seed=0)`` of a ``Variant`` (a sliced one
    too). Only the last model asked for is kept: the suites' tests come grouped by variant, and two
    large variants at once would double the memory a run needs. Treat it as read-only."""
    last: list[tuple[Variant, object]] = []

    def load(variant: Variant):
        if not last or last[0][0] != variant:
            last.clear()  # the old model goes before the new one is made
            last.append((variant, random_hf_model(variant, seed=0)))
        return last[0][1]

    return load

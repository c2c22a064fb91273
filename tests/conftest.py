"""Shared set-up of the CPU tests (the isolation fixtures and the real data folder live in the
repository's conftest.py): synthetic cells made and tokenized as a user makes them (``gfqual synth``
then ``gfqual tokenize``), and checkpoint folders written by ``gfqual init`` and ``gfqual convert``.

Both are made once per session and per arguments, so tests that ask for the same set share it:
treat what they return as read-only, and write a test's own outputs under its ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main


@pytest.fixture(scope="session")
def make_tokenized(tmp_path_factory):
    """``make_tokenized(cells, genes=2000, seed=0, max_len=None, obs_columns=())`` → a folder with
    ``cells.h5ad`` (``gfqual synth``: synthetic counts over V1-10M's synthetic dictionaries, a
    ``cell_state`` per cell) and ``tok/`` (``gfqual tokenize`` of it for V1-10M)."""
    made: dict[tuple, Path] = {}

    def make(cells: int, genes: int = 2000, seed: int = 0, max_len: int | None = None, obs_columns=()) -> Path:
        key = (cells, genes, seed, max_len, tuple(obs_columns))
        if key not in made:
            folder = tmp_path_factory.mktemp("tokenized")
            h5ad = folder / "cells.h5ad"
            counts = ["--cells", str(cells), "--genes", str(genes), "--seed", str(seed)]
            assert main(["synth", "--out", str(h5ad), *counts]) == 0
            argv = ["tokenize", "--input", str(h5ad), "--variant", "V1-10M", "--dicts", "synthetic"]
            argv += ["--out", str(folder / "tok"), *(["--max-len", str(max_len)] if max_len else [])]
            assert main([*argv, *(["--obs-columns", *obs_columns] if obs_columns else [])]) == 0
            made[key] = folder
        return made[key]

    return make


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory) -> Path:
    """A folder of V1-10M checkpoints: ``hf/`` (``gfqual init``, seed 7), ``te/`` (converted from
    it) and ``hf2/`` (converted back: the round trip)."""
    root = tmp_path_factory.mktemp("ckpt")
    assert main(["init", "--variant", "V1-10M", "--seed", "7", "--out", str(root / "hf")]) == 0
    assert main(["convert", "--from", str(root / "hf"), "--to", "te", "--out", str(root / "te")]) == 0
    assert main(["convert", "--from", str(root / "te"), "--to", "hf", "--out", str(root / "hf2")]) == 0
    return root

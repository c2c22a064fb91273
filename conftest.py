"""Shared pytest set-up: isolation (RNG and TE FP8 state reset before every test) and the
optional real data folder (GFQUAL_SHARED_DATA, set by .ci/run when ../shared/data exists)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

import harness  # noqa: F401  (strict fp32 before torch starts CUDA)


@pytest.fixture(autouse=True)
def _isolated_numerics():
    import torch

    random.seed(0)
    torch.manual_seed(0)
    yield
    if "transformer_engine.pytorch" in __import__("sys").modules:
        from transformer_engine.pytorch.quantization import FP8GlobalStateManager

        FP8GlobalStateManager.reset()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real Geneformer files (configs, dictionaries, count matrices), or a visible skip."""
    folder = os.environ.get("GFQUAL_SHARED_DATA")
    if not folder or not Path(folder).is_dir():
        pytest.skip("real shared data not available (set GFQUAL_SHARED_DATA to shared/data)")
    return Path(folder)


@pytest.fixture
def interrupt_second_chunk(monkeypatch):
    """``Encoder.encode`` raises KeyboardInterrupt on its second chunk, as a killed tokenize run
    would stop; the returned function puts the real encoder back."""
    from harness.data.tokenizer import Encoder

    real, calls = Encoder.encode, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode", interrupted)
    return lambda: monkeypatch.setattr(Encoder, "encode", real)

"""The CI gate: each variant × backend × precision must match the HF reference, layer by layer."""

from __future__ import annotations

import functools

import pytest

from harness.parity.run import format_verdict, run_parity
from models.hf import random_hf_model
from models.registry import get_variant


@functools.lru_cache(maxsize=1)
def _model(variant: str):
    return random_hf_model(get_variant(variant), seed=0)


def test_parity(parity_spec, parity_log):
    records_log, specs_log = parity_log
    model = _model(parity_spec.variant)
    records, verdict = run_parity(parity_spec, model, model)
    records_log.extend(records)
    specs_log.append(parity_spec)
    if verdict["status"] == "skipped":
        pytest.skip(verdict["reason"])
    assert verdict["status"] == "pass", (
        format_verdict(verdict)
        + "\n"
        + "\n".join(f"  {r['stage']}: {r['violations']}" for r in records if r.get("status") == "fail")
    )

"""The CI gate: each variant × backend × precision must match the HF reference, layer by layer."""

from __future__ import annotations

import pytest

from harness.parity.run import format_verdict, run_parity
from models.registry import get_variant


def test_parity(parity_spec, parity_log, hf_model):
    records_log, specs_log = parity_log
    model = hf_model(get_variant(parity_spec.variant))
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

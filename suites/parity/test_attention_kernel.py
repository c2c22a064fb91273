"""TE's attention kernel alone against fp64 attention, at each variant's head shape: tells a
failure of TE's attention kernel on this stack (FP8 attention, above all) from a conversion fault."""

from __future__ import annotations

import pytest

from harness.parity.attention_kernel import check_attention_kernel
from models.registry import get_variant


def test_attention_kernel(kernel_case, parity_log):
    variant, precision, seq_len = kernel_case
    record = check_attention_kernel(get_variant(variant), precision, seq_len)
    parity_log[0].append(record)
    if record["status"] == "skipped":
        pytest.skip(record["reason"])
    assert record["status"] == "pass", record.get("violations") or record.get("reason")

"""Every engine's progress line opens with the same columns (variant, backend, precision), so the
lines of one run, parity, training, kernels or performance alike, line up."""

from __future__ import annotations

from harness.backend_names import BACKENDS
from harness.parity.attention_kernel import KERNEL_BACKEND, format_kernel_record
from harness.parity.run import format_verdict
from harness.parity.training_parity import format_training_verdict
from harness.perf.kernel_profile import format_profile
from harness.perf.sweep import format_row
from harness.precision import PRECISIONS
from harness.progress import HEAD_WIDTHS, row_head
from models.registry import VARIANTS


def _skipped(variant: str, backend: str, precision: str) -> dict:
    return {
        "record": "point",
        "variant": variant,
        "backend": backend,
        "precision": precision,
        "batch": 8,
        "status": "skipped",
        "reason": "TransformerEngine needs a CUDA GPU; none is visible",
    }


def test_the_longest_names_fit_and_every_head_is_as_wide():
    names = {"variant": list(VARIANTS), "backend": [*BACKENDS, KERNEL_BACKEND], "precision": list(PRECISIONS)}
    assert {column: max(map(len, table)) for column, table in names.items()} == HEAD_WIDTHS
    longest = _skipped(*(max(names[column], key=len) for column in ("variant", "backend", "precision")))
    shortest = _skipped(min(VARIANTS, key=len), min(BACKENDS, key=len), min(PRECISIONS, key=len))
    assert len(row_head(longest)) == len(row_head(shortest))
    assert row_head(longest).split() == [longest["variant"], longest["backend"], longest["precision"]]


def test_every_engine_opens_its_line_with_the_same_head():
    record = _skipped("V1-10M", "te", "fp8-current-dpa")
    lines = [f(record) for f in (format_verdict, format_training_verdict, format_kernel_record, format_row)]
    lines.append(format_profile(record))
    for line in lines:
        assert line.startswith(row_head(record) + " ") and record["reason"] in line

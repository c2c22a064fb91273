"""The reasons a record gives: one rule for an exception's text, one shape for a skipped row."""

from __future__ import annotations

from harness.reasons import REASON_LIMIT, error_message, error_reason, skipped
from harness.results import is_kernel_crash


def test_an_error_reason_is_the_type_and_the_first_line_cut_to_the_limit():
    exc = RuntimeError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be ...")
    assert error_reason(exc) == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert is_kernel_crash(error_reason(exc))
    assert error_reason(exc, where=" at batch 512").startswith("RuntimeError at batch 512: CUDA error")
    long = ValueError("x" * 1000)
    assert error_reason(long) == "ValueError: " + "x" * REASON_LIMIT
    assert error_message(long, limit=5) == "xxxxx"


def test_an_exception_without_a_message_still_gives_a_reason():
    assert error_reason(KeyError()) == "KeyError: "  # "".splitlines() is empty: no IndexError
    assert error_message(RuntimeError("\n")) == ""


def test_a_skipped_row_keeps_what_it_was_and_says_why():
    base = {"record": "point", "variant": "V1-10M", "backend": "te", "precision": "bf16"}
    row = skipped(base, "TransformerEngine needs a CUDA GPU; none is visible")
    assert row == {**base, "status": "skipped", "reason": "TransformerEngine needs a CUDA GPU; none is visible"}
    assert "status" not in base  # the base is not changed

"""Why a record is not a plain outcome, written once for every engine: the row of a case that
could not run here (``skipped``) and the reason an exception gives an error record
(``error_reason``). Skips and failures are rows with reasons, never dropped (harness/RESULTS.md).

Imports nothing of the suite, so the capability probe and every engine can use it.
"""

from __future__ import annotations

REASON_LIMIT = 300  # characters of an exception's message that a record's reason keeps


def skipped(base: dict, reason: str) -> dict:
    """``base`` as a record of what could not run here, with the reason (a skip is a row, never dropped)."""
    return {**base, "status": "skipped", "reason": reason}


def error_message(exc: BaseException, limit: int = REASON_LIMIT) -> str:
    """The first line of an exception's message, cut to ``limit`` characters: what a record keeps
    (the rest, tracebacks and C++ frames, belongs in a log). Torch's kernel faults name themselves
    on that line ("CUDA error: an illegal memory access ..."), where ``harness.results.is_kernel_crash`` finds them."""
    lines = str(exc).splitlines()
    return lines[0][:limit] if lines else ""


def error_reason(exc: BaseException, where: str = "", limit: int = REASON_LIMIT) -> str:
    """The reason of an error record: the exception's type, then ``where`` (e.g. " at batch 64"),
    then its ``error_message``."""
    return f"{type(exc).__name__}{where}: {error_message(exc, limit)}"

"""Failure classes: every failure says what it is. Known failures are data
(``known_failures.json``: a TE defect with its one-command reproduction and the TE version it was
seen with, a tolerance choice with its bound); any other failure is classed by what happened:

  te-defect       a known TransformerEngine defect (repro, TE version; a strict-xfail pytest case)
  tolerance       a measured value outside its bound (the bound; rationale in harness/TOLERANCES.md)
  scope           a limit of what was measured (random weights, a synthetic task), from the data file
  regression      slower than the baseline run of the same sweep beyond its noise
  inconclusive    a drop the measurements' noise makes unjudgeable ("cannot judge: too noisy"), or a
                  training band the reference learned nothing in
  instability     a training band the reference itself spikes in (a learning-rate matter, not TE's)
  crash           a kernel fault (CUDA error, illegal memory access) not known as a TE defect
  error           a case that should have run and raised
  missing         a step of the plan that did not run, or whose outputs are absent
  provenance      a file whose GPU name does not match its recorded capability or memory, or from
                  another commit than the qualification
  waiver-expired  a failure signed off by a waiver whose expiry date has passed
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from harness.results import is_kernel_crash
from harness.verdict.checks import Check

CLASSES = (
    "te-defect",
    "tolerance",
    "scope",
    "regression",
    "inconclusive",
    "instability",
    "crash",
    "error",
    "missing",
    "provenance",
    "waiver-expired",
)
KNOWN_FAILURES = Path(__file__).with_name("known_failures.json")
TOLERANCES = "harness/TOLERANCES.md"
MATCH_DEFAULTS = {"objective": "mlm"}  # what a record written before the field existed was


@functools.cache
def known_failures() -> tuple[dict, ...]:
    return tuple(json.loads(KNOWN_FAILURES.read_text())["known"])


def _matches(entry: dict, gate: str, gpu: str | None, record: dict) -> bool:
    if entry.get("gpu") not in (None, gpu):
        return False
    for key, want in entry["match"].items():
        if key == "gate":
            ok = gate == want
        elif key == "reason_contains":
            ok = want in str(record.get("reason"))
        else:
            ok = record.get(key, MATCH_DEFAULTS.get(key)) == want
        if not ok:
            return False
    return True


def known_for(gate: str, gpu: str | None, record: dict) -> dict | None:
    """The known failure a failing record of ``gate`` on ``gpu`` is, if any (the reports name it
    beside the record; the verdict classes it by it)."""
    return next((e for e in known_failures() if _matches(e, gate, gpu, record)), None)


def known(c: Check) -> dict | None:
    """The known failure a check's failure is, if any."""
    return known_for(c.gate, c.gpu, c.record)


def classify(c: Check) -> dict:
    """class, detail and repro of a failing check."""
    entry = known(c)
    if entry:
        seen = c.result.get("env", {}).get("te")
        detail = f"{entry['summary']} (known with TE {entry['te']}; this run TE {seen}). {c.detail}".strip()
        if entry["class"] == "tolerance" and entry.get("bound"):
            detail += f" Bound: {entry['bound']}."
        return {"class": entry["class"], "detail": detail, "repro": entry.get("repro"), "known": entry["id"]}
    if c.klass:
        repro = f"gfqual perf-gate --baseline {c.also[0]} --run {c.file}" if c.also else None
        return {"class": c.klass, "detail": c.detail, "repro": repro, "known": None}
    if c.status == "error":
        crash = is_kernel_crash(c.record.get("reason"))
        return {"class": "crash" if crash else "error", "detail": c.detail, "repro": None, "known": None}
    return {
        "class": "tolerance",
        "detail": f"outside its bound: {c.detail}; bounds and the measurements behind them: {TOLERANCES}",
        "repro": None,
        "known": None,
    }

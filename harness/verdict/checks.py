"""The one status rule every gate reads records through, and the rule by which a newer result
replaces an older one.

A record counts in a gate only when ``harness.results.gates`` says so, recomputed here from the
record and its kind; the ``gating`` flag stored in the file is never trusted (a file saying
``"status": "fail", "gating": false`` still fails). A counted record is ``pass``, ``fail`` or
``error``; ``error`` (a case that should have run and raised, a kernel crash) is a failure, never a
pass and never "incomplete".

A newer result replaces an older one only for the same thing tested: the same GPU, gate, case key
and tested identity (checkpoint sha256 or random seed, ``tested_identity``). When a newer pass
replaces an older failure, both stay visible: the older one is listed as ``superseded``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from harness.results import gates, tested_identity
from harness.verdict.gpus import result_gpu

FAILING = ("fail", "error")
SEVERITY = {"pass": 0, "fail": 1, "error": 2}  # within one file, the worst of one case counts


@dataclass
class Check:
    """One counted outcome: what a gate sees of one record (or of one comparison)."""

    gpu: str
    gate: str
    case: str
    status: str  # pass | fail | error
    file: str
    created: str
    detail: str = ""
    tested: str = ""
    also: list[str] = field(default_factory=list)  # other files the outcome rests on (a perf baseline)
    klass: str | None = None  # the failure class the family knows (regression, inconclusive), else classified
    record: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict, repr=False)

    @property
    def failing(self) -> bool:
        return self.status in FAILING


def counted_status(record: dict) -> str | None:
    """pass, fail or error when the record counts in a gate (the gating rule recomputed), else None."""
    if record.get("record") is None or not record.get("status"):
        return None
    try:
        counts = gates(record)
    except KeyError:  # a record kind this suite does not know gates nothing
        return None
    return record["status"] if counts else None


def source(result: dict) -> str:
    """The file a result was read from (``read_results`` notes it), or "(in memory)"."""
    return result.get("_source", {}).get("file", "(in memory)")


def check(
    result: dict, record: dict, gate: str, case: str, detail: str = "", status: str | None = None, weights=True
) -> Check:
    """A check of ``record``; with ``weights`` its case key names what was tested (a checkpoint's
    sha256 or the random seed), as a verdict for one set of weights never stands for another's."""
    tested = tested_identity(result)
    return Check(
        gpu=result_gpu(result),
        gate=gate,
        case=f"{case} · {tested}" if weights else case,
        status=status or record["status"],
        file=source(result),
        created=result["created"],
        detail=detail,
        tested=tested,
        record=record,
        result=result,
    )


def records(results: list[dict], kind: str, *names: str):
    """(result, record) for every record of the given record kinds in files of ``kind``."""
    for r in results:
        if r["kind"] == kind:
            for rec in r["records"]:
                if rec.get("record") in names:
                    yield r, rec


def settle(checks: list[Check]) -> tuple[list[Check], list[dict]]:
    """The newest check of each (GPU, gate, case, tested identity), and the superseded list: every
    older failure a newer pass replaced, both files named. Within one file the worst counts."""
    groups: defaultdict[tuple, list[Check]] = defaultdict(list)
    for c in checks:
        groups[(c.gpu, c.gate, c.case, c.tested)].append(c)
    newest, superseded = [], []
    for group in groups.values():
        group.sort(key=lambda c: (c.created, SEVERITY[c.status]))
        last = group[-1]
        newest.append(last)
        if last.status == "pass":
            for old in group[:-1]:
                if old.failing and old.created < last.created:
                    superseded.append(
                        {
                            "gpu": last.gpu,
                            "gate": last.gate,
                            "case": last.case,
                            "older": old.file,
                            "newer": last.file,
                            "older_status": old.status,
                            "newer_status": last.status,
                        }
                    )
    return newest, superseded

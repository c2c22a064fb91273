"""The results format: the one seam between measuring and reporting.

One JSON file per run::

    {"schema_version": 2, "kind": "parity" | "perf" | "downstream" | "qualification",
     "created": ISO-8601 UTC, "env": {...}, "weights": {...}, "config": {...},
     "records": [ {"record": <record kind>, "variant": ..., "backend": ..., "precision": ...,
                   "status": ..., "gating": ..., <metrics>}, ... ]}

The schema is data: ``RECORD_KINDS`` names every record kind, the file kind it belongs to, the
fields it must carry, the statuses it may take and whether it gates. One status vocabulary
(``STATUSES``) holds for every kind; every record with a status carries ``gating``, stamped here
from one rule (``gates``), so a report or a CI job reads whether a record counts instead of
re-deriving it. Records are flat (scalar values only); non-finite numbers are written as null.
``env`` names the hardware and every version that can change a number (cuDNN included) and the
git commit with whether the tree was dirty; it never names the host (harness/environment.py). Reports read only what
``read_result`` accepts; files of schema 1 are upgraded on read (``upgrade_v1``), never rewritten.
RESULTS.md documents the format with one example per record kind.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from harness.environment import REPO_ROOT, environment
from models.errors import GfqualError

SCHEMA_VERSION = 2
KINDS = ("parity", "perf", "downstream", "qualification")
REQUIRED_RECORD_KEYS = ("record", "variant", "backend", "precision")
DEFAULT_RESULTS_DIR = REPO_ROOT / "results" / "local"

STATUSES = ("pass", "fail", "error", "skipped", "reported")
JUDGED = ("pass", "fail", "error", "skipped", "reported")  # a judged record may also be shown unjudged
MEASURED = ("reported", "error", "skipped")  # a measurement ran (reported), died (error) or could not run here
# What marks an error as a kernel fault rather than a missing feature: the reliability gate's test.
CRASH_SIGNS = ("CUDA error", "illegal memory access", "AcceleratorError", "CUBLAS_STATUS", "cuDNN error")


@dataclass(frozen=True)
class RecordKind:
    """One kind of record: where it lives, what it must hold, and how it gates.

    ``gates``: "verdict" (a judged outcome: counts unless skipped, unjudged or a TE beta
    precision); "crash" (a measurement: counts only when it died on a kernel fault); "error" (a
    step of a plan: counts only when it died); "never"."""

    kind: str
    required: tuple[str, ...]
    statuses: tuple[str, ...]  # empty: a data row without a status
    gates: str
    meaning: str


RECORD_KINDS = {
    "stage": RecordKind(
        "parity",
        ("stage", "rel_l2", "status"),
        JUDGED,
        "never",
        "one stage of a parity case against its tolerance; the case's verdict gates",
    ),
    "verdict": RecordKind(
        "parity", ("status",), JUDGED, "verdict", "a parity case's outcome, with its worst and first diverging stage"
    ),
    "embedding": RecordKind(
        "parity",
        ("status", "n_cells", "rel_l2"),
        JUDGED,
        "verdict",
        "cell embeddings of tokenized cells, candidate against the HF reference",
    ),
    "attention_kernel": RecordKind(
        "parity",
        ("status", "heads", "head_dim", "seq_len"),
        JUDGED,
        "verdict",
        "TE's attention kernel alone against SDPA in fp64",
    ),
    "backward_stage": RecordKind(
        "parity",
        ("stage", "kind", "status"),
        JUDGED,
        "never",
        "one activation or parameter gradient of the training loss against the reference's; the verdict gates",
    ),
    "backward_verdict": RecordKind(
        "parity",
        ("status",),
        JUDGED,
        "verdict",
        "a backward parity case's outcome, with its worst and first diverging gradient (gfqual train-parity)",
    ),
    "trajectory_verdict": RecordKind(
        "parity",
        ("status", "steps", "max_step_loss_rel_diff", "final_weights_rel_l2"),
        JUDGED,
        "verdict",
        "N AdamW steps on the candidate against the reference: per-step loss and final weights",
    ),
    "trajectory_step": RecordKind(
        "parity",
        ("step", "loss_reference", "loss_candidate"),
        (),
        "never",
        "one optimizer step of a trajectory: the reference's, the candidate's and the peer's loss",
    ),
    "band_point": RecordKind(
        "parity",
        ("step", "seed", "held_out_loss", "held_out_accuracy"),
        (),
        "never",
        "one held-out evaluation of one seed's training run on fresh cells (gfqual train-band)",
    ),
    "band_trace": RecordKind(
        "parity",
        ("step", "seed", "layer", "grad_norm", "weight_norm"),
        (),
        "never",
        "one layer's gradient and weight norms after one step of a traced training run (gfqual train-band --trace)",
    ),
    "band_verdict": RecordKind(
        "parity",
        ("status", "steps", "seeds"),
        JUDGED,
        "verdict",
        "a precision's held-out loss over seeds against the band the reference's seeds span (gfqual train-band)",
    ),
    "point": RecordKind(
        "perf",
        ("status", "layout", "batch", "seq_len"),
        MEASURED,
        "crash",
        "one point of a static sweep: timed forward passes of fixed batches",
    ),
    "max_batch": RecordKind(
        "perf",
        ("status", "seq_len", "max_batch"),
        MEASURED,
        "crash",
        "the largest batch of full-length cells one forward fits",
    ),
    "kernel_profile": RecordKind(
        "perf", ("status", "batch"), MEASURED, "crash", "each kernel kind's share of one forward (gfqual profile)"
    ),
    "workload": RecordKind(
        "perf",
        ("status", "workload", "cells"),
        MEASURED,
        "crash",
        "a pipeline end to end against its own static forward (gfqual bench --workload)",
    ),
    "plain_loop": RecordKind(
        "perf",
        ("status", "workload", "cells"),
        MEASURED,
        "crash",
        "an independent plain loop on the workload's cells, the anchor its engine is held to (issue 28)",
    ),
    "calibration": RecordKind(
        "perf",
        ("workload", "cells", "max_tokens", "seconds", "cells_per_s"),
        (),
        "never",
        "one token budget or pad multiple tried by a workload's calibration, on a sample of its cells",
    ),
    "run": RecordKind(
        "perf",
        ("status", "workload", "cells", "cells_per_s"),
        MEASURED,
        "crash",
        "a user command itself (gfqual embed), with its start-up",
    ),
    "impl": RecordKind(
        "perf",
        ("median_ms", "cells_per_s"),
        (),
        "never",
        "schema 1 only: static timings of the retired implementation comparison",
    ),
    "summary": RecordKind("downstream", ("status", "task", "mode"), MEASURED, "never", "one downstream run's scores"),
    "agreement": RecordKind(
        "downstream",
        ("status", "task", "judged"),
        JUDGED,
        "verdict",
        "a candidate's downstream outputs against the reference's",
    ),
    "skipped": RecordKind(
        "downstream",
        ("status", "task", "reason"),
        ("skipped",),
        "never",
        "a downstream run this machine cannot do, with the reason",
    ),
    "fold": RecordKind("downstream", ("task", "fold"), (), "never", "one cross-validation fold's scores"),
    "prediction": RecordKind("downstream", ("task", "item", "predicted"), (), "never", "one item's prediction"),
    "confusion": RecordKind(
        "downstream", ("task", "true", "predicted", "count"), (), "never", "one cell of a confusion matrix"
    ),
    "shift": RecordKind(
        "downstream", ("task", "cell", "gene_token"), (), "never", "one in-silico perturbation's embedding shift"
    ),
    "published": RecordKind("downstream", ("task", "note"), (), "never", "a published reference number"),
    "plan_step": RecordKind(
        "qualification",
        ("step", "gate", "status", "rc", "wall_s", "estimate_s", "outputs", "command"),
        MEASURED,
        "error",
        "one step of a qualification plan as gfqual qualify ran it: its command, exit code, wall time and outputs",
    ),
}


def gates(record: dict) -> bool:
    """Whether a record counts in a gate: the one rule behind every record's ``gating`` flag."""
    from harness.precision import PRECISIONS

    spec = RECORD_KINDS[record["record"]]
    status = record.get("status")
    precision = PRECISIONS.get(record["precision"])
    if status not in ("pass", "fail", "error") or (precision is not None and precision.experimental):
        return False
    if spec.gates == "verdict":
        return bool(record.get("judged", True))
    if spec.gates == "crash":
        return status == "error" and is_kernel_crash(record.get("reason"))
    if spec.gates == "error":
        return status == "error"
    return False


def is_kernel_crash(reason) -> bool:
    return any(sign in str(reason) for sign in CRASH_SIGNS)


class ResultsError(GfqualError, ValueError):
    """A results file that this version of the suite cannot read, with the reason."""


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _clean(value):
    """JSON cannot hold NaN or infinity: a number that is not finite is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def stamp(record: dict) -> dict:
    """A record as written: non-finite numbers as null, and ``gating`` where it has a status."""
    record = {k: _clean(v) for k, v in record.items()}
    if record.get("record") in RECORD_KINDS and RECORD_KINDS[record["record"]].statuses:
        record["gating"] = gates(record)
    return record


def make_result(kind: str, records: list[dict], weights: dict, config: dict, env: dict | None = None) -> dict:
    result = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "created": now_utc(),
        "env": env if env is not None else environment(),
        "weights": weights,
        "config": config,
        "records": [stamp(r) for r in records],
    }
    validate(result)
    return result


def write_result(result: dict, out: str | os.PathLike | None = None) -> Path:
    """Write to ``out`` (a .json path, or a folder; default results/local/) and return the path."""
    validate(result)
    out = Path(out) if out is not None else DEFAULT_RESULTS_DIR
    if out.suffix != ".json":
        stamp = result["created"].replace(":", "").replace("-", "").replace("+0000", "Z")
        out = out / f"{result['kind']}-{stamp}-{result['env'].get('git_commit', 'unknown')[:8]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    written = {k: v for k, v in result.items() if not k.startswith("_")}  # in-memory notes stay in memory
    tmp.write_text(json.dumps(written, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, out)
    return out


def validate(result: dict, where: str = "result") -> None:
    """Raise ResultsError unless ``result`` follows the schema: the file's keys, and each record
    against its kind in RECORD_KINDS."""
    if not isinstance(result, dict):
        raise ResultsError(f"{where}: not a JSON object")
    version = result.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(f"{where}: schema_version {version!r} is not supported (this suite reads {SCHEMA_VERSION})")
    for key in ("kind", "created", "env", "weights", "config", "records"):
        if key not in result:
            raise ResultsError(f"{where}: missing {key!r}")
    if result["kind"] not in KINDS:
        raise ResultsError(f"{where}: unknown kind {result['kind']!r} (known: {', '.join(KINDS)})")
    if not isinstance(result["records"], list):
        raise ResultsError(f"{where}: records must be a list")
    for i, rec in enumerate(result["records"]):
        problem = _record_problem(result["kind"], rec)
        if problem:
            raise ResultsError(f"{where}: record {i} {problem}")


def _record_problem(kind: str, rec: dict) -> str | None:
    missing = [k for k in REQUIRED_RECORD_KEYS if k not in rec]
    if missing:
        return f"lacks {', '.join(missing)}"
    spec = RECORD_KINDS.get(rec["record"])
    if spec is None or spec.kind != kind:
        known = ", ".join(name for name, s in RECORD_KINDS.items() if s.kind == kind)
        return f"is of record kind {rec['record']!r}, not one of a {kind} file ({known})"
    nested = [k for k, v in rec.items() if isinstance(v, (dict, list))]
    if nested:
        return f"is not flat ({', '.join(nested)})"
    not_finite = [k for k, v in rec.items() if isinstance(v, float) and not math.isfinite(v)]
    if not_finite:
        return f"holds non-finite numbers ({', '.join(not_finite)}): write them as null"
    if spec.statuses and rec.get("status") not in spec.statuses:
        return f"({rec['record']}) has status {rec.get('status')!r}; it takes one of {', '.join(spec.statuses)}"
    if not spec.statuses and "status" in rec:
        return f"({rec['record']}) is a data row and takes no status"
    lacking = [k for k in spec.required if k not in rec] + (["gating"] if spec.statuses and "gating" not in rec else [])
    if lacking:
        return f"({rec['record']}) lacks {', '.join(lacking)}"
    return None


V1_STATUS = {"ok": "reported", "unjudged": "reported", None: "reported"}


def upgrade_v1(result: dict) -> dict:
    """A schema-1 file as schema 2, in memory: the record kind named where it was implicit
    (workload rows, ``gfqual embed`` rows, the retired implementation timings), one status
    vocabulary (ok and unjudged become reported, an out-of-memory point is skipped with its
    reason), null for the strings "nan"/"inf", and ``gating`` from the one rule."""

    def record_kind(rec: dict) -> str:
        if "record" in rec:
            return rec["record"]
        if "workload" in rec:
            return "workload" if "status" in rec else "run"
        return "impl"

    records = []
    for rec in result.get("records", []):
        rec = {k: (None if v in ("nan", "inf", "-inf") else v) for k, v in rec.items()}
        rec["record"] = record_kind(rec)
        if RECORD_KINDS.get(rec["record"]) and RECORD_KINDS[rec["record"]].statuses:
            status = rec.get("status")
            if status == "oom":
                rec["status"], rec["reason"] = "skipped", f"out of memory: {rec.get('reason')}"
            else:
                rec["status"] = V1_STATUS.get(status, status)
        records.append(stamp(rec))
    return {**result, "schema_version": SCHEMA_VERSION, "records": records}


def tested_identity(result: dict) -> str:
    """What a results file tested beyond its GPU and configuration: the candidate checkpoint (its
    weights' sha256) or the random weights' seed. A verdict for one never stands in for another."""
    weights = result.get("weights", {})
    if weights.get("source") == "random-init":
        seeds = weights.get("seeds")  # a training band: one draw per seed
        return (
            f"random weights, seeds {seeds[0]}-{seeds[-1]}" if seeds else f"random weights, seed {weights.get('seed')}"
        )
    sha = weights.get("candidate", weights).get("sha256")
    return f"checkpoint {sha[:12]}" if sha else "checkpoint (sha256 not recorded)"


def gate_status(record: dict) -> str | None:
    """What one record counts as in a gate: nothing (None) unless it gates by the one rule
    (``gates``, recomputed: a stored ``gating`` flag is never trusted); "fail" for an error (a case
    that should have run and did not, or a kernel crash); else its own status. ``gfqual run``
    gates through it; the verdict (harness/verdict/) through the same ``gates``."""
    if record.get("record") not in RECORD_KINDS or not gates(record):
        return None
    return "fail" if record["status"] == "error" else record["status"]


def read_result(path: str | os.PathLike, name: str | None = None) -> dict:
    """A results file, validated (schema 1 upgraded in memory). ``_source`` notes, in memory only
    (never written), the file it came from (``name``, else its path) and its bytes' sha256: the
    verdict names and fingerprints every input. A gzipped file (a run kept as it was, beside the
    file judged again from it) is read through gzip; its sha256 is of the bytes as stored."""
    import gzip
    import hashlib

    path = Path(path)
    try:
        raw = path.read_bytes()
        result = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read results: {exc}") from exc
    if isinstance(result, dict) and result.get("schema_version") == 1:
        result = upgrade_v1(result)
    validate(result, where=str(path))
    result["_source"] = {"file": name or str(path), "sha256": hashlib.sha256(raw).hexdigest()}
    return result


def read_results(folder: str | os.PathLike, kind: str | None = None) -> list[dict]:
    """Every results file under ``folder`` (recursively), optionally of one kind, oldest first;
    each named from the folder's own name down ("h100/parity-matrix-h100.json"), whichever the
    working directory."""
    folder = Path(folder).resolve()
    results = [read_result(p, p.relative_to(folder.parent).as_posix()) for p in sorted(folder.rglob("*.json"))]
    results = [r for r in results if kind is None or r["kind"] == kind]
    return sorted(results, key=lambda r: r["created"])

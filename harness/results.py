"""The results format: the one seam between measuring and reporting.

One JSON file per run::

    {"schema_version": 1, "kind": "parity" | "perf" | "downstream" | ...,
     "created": ISO-8601 UTC, "env": {...}, "weights": {...}, "config": {...},
     "records": [ {"variant": ..., "backend": ..., "precision": ..., <metrics>}, ... ]}

``records`` are flat (scalar values only) so that a report can put them straight into a table.
``env`` names the hardware and every version that can change a number, and the git commit; it
never names the host. Reports read only what ``read_result`` accepts.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
from pathlib import Path

from models.errors import GfqualError

SCHEMA_VERSION = 1
KINDS = ("parity", "perf", "downstream", "smoke")
REQUIRED_RECORD_KEYS = ("variant", "backend", "precision")
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS_DIR = REPO_ROOT / "results" / "local"


class ResultsError(GfqualError, ValueError):
    """A results file that this version of the suite cannot read, with the reason."""


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state() -> dict:
    """Commit of the code that ran. GFQUAL_COMMIT, when set, wins: a copied working tree (the GPU
    machine's) may carry a stale .git whose HEAD is not the code that ran."""
    if os.environ.get("GFQUAL_COMMIT"):
        return {"git_commit": os.environ["GFQUAL_COMMIT"], "git_dirty": None}
    commit = _git("rev-parse", "HEAD")
    if commit:
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
        return {"git_commit": commit, "git_dirty": dirty}
    return {"git_commit": "unknown", "git_dirty": None}


def _driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVIDIA driver (CPU machine) or no nvidia-ml-py
        return None


def environment() -> dict:
    """Everything that can change a number: hardware, driver and library versions, commit."""
    import torch
    import transformers

    from harness.capability import probe
    from harness.precision import tf32_state

    cap = probe()
    return {
        **cap.describe(),
        "driver": _driver_version(),
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "te": cap.te_version,
        "python": platform.python_version(),
        "cpu_arch": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        **tf32_state(),
        **git_state(),
    }


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _clean(value):
    """JSON cannot hold NaN/inf: write them as strings a reader turns back into floats."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def make_result(kind: str, records: list[dict], weights: dict, config: dict, env: dict | None = None) -> dict:
    result = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "created": now_utc(),
        "env": env if env is not None else environment(),
        "weights": weights,
        "config": config,
        "records": [{k: _clean(v) for k, v in r.items()} for r in records],
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
    tmp.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, out)
    return out


def validate(result: dict, where: str = "result") -> None:
    if not isinstance(result, dict):
        raise ResultsError(f"{where}: not a JSON object")
    version = result.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(
            f"{where}: schema_version {version!r} is not supported (this suite reads {SCHEMA_VERSION})"
        )
    for key in ("kind", "created", "env", "weights", "config", "records"):
        if key not in result:
            raise ResultsError(f"{where}: missing {key!r}")
    if result["kind"] not in KINDS:
        raise ResultsError(f"{where}: unknown kind {result['kind']!r} (known: {', '.join(KINDS)})")
    if not isinstance(result["records"], list):
        raise ResultsError(f"{where}: records must be a list")
    for i, rec in enumerate(result["records"]):
        missing = [k for k in REQUIRED_RECORD_KEYS if k not in rec]
        if missing:
            raise ResultsError(f"{where}: record {i} lacks {', '.join(missing)}")
        nested = [k for k, v in rec.items() if isinstance(v, (dict, list))]
        if nested:
            raise ResultsError(f"{where}: record {i} is not flat ({', '.join(nested)})")


def tested_identity(result: dict) -> str:
    """What a results file tested beyond its GPU and configuration: the candidate checkpoint (its
    weights' sha256) or the random weights' seed. A verdict for one never stands in for another."""
    weights = result.get("weights", {})
    if weights.get("source") == "random-init":
        return f"random weights, seed {weights.get('seed')}"
    sha = weights.get("candidate", weights).get("sha256")
    return f"checkpoint {sha[:12]}" if sha else "checkpoint (sha256 not recorded)"


def gate_status(record: dict) -> str | None:
    """What one judged record counts as in a gate: nothing (None) when it was skipped on this
    machine or its precision is TE beta; "fail" for an error (a case that should have run and did
    not); else its own status. ``gfqual run`` and the qualification report both gate through it."""
    from harness.precision import PRECISIONS

    precision = PRECISIONS.get(record["precision"])
    if record["status"] == "skipped" or (precision is not None and precision.experimental):
        return None
    return "fail" if record["status"] == "error" else record["status"]


def read_result(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read results: {exc}") from exc
    validate(result, where=str(path))
    return result


def read_results(folder: str | os.PathLike, kind: str | None = None) -> list[dict]:
    """Every results file under ``folder`` (recursively), optionally of one kind, oldest first."""
    results = [read_result(p) for p in sorted(Path(folder).rglob("*.json"))]
    results = [r for r in results if kind is None or r["kind"] == kind]
    return sorted(results, key=lambda r: r["created"])

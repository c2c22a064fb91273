"""Two qualifications side by side (``gfqual compare A B``): what changed from A to B.

For each folder (a qualification folder, whose results/ and verdict.json are read, or any folder
of results files) the newest record of each thing tested is taken, and B is held against A:

- versions: driver, CUDA, torch, cuDNN, TE, transformers (and the GPU) each side ran with;
- parity: every stage's, gradient's and check's error ratio B / A; a ratio above ``DRIFT_RATIO``
  is drift even when both are within tolerance (numerics drift is what an upgrade breaks);
- perf: every point's and workload's throughput ratio B / A with its noise (the repeats' spread
  of both sides); slower beyond the noise and ``SLOWDOWN`` is a regression when both sides are
  the same GPU class (across GPU classes the ratios describe the hardware);
- verdicts: every judged check whose status changed (pass → fail is a regression), and the
  verdict.json overall and per-GPU verdicts when both folders have one;
- consistency: the same seeded weights and cells on both sides, the cell-embedding digests
  (equal or not) and their estimated distance (``harness.parity.metrics.sketch_distance``);
  records written before the digest existed say "not recorded".

Exit 1 when anything drifted or regressed, 0 otherwise, 2 on a folder with no results."""

from __future__ import annotations

import json
import math
from pathlib import Path

from harness.parity.metrics import sketch_distance
from harness.results import RECORD_KINDS, read_results, tested_identity
from harness.verdict.gpus import gpu_class
from models.errors import UsageError

DRIFT_RATIO = 4.0  # an error that grew more than this from A to B is drift, within tolerance or not
SLOWDOWN = 0.05  # perf: slower by more than this beyond the two sides' noise is a regression
CONSISTENCY_LIMIT = 1e-5  # same weights and cells, fp32: embeddings further apart than this drifted
VERSION_KEYS = ("gpu_name", "driver", "cuda", "torch", "cudnn", "te_cudnn", "te", "transformers")
# Fields that tell two records of one kind apart (those a record has, in this order).
KEY_FIELDS = (
    "task",
    "mode",
    "objective",
    "workload",
    "variant",
    "backend",
    "precision",
    "cells",
    "n_cells",
    "seq_len",
    "head_dim",
    "layout",
    "batch",
    "forward",
    "world_size",
    "stage",
    "kind",
)
ERROR_RECORDS = {"stage": "rel_l2", "backward_stage": "rel_l2", "embedding": "rel_l2", "attention_kernel": "rel_l2"}
PERF_RECORDS = ("point", "workload", "run")


def results_of(folder: str | Path) -> tuple[list[dict], dict | None]:
    """A folder's results (a qualification folder's results/ when it has one) and its verdict.json."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder; give two qualification folders or folders of results")
    verdict_path = folder / "verdict.json"
    verdict = json.loads(verdict_path.read_text()) if verdict_path.is_file() else None
    source = folder / "results" if (folder / "results").is_dir() and verdict is not None else folder
    results = [r for r in read_results(source) if r["kind"] != "qualification"]
    if not results:
        raise UsageError(f"{folder}: no results files; give a qualification folder or a folder of results")
    return results, verdict


def _key(result: dict, rec: dict) -> tuple:
    fields = tuple(f"{f}={rec[f]}" for f in KEY_FIELDS if rec.get(f) is not None)
    sweep = result["config"].get("sweep", {}).get("name") if isinstance(result["config"].get("sweep"), dict) else None
    return (rec["record"], *((f"sweep={sweep}",) if sweep else ()), *fields, tested_identity(result))


def newest(results: list[dict]) -> dict[tuple, tuple[dict, dict]]:
    """(result, record) of the newest record of each thing tested (results are oldest first)."""
    out: dict[tuple, tuple[dict, dict]] = {}
    for result in results:
        for rec in result["records"]:
            out[_key(result, rec)] = (result, rec)
    return out


def _versions(results: list[dict]) -> dict[str, list[str]]:
    return {k: sorted({str(r["env"].get(k)) for r in results if r["env"].get(k) is not None}) for k in VERSION_KEYS}


def _ratio(b: float | None, a: float | None) -> float | None:
    if a is None or b is None:
        return None
    if a == 0:
        return 1.0 if b == 0 else math.inf
    return b / a


SHORT = {"batch": "B=", "seq_len": "S=", "n_cells": "n=", "cells": "cells=", "head_dim": "d=", "world_size": "gpus="}


def _label(key: tuple) -> str:
    """A record's key as a row label: names alone, counts with a short name (B=8 S=2048)."""
    parts = (str(k).split("=", 1) for k in key[1:-1])
    return " ".join(SHORT.get(name, "") + value for name, value in parts)


def compare_folders(a: str | Path, b: str | Path, labels: list[str] | None = None) -> dict:
    """The comparison of B against A, as data (``render_markdown`` shows it); ``labels`` name the
    folders in it (default: as given)."""
    results_a, verdict_a = results_of(a)
    results_b, verdict_b = results_of(b)
    gpus_a = sorted({gpu_class(r["env"].get("gpu_name")) for r in results_a})
    gpus_b = sorted({gpu_class(r["env"].get("gpu_name")) for r in results_b})
    same_gpu = gpus_a == gpus_b
    name_a, name_b = labels or (str(a), str(b))
    ra, rb = newest(results_a), newest(results_b)
    common = [k for k in ra if k in rb]
    versions_a, versions_b = _versions(results_a), _versions(results_b)
    versions = [
        {"key": k, "a": versions_a[k], "b": versions_b[k], "changed": versions_a[k] != versions_b[k]}
        for k in VERSION_KEYS
    ]
    errors = []
    for key in common:
        field = ERROR_RECORDS.get(key[0])
        if field is None:
            continue
        ea, eb = ra[key][1].get(field), rb[key][1].get(field)
        ratio = _ratio(eb, ea)
        errors.append(
            {
                "record": key[0],
                "what": _label(key),
                "a": ea,
                "b": eb,
                "ratio": ratio,
                "status_a": ra[key][1].get("status"),
                "status_b": rb[key][1].get("status"),
                "drift": ratio is not None and ratio > DRIFT_RATIO,
            }
        )
    perf = []
    for key in common:
        if key[0] not in PERF_RECORDS:
            continue
        pa, pb = ra[key][1], rb[key][1]
        if pa.get("cells_per_s") is None or pb.get("cells_per_s") is None:
            continue  # skipped or failed on a side: its verdict, not a ratio, says so
        ratio = _ratio(pb.get("cells_per_s"), pa.get("cells_per_s"))
        noise = (pa.get("spread") or 0.0) + (pb.get("spread") or 0.0)
        slower = ratio is not None and ratio < 1 - noise - SLOWDOWN
        perf.append(
            {
                "record": key[0],
                "what": _label(key),
                "a": pa.get("cells_per_s"),
                "b": pb.get("cells_per_s"),
                "ratio": ratio,
                "noise": noise,
                "status_a": pa.get("status"),
                "status_b": pb.get("status"),
                "slower_beyond_noise": slower,
                "regression": slower and same_gpu,
            }
        )
    verdicts = []
    for key in common:
        spec = RECORD_KINDS.get(key[0])
        if spec is None or spec.gates != "verdict":
            continue
        sa, sb = ra[key][1].get("status"), rb[key][1].get("status")
        if sa != sb:
            verdicts.append(
                {"record": key[0], "what": _label(key), "a": sa, "b": sb, "regression": sa == "pass" and sb == "fail"}
            )
    overall = []
    if verdict_a and verdict_b:
        overall.append({"what": "overall", "a": verdict_a.get("overall"), "b": verdict_b.get("overall")})
        for gpu in sorted(set(verdict_a.get("gpus", {})) | set(verdict_b.get("gpus", {}))):
            va = verdict_a.get("gpus", {}).get(gpu, {}).get("verdict")
            vb = verdict_b.get("gpus", {}).get(gpu, {}).get("verdict")
            overall.append({"what": gpu, "a": va, "b": vb})
    consistency = []
    for key in common:
        if key[0] != "embedding":
            continue
        ea, eb = ra[key][1], rb[key][1]
        row = {"what": _label(key), "sides": "reference and candidate"}
        for side, prefix in (("reference", "ref_emb_"), ("candidate", "emb_")):
            if not ea.get(prefix + "sketch") or not eb.get(prefix + "sketch"):
                row[side] = None
                continue
            distance = sketch_distance(ea[prefix + "sketch"], eb[prefix + "sketch"])
            row[side] = {
                "digest_a": ea[prefix + "sha256"],
                "digest_b": eb[prefix + "sha256"],
                "same_digest": ea[prefix + "sha256"] == eb[prefix + "sha256"],
                "distance": distance,
            }
        row["drift"] = any(
            row[s] is not None and row[s]["distance"] > CONSISTENCY_LIMIT for s in ("reference", "candidate")
        )
        consistency.append(row)
    only_a = sum(1 for k in ra if k not in rb and k[0] in (*ERROR_RECORDS, *PERF_RECORDS))
    only_b = sum(1 for k in rb if k not in ra and k[0] in (*ERROR_RECORDS, *PERF_RECORDS))
    flags = {
        "parity drift": sum(e["drift"] for e in errors),
        "verdict regressions": sum(v["regression"] for v in verdicts),
        "perf regressions": sum(p["regression"] for p in perf),
        "embedding drift": sum(c["drift"] for c in consistency),
        "overall verdicts worse": sum(o["a"] == "PASS" and o["b"] != "PASS" for o in overall),
    }
    summary = (
        f"A {name_a} ({', '.join(gpus_a)}) -> B {name_b} ({', '.join(gpus_b)}): "
        f"versions changed: {', '.join(v['key'] for v in versions if v['changed']) or 'none'}; "
        f"{len(errors)} parity errors compared ({sum(e['a'] == e['b'] for e in errors)} identical), "
        f"{flags['parity drift']} grew more than {DRIFT_RATIO:g}x; {len(perf)} perf points compared, "
        f"{sum(p['slower_beyond_noise'] for p in perf)} slower beyond their noise"
        + ("" if same_gpu else " (different GPUs: not regressions)")
        + f"; {len(verdicts)} verdicts changed, {flags['verdict regressions']} from pass to fail; "
        f"{sum(c['candidate'] is not None for c in consistency)} of {len(consistency)} embedding checks carry "
        f"digests, {flags['embedding drift']} drifted; "
        + ("DRIFT OR REGRESSION" if any(flags.values()) else "no drift, no regression")
    )
    return {
        "a": name_a,
        "b": name_b,
        "gpus_a": gpus_a,
        "gpus_b": gpus_b,
        "same_gpu": same_gpu,
        "versions": versions,
        "parity_errors": errors,
        "perf": perf,
        "verdicts_changed": verdicts,
        "overall_verdicts": overall,
        "embedding_consistency": consistency,
        "only_in_a": only_a,
        "only_in_b": only_b,
        "flags": flags,
        "drift": any(flags.values()),
        "summary": summary,
        "limits": {"drift_ratio": DRIFT_RATIO, "slowdown": SLOWDOWN, "consistency": CONSISTENCY_LIMIT},
    }


def _n(x, fmt: str = ".3g") -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return format(x, fmt) if isinstance(x, (int, float)) else str(x)


def _table(headers: list[str], rows: list[list]) -> list[str]:
    return [
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _side(side: dict | None) -> list[str]:
    """One side of an embedding check in the consistency table: digests and distance."""
    if side is None:
        return ["not recorded", "—"]
    same = " (equal)" if side["same_digest"] else ""
    return [f"{side['digest_a']} / {side['digest_b']}{same}", _n(side["distance"])]


def render_markdown(c: dict) -> str:
    lim = c["limits"]
    lines = [
        f"# Comparison: B = `{c['b']}` against A = `{c['a']}`",
        "",
        c["summary"],
        "",
        f"GPUs: A {', '.join(c['gpus_a'])}, B {', '.join(c['gpus_b'])}. Things tested on one side only: "
        f"{c['only_in_a']} in A, {c['only_in_b']} in B (not compared).",
        "",
        "## Versions",
        "",
        *_table(
            ["", "A", "B", ""],
            [
                [v["key"], ", ".join(v["a"]) or "—", ", ".join(v["b"]) or "—", "changed" if v["changed"] else ""]
                for v in c["versions"]
            ],
        ),
        "",
        "## Verdicts that changed",
        "",
    ]
    if c["overall_verdicts"]:
        lines += [
            *_table(["verdict.json", "A", "B"], [[o["what"], _n(o["a"]), _n(o["b"])] for o in c["overall_verdicts"]]),
            "",
        ]
    else:
        lines += ["verdict.json: not in both folders (folders of results, not qualifications).", ""]
    lines += (
        _table(
            ["check", "what", "A", "B", ""],
            [
                [v["record"], v["what"], v["a"], v["b"], "REGRESSION" if v["regression"] else ""]
                for v in c["verdicts_changed"]
            ],
        )
        if c["verdicts_changed"]
        else ["No judged check changed its status."]
    )
    drift = [e for e in c["parity_errors"] if e["drift"]]
    lines += [
        "",
        "## Cross-GPU consistency: the same seeded weights and cells",
        "",
        f"Cell embeddings of the embedding checks, each side's digest (values to 1e-4 of their RMS) and the "
        f"distance of B's from A's (relative L2, estimated from 32 seeded projections; drift above "
        f"{lim['consistency']:g}).",
        "",
        *_table(
            ["check", "reference (HF) digests A / B", "distance", "candidate digests A / B", "distance", ""],
            [
                [row["what"], *_side(row["reference"]), *_side(row["candidate"]), "DRIFT" if row["drift"] else ""]
                for row in c["embedding_consistency"]
            ],
        ),
        "",
        f"## Parity errors, B / A ({len(c['parity_errors'])} compared; {len(drift)} grew more than "
        f"{lim['drift_ratio']:g}x)",
        "",
        "Every stage, gradient and check both sides measured, largest growth first; drift is flagged even "
        "within tolerance.",
        "",
        *_table(
            ["check", "what", "A", "B", "B / A", "status A → B", ""],
            [
                [
                    e["record"],
                    e["what"],
                    _n(e["a"]),
                    _n(e["b"]),
                    "identical" if e["a"] == e["b"] else _n(e["ratio"], ".4g"),
                    f"{e['status_a']} → {e['status_b']}",
                    "DRIFT" if e["drift"] else "",
                ]
                for e in sorted(c["parity_errors"], key=lambda e: -(e["ratio"] if e["ratio"] is not None else -1))
            ],
        ),
        "",
        f"## Throughput, B / A ({len(c['perf'])} compared)",
        "",
        f"cells/s of each point and workload both sides measured (a point skipped or failed on a side is left to "
        f"the verdicts); noise is the sum of both sides' repeat spread; "
        f"slower than 1 − noise − {lim['slowdown']:g} is flagged"
        + (
            "."
            if c["same_gpu"]
            else " (A and B are different GPUs: the ratios describe the hardware, not a regression)."
        ),
        "",
        *_table(
            ["record", "what", "A cells/s", "B cells/s", "B / A", "noise", ""],
            [
                [
                    p["record"],
                    p["what"],
                    _n(p["a"], ".1f"),
                    _n(p["b"], ".1f"),
                    _n(p["ratio"], ".3f"),
                    _n(p["noise"], ".2f"),
                    "REGRESSION" if p["regression"] else ("slower" if p["slower_beyond_noise"] else ""),
                ]
                for p in c["perf"]
            ],
        ),
        "",
    ]
    return "\n".join(lines)


def _finite(value):
    """JSON holds no infinity: an error that grew from exactly 0 is written as null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_comparison(c: dict, out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "comparison.md", out / "comparison.json"
    md.write_text(render_markdown(c))
    js.write_text(json.dumps(_finite(c), indent=1) + "\n")
    return md, js

"""The results format: written and read back, validated on read, one rule for what gates, and
every committed result readable under the schema."""

from __future__ import annotations

import hashlib
import json

import pytest

from harness.results import (
    REPO_ROOT,
    STATUSES,
    ResultsError,
    gate_status,
    make_result,
    read_result,
    read_results,
    write_result,
)

ENV = {"gpu_name": None, "git_commit": "abc", "te": None}


def _verdict(**extra) -> dict:
    return {"record": "verdict", "variant": "V1-10M", "backend": "te", "precision": "fp32", "status": "pass", **extra}


def test_results_round_trip_and_validation(tmp_path):
    path = write_result(
        make_result("parity", [_verdict(rel_l2=float("nan"))], {"source": "random-init"}, {}, env=ENV), tmp_path
    )
    back = read_result(path)
    assert back["records"][0]["rel_l2"] is None and back["env"] == ENV  # non-finite is null, never "nan"
    assert back["records"][0]["gating"] is True
    assert [r["kind"] for r in read_results(tmp_path)] == ["parity"]


def test_a_gzipped_results_file_reads_as_itself_and_a_truncated_one_is_refused(tmp_path):
    import gzip

    path = write_result(make_result("parity", [_verdict()], {"source": "random-init"}, {}, env=ENV), tmp_path)
    packed = tmp_path / "kept.json.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    back = read_result(packed)
    assert back["records"] == read_result(path)["records"]
    assert back["_source"]["sha256"] == hashlib.sha256(packed.read_bytes()).hexdigest()
    packed.write_bytes(packed.read_bytes()[:20])
    with pytest.raises(ResultsError, match="cannot read results"):
        read_result(packed)


def test_results_reader_rejects_what_it_cannot_read(tmp_path):
    good = make_result("parity", [_verdict()], {}, {}, env=ENV)
    for mutate, message in (
        (lambda r: r.update(schema_version=99), "schema_version 99 is not supported"),
        (lambda r: r.update(kind="weather"), "unknown kind 'weather'"),
        (lambda r: r["records"].append({"record": "verdict", "variant": "v"}), "record 1 lacks backend, precision"),
        (lambda r: r["records"][0].update(nested={"a": 1}), "record 0 is not flat"),
        (lambda r: r["records"][0].update(status="ok"), "status 'ok'; it takes one of pass, fail"),
        (lambda r: r["records"][0].update(record="point"), "record kind 'point', not one of a parity file"),
        (lambda r: r["records"][0].pop("gating"), r"\(verdict\) lacks gating"),
        (lambda r: r["records"][0].pop("status"), "status None"),
    ):
        bad = json.loads(json.dumps(good))
        mutate(bad)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ResultsError, match=message):
            read_result(tmp_path / "bad.json")


@pytest.mark.parametrize(
    "record, gating",
    [
        (_verdict(), True),
        (_verdict(status="fail"), True),
        (_verdict(status="skipped", reason="no GPU"), False),
        (_verdict(status="reported"), False),  # shown unjudged: no tolerance, nothing to gate on
        (_verdict(precision="fp8-delayed-dpa", status="fail"), False),  # TE beta: shown, never gating
        (
            {
                "record": "stage",
                "variant": "V1-10M",
                "backend": "te",
                "precision": "fp32",
                "status": "fail",
                "stage": "logits",
                "rel_l2": 1.0,
            },
            False,
        ),  # its case's verdict gates, not each stage
        (
            {
                "record": "agreement",
                "variant": "V1-10M",
                "backend": "te",
                "precision": "bf16",
                "status": "pass",
                "task": "dosage",
                "judged": False,
            },
            False,
        ),  # informative comparison against HF fp32
        (
            {
                "record": "max_batch",
                "variant": "V2-316M",
                "backend": "te",
                "precision": "bf16",
                "status": "error",
                "seq_len": 4096,
                "max_batch": 256,
                "reason": "AcceleratorError at batch 512: CUDA error: an illegal memory access was encountered",
            },
            True,
        ),  # a kernel crash gates
        (
            {
                "record": "point",
                "variant": "V2-316M",
                "backend": "te",
                "precision": "fp8-current",
                "status": "error",
                "layout": "full",
                "batch": 8,
                "seq_len": 4096,
                "key": "k",
                "reason": "ValueError: No dot product attention backend is available",
            },
            False,
        ),  # missing feature, no crash
    ],
)
def test_one_rule_says_what_gates(record, gating):
    (stamped,) = make_result(
        (
            "parity"
            if record["record"] in ("verdict", "stage")
            else "downstream"
            if record["record"] == "agreement"
            else "perf"
        ),
        [record],
        {},
        {},
        env=ENV,
    )["records"]
    assert stamped["gating"] is gating
    assert gate_status(stamped) == (("fail" if record["status"] == "error" else record["status"]) if gating else None)


def test_schema_1_files_are_upgraded_on_read(tmp_path):
    """Committed schema-1 files stay as measured; reading them gives schema 2."""
    v1 = {
        "schema_version": 1,
        "kind": "perf",
        "created": "2026-01-01T00:00:00+00:00",
        "env": ENV,
        "weights": {},
        "config": {},
        "records": [
            {
                "record": "point",
                "variant": "V1-10M",
                "backend": "te",
                "precision": "bf16",
                "layout": "full",
                "batch": 8,
                "seq_len": 2048,
                "key": "a",
                "status": "ok",
                "spread": "nan",
            },
            {
                "record": "point",
                "variant": "V1-10M",
                "backend": "te",
                "precision": "bf16",
                "layout": "full",
                "batch": 9999,
                "seq_len": 2048,
                "key": "b",
                "status": "oom",
                "reason": "CUDA out of memory",
            },
            {
                "workload": "embed",
                "variant": "V1-10M",
                "backend": "te",
                "precision": "bf16",
                "status": "ok",
                "cells": 5,
            },
            {
                "workload": "embed",
                "variant": "V1-10M",
                "backend": "te",
                "precision": "bf16",
                "cells": 5,
                "cells_per_s": 9.0,
            },
        ],
    }
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    back = read_result(tmp_path / "v1.json")
    assert back["schema_version"] == 2
    assert [(r["record"], r["status"]) for r in back["records"]] == [
        ("point", "reported"),
        ("point", "skipped"),
        ("workload", "reported"),
        ("run", "reported"),
    ]
    assert back["records"][0]["spread"] is None and "out of memory" in back["records"][1]["reason"]
    assert not any(r["gating"] for r in back["records"])


def test_every_committed_result_reads_under_the_schema():
    files = sorted((REPO_ROOT / "results").rglob("*.json"))
    assert len(files) > 20
    for path in files:
        for rec in read_result(path)["records"]:
            assert rec.get("status") in (*STATUSES, None)

"""The registry against the published configs, the results format, and the metrics."""

from __future__ import annotations

import json
import math

import pytest
import torch

from harness.parity.metrics import StageStats
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
from models.registry import VARIANTS, UnknownVariantError, get_variant, variants_matching

BOOKKEEPING = {"transformers_version", "_name_or_path", "use_cache", "gradient_checkpointing"}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_registry_equals_the_published_config(variant, shared_data):
    v = VARIANTS[variant]
    published = json.loads((shared_data / "geneformer_model_configs" / v.hf_subfolder / "config.json").read_text())
    ours = v.bert_config()
    for key in set(published) - BOOKKEEPING:
        assert ours.get(key) == published[key], key
    assert set(ours) <= set(published) | {"torch_dtype", "classifier_dropout"}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_registry_sha256_equals_the_lfs_pointers(variant, shared_data):
    pointers = json.loads((shared_data / "geneformer_model_configs/hf_lfs_pointers.json").read_text())["lfs_objects"]
    v = VARIANTS[variant]
    for wf in v.weight_files:
        assert pointers[f"{v.hf_subfolder}/{wf.filename}"] == {"lfs_sha256": wf.sha256, "size": wf.size}


def test_variant_lookup():
    assert get_variant("Geneformer-V2-316M") is VARIANTS["V2-316M"]
    with pytest.raises(UnknownVariantError, match="known variants: V1-10M"):
        get_variant("V9")
    assert [v.name for v in variants_matching(VARIANTS["V2-104M"].bert_config())] == ["V2-104M", "V2-104M_CLcancer"]


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


def test_stage_stats_against_hand_computed_values():
    ref = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    cand = torch.tensor([[1.0, 2.5], [3.0, 3.0]])
    s = StageStats()
    s.add(ref[:1], cand[:1])
    s.add(ref[1:], cand[1:])  # two micro-batches add up to the whole
    r = s.result()
    assert r["max_abs"] == 1.0 and r["mean_abs"] == pytest.approx(1.5 / 4)
    assert r["rel_l2"] == pytest.approx(math.sqrt(1.25 / 30))
    assert r["cosine"] == pytest.approx(27.0 / math.sqrt(30 * 25.25))


def test_stage_stats_topk_and_nonfinite():
    ref = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    s = StageStats(topk=True)
    s.add(ref, torch.tensor([[0.0, 3.0, 2.0], [2.0, 1.0, 0.0]]))
    assert s.result()["top1"] == 0.5
    s.add(ref, torch.tensor([[float("nan"), 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert s.result()["nonfinite"] == 1 and math.isnan(s.result()["rel_l2"])


def test_a_parity_case_that_raises_is_an_error_verdict_and_the_run_goes_on(monkeypatch):
    from harness.parity import run as parity_run

    def run_parity(spec, reference, candidate):
        if spec.precision == "bf16":
            raise ValueError("No dot product attention backend is available for the provided inputs.")
        verdict = {
            "record": "verdict",
            "variant": spec.variant,
            "backend": spec.candidate,
            "precision": spec.precision,
            "status": "skipped",
            "reason": "stub",
        }
        return [verdict], verdict

    monkeypatch.setattr(parity_run, "run_parity", run_parity)
    specs = [parity_run.ParitySpec("V1-10M", "te", p) for p in ("bf16", "fp32")]
    lines = []
    records = parity_run.run_specs(specs, None, None, progress=lines.append)
    assert [r["status"] for r in records] == ["error", "skipped"]
    assert records[0]["reason"].startswith("ValueError: No dot product attention backend")
    assert "ERROR: ValueError" in lines[0]


def test_git_state_says_whether_the_tree_was_dirty(monkeypatch):
    from harness.environment import git_state

    monkeypatch.delenv("GFQUAL_COMMIT", raising=False)
    local = git_state()
    assert isinstance(local["git_dirty"], bool) and len(local["git_commit"]) == 40  # this checkout knows
    monkeypatch.setenv("GFQUAL_COMMIT", "abc123")
    assert git_state() == {"git_commit": "abc123", "git_dirty": None}  # a copied tree: unknown, not "clean"
    monkeypatch.setenv("GFQUAL_GIT_DIRTY", "1")
    assert git_state() == {"git_commit": "abc123", "git_dirty": True}

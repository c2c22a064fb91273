"""The sweep engine and the regression gate, on the CPU."""

from __future__ import annotations

import json

import pytest
import torch

from harness.cli import main
from harness.perf import sweep as sweep_mod
from harness.perf.gate import GateError, compare
from harness.perf.flops import forward_flops
from harness.perf.sweep import Sweep, run_sweep
from harness.results import make_result
from models.registry import VARIANTS


def _sweep(tmp_path, **over):
    spec = {"name": "t", "variants": ["V1-10M"], "backends": ["hf-eager", "te"], "precisions": ["fp32"],
            "layouts": ["full", "padded-context", "bucketed"], "batches": [2], "seq_lens": [32],
            "warmup": 1, "repeats": 2, **over}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    return Sweep.load(tmp_path / "s.json")


def test_sweep_file_errors(tmp_path):
    with pytest.raises(ValueError, match="shipped sweeps: .*cpu-smoke"):
        Sweep.load("no-such-sweep")
    (tmp_path / "bad.json").write_text(json.dumps({"name": "x", "variants": [], "backends": [], "precisions": [],
                                                   "batches": [], "layouts": ["diagonal"]}))
    with pytest.raises(ValueError, match="unknown layouts"):
        Sweep.load(tmp_path / "bad.json")


def test_points_layouts_and_skips(tmp_path):
    rows = run_sweep(_sweep(tmp_path, seq_lens=[512]), tmp_path / "out.json", progress=lambda _: None)
    assert len(rows) == 6
    hf = {r["layout"]: r for r in rows if r["backend"] == "hf-eager"}
    assert all(r["status"] == "ok" and r["cells_per_s"] > 0 for r in hf.values())
    assert hf["full"]["padding_fraction"] == 0 and hf["padded-context"]["padding_fraction"] > 0
    assert hf["bucketed"]["padding_fraction"] < hf["padded-context"]["padding_fraction"]
    te = [r for r in rows if r["backend"] == "te"]
    assert all(r["status"] == "skipped" and "CUDA GPU" in r["reason"] for r in te)


def test_interrupted_sweep_resumes_and_failures_are_rows(tmp_path, monkeypatch):
    sweep = _sweep(tmp_path, backends=["hf-eager"], layouts=["full"], batches=[1, 2, 3])
    calls = []
    real_run = sweep_mod.Runner.run

    def flaky(self, point):
        calls.append(point.batch)
        if point.batch == 2 and len(calls) == 2:
            raise KeyboardInterrupt
        if point.batch == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return real_run(self, point)

    monkeypatch.setattr(sweep_mod.Runner, "run", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, tmp_path / "o.json", progress=lambda _: None)
    assert len((tmp_path / "o.json.partial.jsonl").read_text().splitlines()) == 1

    def oom_as_row(self, point):
        calls.append(point.batch)
        if point.batch == 3:
            return {"record": "point", **point.__dict__, "status": "oom", "reason": "out of memory"}
        return real_run(self, point)

    monkeypatch.setattr(sweep_mod.Runner, "run", oom_as_row)
    rows = run_sweep(sweep, tmp_path / "o.json", progress=lambda _: None)
    assert calls == [1, 2, 2, 3]  # batch 1 was not measured again
    assert [r["status"] for r in rows] == ["ok", "ok", "oom"]


def test_runner_records_out_of_memory_instead_of_crashing(tmp_path, monkeypatch):
    sweep = _sweep(tmp_path, backends=["hf-eager"], layouts=["full"])

    def boom(*_a, **_k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")

    monkeypatch.setattr(sweep_mod, "time_batches", boom)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    (row,) = run_sweep(sweep, tmp_path / "o.json", progress=lambda _: None)
    assert row["status"] == "oom" and "out of memory" in row["reason"]


def test_flops_count_by_hand():
    v = VARIANTS["V1-10M"]
    H, I, V_, L = 256, 512, 25426, 6
    expected = L * (2 * 64 * (4 * H * H + 2 * H * I) + 4 * 64 * 64 * H) + 2 * 64 * (H * H + H * V_)
    assert forward_flops(v, 1, 64) == expected


def _perf(gpu, cells_per_s, spread=0.01):
    rec = {"record": "point", "status": "ok", "variant": "V2-104M", "backend": "te", "precision": "bf16",
           "layout": "full", "batch": 8, "seq_len": 4096, "cells_per_s": cells_per_s, "spread": spread}
    return make_result("perf", [rec], {}, {}, env={"gpu_name": gpu})


def test_gate_flags_real_slowdowns_only(tmp_path):
    base = _perf("H100", 100.0)
    assert not compare(base, _perf("H100", 97.0))[0]["regressed"]  # within 5%
    assert compare(base, _perf("H100", 90.0))[0]["regressed"]
    assert not compare(base, _perf("H100", 90.0, spread=0.2))[0]["regressed"]  # within the noise
    with pytest.raises(GateError, match="baseline is from H100, this run from H200"):
        compare(base, _perf("H200", 100.0))
    (tmp_path / "b.json").write_text(json.dumps(base))
    (tmp_path / "r.json").write_text(json.dumps(_perf("H100", 80.0)))
    assert main(["perf-gate", "--baseline", str(tmp_path / "b.json"), "--run", str(tmp_path / "r.json")]) == 1


def test_max_batch_search_bisects_and_records_kernel_failures(tmp_path, monkeypatch):
    sweep = _sweep(tmp_path, backends=["hf-eager"], layouts=[], batches=[], max_batch_search=True)
    runner = sweep_mod.Runner(sweep, None)
    limit = {"oom_above": 37, "crash_at": None}

    def fake_warm(backend, batches, passes):
        n = batches[0].input_ids.shape[0]
        if limit["crash_at"] is not None and n >= limit["crash_at"]:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if n > limit["oom_above"]:
            raise torch.OutOfMemoryError("out of memory")
        return batches

    monkeypatch.setattr(sweep_mod, "warm", fake_warm)
    monkeypatch.setattr(sweep_mod.Runner, "_backend_for", lambda self, point: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    row = runner.max_batch("V1-10M", "hf-eager", "fp32", 8)
    assert (row["status"], row["max_batch"], row["capped"]) == ("ok", 37, False)
    limit["crash_at"] = 16
    row = runner.max_batch("V1-10M", "hf-eager", "fp32", 8)
    assert (row["status"], row["max_batch"], row["failed_at_batch"]) == ("error", 8, 16)
    assert "illegal memory access" in row["reason"]

"""The sweep engine and the regression gate, on the CPU."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from harness.cli import main
from harness.perf import sweep as sweep_mod
from harness.perf.flops import forward_flops
from harness.perf.gate import GateError, compare
from harness.perf.noise import needs_remeasure, remeasure_repeats
from harness.perf.sweep import Sweep, run_sweep
from harness.perf.timing import Timing
from harness.results import make_result
from models.errors import KernelCrash
from models.registry import VARIANTS


def _sweep(tmp_path, **over):
    spec = {
        "name": "t",
        "variants": ["V1-10M"],
        "backends": ["hf-eager", "te"],
        "precisions": ["fp32"],
        "layouts": ["full", "padded-context", "bucketed"],
        "batches": [2],
        "seq_lens": [32],
        "warmup": 1,
        "repeats": 2,
        "pool_cells": 8,
        **over,
    }
    (tmp_path / "s.json").write_text(json.dumps(spec))
    return Sweep.load(tmp_path / "s.json")


def test_sweep_file_errors(tmp_path):
    with pytest.raises(ValueError, match="shipped sweeps: .*cpu-smoke"):
        Sweep.load("no-such-sweep")
    (tmp_path / "bad.json").write_text(
        json.dumps(
            {"name": "x", "variants": [], "backends": [], "precisions": [], "batches": [], "layouts": ["diagonal"]}
        )
    )
    with pytest.raises(ValueError, match="unknown layouts"):
        Sweep.load(tmp_path / "bad.json")


def test_points_layouts_and_skips(tmp_path):
    rows = run_sweep(_sweep(tmp_path, seq_lens=[512]), tmp_path / "out.json", progress=lambda _: None)
    assert len(rows) == 6
    hf = {r["layout"]: r for r in rows if r["backend"] == "hf-eager"}
    assert all(r["status"] == "reported" and r["cells_per_s"] > 0 for r in hf.values())
    assert hf["full"]["padding_fraction"] == 0 and hf["padded-context"]["padding_fraction"] > 0
    assert hf["bucketed"]["padding_fraction"] < hf["padded-context"]["padding_fraction"]
    te = [r for r in rows if r["backend"] == "te"]
    assert all(r["status"] == "skipped" and "CUDA GPU" in r["reason"] for r in te)


def test_interrupted_sweep_resumes_and_failures_are_rows(tmp_path, monkeypatch):
    sweep = _sweep(tmp_path, backends=["hf-eager"], layouts=["full"], batches=[1, 2, 3])
    calls = []
    real_run = sweep_mod.SweepRunner.run

    def flaky(self, point):
        calls.append(point.batch)
        if point.batch == 2 and len(calls) == 2:
            raise KeyboardInterrupt
        if point.batch == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return real_run(self, point)

    monkeypatch.setattr(sweep_mod.SweepRunner, "run", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, tmp_path / "o.json", progress=lambda _: None)
    assert len((tmp_path / "o.json.partial.jsonl").read_text().splitlines()) == 1

    def oom_as_row(self, point):
        calls.append(point.batch)
        if point.batch == 3:
            return {"record": "point", **point.__dict__, "status": "skipped", "reason": "out of memory"}
        return real_run(self, point)

    monkeypatch.setattr(sweep_mod.SweepRunner, "run", oom_as_row)
    rows = run_sweep(sweep, tmp_path / "o.json", progress=lambda _: None)
    assert calls == [1, 2, 2, 3]  # batch 1 was not measured again
    assert [r["status"] for r in rows] == ["reported", "reported", "skipped"]


def test_a_kernel_fault_is_recorded_and_stops_the_sweep_to_resume_in_a_fresh_process(tmp_path, monkeypatch):
    sweep = _sweep(tmp_path, backends=["hf-eager"], layouts=["full"], batches=[1, 2])
    real_run = sweep_mod.SweepRunner.run

    def crash_first(self, point):
        if point.batch == 1:
            return {
                "record": "point",
                **point.__dict__,
                "status": "error",
                "reason": "AcceleratorError: CUDA error: an illegal memory access was encountered",
            }
        return real_run(self, point)

    monkeypatch.setattr(sweep_mod.SweepRunner, "run", crash_first)
    with pytest.raises(KernelCrash, match="run the same command again to resume") as crash:
        run_sweep(sweep, tmp_path / "o.json", progress=lambda _: None)
    assert crash.value.exit_code == 1
    rows = run_sweep(sweep, tmp_path / "o.json", progress=lambda _: None)  # the rerun
    assert [r["status"] for r in rows] == ["error", "reported"]


def test_runner_records_out_of_memory_instead_of_crashing(tmp_path, monkeypatch):
    sweep = _sweep(tmp_path, backends=["hf-eager"], layouts=["full"])

    def boom(*_a, **_k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")

    monkeypatch.setattr(sweep_mod, "time_batches", boom)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    (row,) = run_sweep(sweep, tmp_path / "o.json", progress=lambda _: None)
    assert row["status"] == "skipped" and row["reason"].startswith("out of memory: CUDA out of memory")


def test_a_noisy_or_short_point_is_measured_again_with_more_repeats():
    quiet, noisy = Timing(10.0, 9.8, 10.4, 10), Timing(10.0, 8.0, 14.0, 10)
    assert not needs_remeasure(quiet, with_telemetry=False)
    assert needs_remeasure(noisy, with_telemetry=False)  # (14 − 8) / 10 = 60% > 10%
    assert needs_remeasure(quiet, with_telemetry=True)  # 10 × 10 ms = 0.1 s of telemetry < 1 s
    assert remeasure_repeats(noisy, with_telemetry=False) == 30
    assert remeasure_repeats(quiet, with_telemetry=True) == 100  # enough for 1 s


def test_a_noisy_point_is_recorded_from_its_remeasurement(tmp_path, monkeypatch):
    sweep = _sweep(tmp_path, backends=["hf-eager"], layouts=["full"], batches=[1])
    asked = []

    def fake_time(_backend, _batches, repeats, _step=None):
        asked.append(repeats)
        return Timing(10.0, 5.0, 20.0, repeats) if len(asked) == 1 else Timing(10.0, 9.9, 10.2, repeats)

    monkeypatch.setattr(sweep_mod, "time_batches", fake_time)
    (row,) = run_sweep(sweep, tmp_path / "o.json", progress=lambda _: None)
    assert asked == [sweep.repeats, 3 * sweep.repeats]
    assert (row["remeasured"], row["noisy"], row["repeats"]) == (True, False, 3 * sweep.repeats)
    assert row["spread"] == pytest.approx(0.03)


def test_the_encoder_alone_is_a_point_of_its_own(tmp_path):
    """Embedding runs the encoder without the MLM head: the sweep measures it apart, with its own
    work count, and its own largest batch."""
    sweep = _sweep(tmp_path, backends=["hf-sdpa"], layouts=["full"], batches=[2], forwards=["mlm", "encoder"])
    mlm, encoder = run_sweep(sweep, tmp_path / "o.json", progress=lambda _: None)
    assert (mlm["forward"], encoder["forward"]) == ("mlm", "encoder") and mlm["key"] != encoder["key"]
    work = {r["forward"]: r["shape_tflops"] * r["median_ms"] for r in (mlm, encoder)}
    v = VARIANTS["V1-10M"]
    head = 2 * 2 * mlm["seq_len"] * (v.hidden_size**2 + v.hidden_size * v.vocab_size)
    assert work["mlm"] - work["encoder"] == pytest.approx(head / 1e9, rel=1e-6)


def test_flops_count_by_hand():
    v = VARIANTS["V1-10M"]
    H, I, V_, L = 256, 512, 25426, 6
    expected = L * (2 * 64 * (4 * H * H + 2 * H * I) + 4 * 64 * 64 * H) + 2 * 64 * (H * H + H * V_)
    assert forward_flops(v, 64, 64 * 64) == expected


def _perf(gpu, cells_per_s, spread=0.01):
    rec = {
        "record": "point",
        "status": "reported",
        "variant": "V2-104M",
        "backend": "te",
        "precision": "bf16",
        "layout": "full",
        "batch": 8,
        "seq_len": 4096,
        "cells_per_s": cells_per_s,
        "spread": spread,
    }
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
    runner = sweep_mod.SweepRunner(sweep, None)
    limit = {"oom_above": 37, "crash_at": None}

    def fake_warm(backend, batches, passes, _step=None):
        n = batches[0].input_ids.shape[0]
        if limit["crash_at"] is not None and n >= limit["crash_at"]:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if n > limit["oom_above"]:
            raise torch.OutOfMemoryError("out of memory")
        return batches

    monkeypatch.setattr(sweep_mod, "warm", fake_warm)
    monkeypatch.setattr(sweep_mod.SweepRunner, "_backend_for", lambda self, point: SimpleNamespace(forward=None))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    row = runner.max_batch("V1-10M", "hf-eager", "fp32", 8)
    assert (row["status"], row["max_batch"], row["capped"]) == ("reported", 37, False)
    limit["crash_at"] = 16
    row = runner.max_batch("V1-10M", "hf-eager", "fp32", 8)
    assert (row["status"], row["max_batch"], row["failed_at_batch"]) == ("error", 8, 16)
    assert "illegal memory access" in row["reason"]


# --- packed (THD) batches and realistic cell pools -----------------------------------------------


def test_pack_lays_cells_end_to_end_with_boundaries_and_positions():
    from harness.data.batching import pack

    v2 = VARIANTS["V2-104M"]
    cells = [[2, 10, 11, 3], [2, 12, 3], [2, 13, 14, 15, 16, 3]]
    p = pack(cells, v2)
    assert p.input_ids.tolist() == [t for c in cells for t in c]
    assert p.cu_seqlens.tolist() == [0, 4, 7, 13] and p.cu_seqlens.dtype == torch.int32
    assert p.position_ids.tolist() == [0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4, 5]
    assert p.max_seqlen == 6 and p.n_cells == 3 and p.real_tokens == 13 and p.lengths.tolist() == [4, 3, 6]
    assert p.gene_mask.tolist() == [t not in (2, 3) for c in cells for t in c]
    fp8 = pack(cells, v2, multiple=16)  # FP8 rounds the token count up with one filler segment
    assert fp8.input_ids.numel() == 16 and fp8.cu_seqlens.tolist() == [0, 4, 7, 13, 16]
    assert fp8.n_cells == 3 and fp8.real_tokens == 13 and not fp8.gene_mask[13:].any()


def test_unpadding_a_padded_batch_keeps_every_real_token_in_place():
    from harness.data.batching import collate, pack

    v1 = VARIANTS["V1-10M"]
    cells = [[5, 6, 7], [8], [9, 10]]
    padded = collate(cells, v1)
    packed, where = padded.packed()
    direct = pack(cells, v1)
    assert torch.equal(packed.input_ids, direct.input_ids) and torch.equal(packed.cu_seqlens, direct.cu_seqlens)
    assert torch.equal(padded.input_ids.flatten()[where], packed.input_ids)
    assert torch.equal(packed.position_ids, direct.position_ids)


def test_pack_to_budget_keeps_order_and_never_exceeds_the_budget():
    from harness.data.batching import pack_to_budget

    v1 = VARIANTS["V1-10M"]
    gen = torch.Generator().manual_seed(0)
    cells = [list(range(5, 5 + int(n))) for n in torch.randint(1, 60, (50,), generator=gen)]
    for multiple in (1, 16):
        packs = pack_to_budget(cells, v1, budget=128, multiple=multiple)
        assert all(p.input_ids.numel() <= 128 and p.input_ids.numel() % multiple == 0 for p in packs)
        flat = [p.input_ids[: p.real_tokens].tolist() for p in packs]
        assert sum(flat, []) == sum(cells, [])  # every cell once, in order
        assert sum(p.n_cells for p in packs) == 50
    with pytest.raises(ValueError, match="more tokens than the packing budget"):
        pack_to_budget([list(range(200))], v1, budget=128)


def test_packed_flops_count_each_cells_own_attention():
    from harness.data.batching import collate, pack
    from harness.perf.flops import batch_flops, useful_flops

    v = VARIANTS["V1-10M"]
    cells = [[5] * 3, [6] * 5]
    assert batch_flops(v, pack(cells, v)) == forward_flops(v, 8, 3 * 3 + 5 * 5)
    assert batch_flops(v, collate(cells, v)) == forward_flops(v, 10, 2 * 5 * 5)
    # the work judged against the ceiling is the real cells' alone, whatever the layout
    assert (
        useful_flops(v, collate(cells, v, length=32))
        == useful_flops(v, pack(cells, v, 16))
        == batch_flops(v, pack(cells, v))
    )


def test_packed_layout_rows_say_which_backend_takes_them_and_where_cells_came_from(tmp_path):
    rows = run_sweep(
        _sweep(tmp_path, layouts=["packed", "bucketed"], backends=["hf-eager", "te-packed"], seq_lens=[64]),
        tmp_path / "o.json",
        progress=lambda _: None,
    )
    by = {(r["backend"], r["layout"]): r for r in rows}
    assert by["hf-eager", "packed"]["status"] == "skipped"
    assert "te-packed" in by["hf-eager", "packed"]["reason"]
    assert by["te-packed", "packed"]["status"] == "skipped" and "CUDA GPU" in by["te-packed", "packed"]["reason"]
    bucketed = by["hf-eager", "bucketed"]
    assert bucketed["status"] == "reported" and bucketed["cells"] == 8
    assert bucketed["cells_source"].startswith("synthetic") and 8 <= bucketed["mean_cell_tokens"] <= 64


def test_cell_pool_draws_real_tokenized_cells(make_tokenized):
    from harness.data.stream import read_tokenized
    from harness.perf.sweep import cell_pool

    v1, tok = VARIANTS["V1-10M"], make_tokenized(12, seed=3) / "tok"
    real = {tuple(c[:256]) for c in read_tokenized(tok)["input_ids"]}
    pool = cell_pool(v1, 256, 30, seed=0, cells_from=str(tok))
    assert len(pool.cells) == 30 and all(tuple(c) in real for c in pool.cells)
    assert "12 tokenized cells" in pool.source and "with replacement" in pool.source
    with pytest.raises(Exception, match="tokenized for V1-10M"):
        cell_pool(VARIANTS["V2-104M"], 256, 4, seed=0, cells_from=str(tok))


def test_kernel_kinds_come_from_names_and_nothing_is_dropped():
    from harness.perf.kernel_kinds import OTHER, kernel_kind

    names = {
        "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_32_64x256x64": "attention",
        "nvjet_sm90_qqtst_192x192_128x4_1x2_h_bz_coopB_bias_TNN": "gemm",
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64": "gemm",
        "void transformer_engine::normalization::ln_fwd_general_kernel<float>": "layernorm",
        "void transformer_engine::quantize_kernel<fp8e4m3>": "fp8 cast/amax",
        "triton_poi_fused_add_0": OTHER,
    }
    assert {n: kernel_kind(n) for n in names} == names


def test_profile_without_a_gpu_says_so(capsys):
    import torch

    from harness.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["profile", "--variant", "V1-10M"]) == 3
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_a_training_step_is_a_point_of_its_own_counted_as_three_forwards(tmp_path):
    """The training sweep (forward ``train``): each backend's step is timed as its own point, and
    its work is three forwards' (the backward's products are twice the forward's)."""
    sweep = _sweep(
        tmp_path, backends=["hf-sdpa", "te-format-torch"], layouts=["full"], batches=[2], forwards=["mlm", "train"]
    )
    rows = run_sweep(sweep, tmp_path / "o.json", progress=lambda _: None)
    assert {(r["backend"], r["forward"], r["status"]) for r in rows} == {
        (b, f, "reported") for b in ("hf-sdpa", "te-format-torch") for f in ("mlm", "train")
    }
    for backend in ("hf-sdpa", "te-format-torch"):
        mlm, train = (next(r for r in rows if (r["backend"], r["forward"]) == (backend, f)) for f in ("mlm", "train"))
        assert train["shape_tflops"] * train["median_ms"] == pytest.approx(3 * mlm["shape_tflops"] * mlm["median_ms"])


def test_a_training_step_updates_every_weight_and_keeps_each_batchs_mask():
    from harness.backends import build_backend
    from harness.data.synthetic import synthetic_batch
    from harness.precision import get_precision
    from harness.training import TrainStep
    from models.hf import random_hf_model

    v = VARIANTS["V1-10M"]
    backend = build_backend("te-format-torch", random_hf_model(v, 0), get_precision("fp32"), "cpu", training=True)
    step = TrainStep(backend, v)
    before = {n: p.detach().clone() for n, p in backend.model.named_parameters()}
    batch = synthetic_batch(v, 2, 32, seed=0)
    first, second = float(step(batch)), float(step(batch))
    assert second < first  # the same batch and mask, one AdamW step later
    assert len(step._masked) == 1
    unchanged = [n for n, p in backend.model.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, unchanged

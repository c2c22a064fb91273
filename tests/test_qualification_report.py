"""The qualification report, rendered from small fixture results: content, not only files."""

from __future__ import annotations

from harness.results import make_result, stamp
from reports.document import gpu_class
from reports.qualification import render_report


def _md(results, out) -> str:
    """The rendered report.md of ``results``."""
    render_report(results, out)
    return (out / "report.md").read_text()


def _env(gpu, commit="c1", te="2.20.2"):
    return {
        "gpu_name": gpu,
        "driver": "580",
        "cuda": "13.0",
        "torch": "2.11",
        "te": te,
        "transformers": "5.17",
        "git_commit": commit,
    }


def _parity(gpu, status="pass", commit="c1"):
    stage = {
        "record": "stage",
        "variant": "V2-104M",
        "backend": "te",
        "precision": "fp32",
        "stage": "layer.0.output",
        "layer": 0,
        "rel_l2": 1e-7,
        "status": "pass",
    }
    verdict = {
        "record": "verdict",
        "variant": "V2-104M",
        "backend": "te",
        "precision": "fp32",
        "status": status,
        "worst_stage": "logits",
        "worst_rel_l2": 2e-6,
        "first_diverging_stage": "layer.3.attention" if status == "fail" else None,
    }
    skipped = {
        "record": "verdict",
        "variant": "V2-104M",
        "backend": "te",
        "precision": "mxfp8",
        "status": "skipped",
        "reason": "mxfp8 needs compute capability 10.0 (Blackwell)",
    }
    return make_result(
        "parity", [stage, verdict, skipped], {"source": "random-init", "seed": 0}, {}, env=_env(gpu, commit)
    )


def _perf(gpu, cells_per_s, created=None):
    points = [
        {
            "record": "point",
            "status": "reported",
            "variant": "V2-104M",
            "backend": b,
            "precision": "bf16",
            "layout": "full",
            "batch": 8,
            "seq_len": 4096,
            "cells_per_s": v,
            "spread": 0.01,
            "repeats": 10,
            "peak_mem_bytes": 2**31,
            "energy_per_cell_j": 3.0,
            "ceiling_fraction": 0.4,
        }
        for b, v in (("te", cells_per_s), ("hf-sdpa", 100.0))
    ]
    points.append({**points[0], "precision": "fp8-delayed", "cells_per_s": cells_per_s * 1.25})
    points.append(
        {
            "record": "point",
            "status": "error",
            "variant": "V2-104M",
            "backend": "te",
            "layout": "full",
            "precision": "fp8-current-dpa",
            "batch": 8,
            "seq_len": 4096,
            "reason": "ValueError: No dot product attention backend is available",
        }
    )
    r = make_result("perf", points, {"source": "random-init"}, {"sweep": {"name": "gpu-baseline"}}, env=_env(gpu))
    if created:
        r["created"] = created
    return r


def test_gpu_classes():
    assert [gpu_class(n) for n in ("NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA GB200", None)] == [
        "H100",
        "H200",
        "GB200",
        "CPU",
    ]


def test_report_content_from_fixtures(tmp_path):
    results = [_parity("NVIDIA H100 80GB HBM3"), _perf("NVIDIA H100 80GB HBM3", 220.0), _perf("NVIDIA H200", 240.0)]
    md, page_html = _md(results, tmp_path), (tmp_path / "report.html").read_text()
    assert "**Overall: INCOMPLETE**" in md and "Per GPU: H100 INCOMPLETE; H200 INCOMPLETE." in md
    assert "| parity | PASS · 1 of 1 pass | NOT RUN · nothing measured |" in md
    assert "| perf | PASS · 1 of 1 pass | PASS · 1 of 1 pass |" in md  # each GPU's first run: its baseline
    assert "| downstream | NOT RUN · nothing measured | NOT RUN · nothing measured |" in md
    assert "<p class='overall incomplete'>Overall: INCOMPLETE</p>" in page_html  # never green
    assert (
        "| V2-104M | te | PASS · worst logits 2.00e-06 | skipped: mxfp8 needs compute capability 10.0 (Blackwell) |"
        in md
    )
    # GPUs side by side, with the ones that have no results saying so
    assert (
        "| V2-104M | te | bf16 | full | 8 | not measured | 220 (n=10, range 1%) | 240 (n=10, range 1%) | not measured |"
        in md
    )
    assert "| V2-104M | full | 8 | not measured | 2.2 (range 1%) | 2.4 (range 1%) | not measured |" in md  # TE over HF
    # self-contained page: images inline, nothing fetched
    assert "data:image/png;base64," in page_html and "http://" not in page_html and "https://" not in page_html
    assert "| V2-104M | full | 8 | not measured | 1.25 (range 1%) | 1.25 (range 1%) | not measured |" in md  # FP8
    # a point that did not run keeps its row and says why
    assert "| H100 | te | fp8-current-dpa | full | V2-104M | 8 | error: ValueError: No dot product attention" in md
    for stem in ("throughput-vs-batch", "memory-vs-batch", "energy-per-cell", "fp8-speedup"):
        assert (tmp_path / f"perf-{stem}.png").read_bytes()[:4] == b"\x89PNG"


def test_report_perf_writes_the_qualification_plots(tmp_path):
    import json

    from harness.cli import main

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "p.json").write_text(json.dumps(_perf("NVIDIA H100 80GB HBM3", 220.0)))
    assert main(["report-perf", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "plots")]) == 0
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "energy-per-cell.png",
        "fp8-speedup.png",
        "memory-vs-batch.png",
        "throughput-vs-batch.png",
    ]


def test_report_flags_failures_mixed_versions_and_regressions(tmp_path):
    results = [
        _parity("NVIDIA H100 80GB HBM3", status="fail", commit="c2"),
        _perf("NVIDIA H100 80GB HBM3", 220.0, created="2026-01-01T00:00:00+00:00"),
        _perf("NVIDIA H100 80GB HBM3", 150.0, created="2026-02-01T00:00:00+00:00"),
    ]
    results[1]["env"]["te"] = "2.19.0"
    md = _md(results, tmp_path)
    assert "**Overall: FAIL**" in md and "| parity | FAIL · 0 of 1 pass; 1 failing (tolerance) |" in md
    assert "| perf | FAIL · 1 of 3 pass; 2 failing (regression) |" in md
    assert "first diverging: layer.3.attention" in md
    assert "Mixed code versions" in md and "Mixed TransformerEngine versions: 2.19.0, 2.20.2" in md
    assert "| H100 | perf | gpu-baseline: V2-104M te bf16 full B=8 x 4096 | regression | 220 -> 150 cells/s" in md


def test_runs_of_one_sweep_over_other_variants_are_not_compared():
    """gfqual bench --sweep X --variants ... measures part of a sweep: two such runs of disjoint
    variants (V1 on V1 tokens, V2 on V2 tokens) are two baselines, not a run against a baseline."""
    from harness.verdict.perf import perf_checks

    first = _perf("NVIDIA H100 80GB HBM3", 220.0, created="2026-01-01T00:00:00+00:00")
    second = _perf("NVIDIA H100 80GB HBM3", 150.0, created="2026-02-01T00:00:00+00:00")
    first["config"]["sweep"]["variants"] = ["V1-10M"]
    second["config"]["sweep"]["variants"] = ["V2-104M"]
    checks = perf_checks([first, second])
    assert [c.status for c in checks] == ["pass", "pass"] and all(c.case == "gpu-baseline baseline" for c in checks)
    second["config"]["sweep"]["variants"] = ["V1-10M"]
    assert "fail" in [c.status for c in perf_checks([first, second])]


def test_report_rejects_unknown_schema(tmp_path, capsys):
    import json

    from harness.cli import main

    bad = _perf("NVIDIA H100 80GB HBM3", 1.0)
    bad["schema_version"] = 7
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "x.json").write_text(json.dumps(bad))
    assert main(["report", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o")]) == 2
    assert "schema_version 7 is not supported" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_fp8_attention_failures_are_shown_but_do_not_gate(tmp_path):
    result = _parity("NVIDIA H100 80GB HBM3")
    result["records"].append(
        stamp(
            {
                "record": "verdict",
                "variant": "V2-104M",
                "backend": "te",
                "precision": "fp8-delayed-dpa",
                "status": "fail",
                "worst_stage": "layer.0.attention",
                "worst_rel_l2": 0.95,
                "first_diverging_stage": "layer.0.attention",
            },
        )
    )
    md = _md([result], tmp_path)
    assert "| parity | PASS · 1 of 1 pass; 1 TE beta (FP8 attention) failures shown, not gating |" in md
    assert "FAIL · worst layer.0.attention 0.95 (first diverging: layer.0.attention) · TE beta, not gating" in md


def test_multi_gpu_rows_form_a_scaling_table_not_single_gpu_rows(tmp_path):
    one = _perf("NVIDIA H200", 240.0)
    eight = _perf("NVIDIA H200", 1800.0)
    eight["config"]["world_size"] = 8
    for rec in eight["records"]:
        rec["world_size"] = 8
    md = _md([one, eight], tmp_path)
    assert "| H200 | V2-104M | te | bf16 | full | 8 | 8 | 1.8e+03 | 7.5 | 0.938 |" in md
    assert (
        "| V2-104M | te | bf16 | full | 8 | not measured | not measured | 240 (n=10, range 1%) | not measured |" in md
    )


def test_a_parity_case_that_errored_fails_the_gate_and_says_why(tmp_path):
    result = _parity("NVIDIA H100 80GB HBM3")
    result["records"].append(
        stamp(
            {
                "record": "verdict",
                "variant": "V2-104M",
                "backend": "te",
                "precision": "bf16",
                "status": "error",
                "reason": "ValueError: No dot product attention backend",
            },
        )
    )
    md = _md([result], tmp_path)
    assert "| parity | ERROR · 1 of 2 pass; 1 failing (error) |" in md
    assert "ERROR: ValueError: No dot product attention backend" in md


def _kernel(precision, status, violations="", rel_l2=0.05):
    return stamp(
        {
            "record": "attention_kernel",
            "variant": "V2-104M",
            "backend": "te-attention-kernel",
            "precision": precision,
            "status": status,
            "violations": violations,
            "seq_len": 4096,
            "heads": 12,
            "head_dim": 64,
            "rel_l2": rel_l2,
            "peer_rel_l2": 2.2e-3,
            "repeat_max_abs": 0.0,
        },
    )


def test_attention_kernel_rows_gate_outside_fp8_attention(tmp_path):
    result = _parity("NVIDIA H100 80GB HBM3")
    result["records"] += [
        _kernel("bf16", "pass", rel_l2=2.3e-3),
        _kernel("fp8-delayed-dpa", "fail", "not deterministic: the same input twice differs", 1.4),
    ]
    md = _md([result], tmp_path)
    assert "| parity | PASS · 2 of 2 pass; 1 TE beta" in md  # the bf16 kernel counts; the TE beta one does not
    assert "| H100 | V2-104M | 12 × 64 | 4096 | fp8-delayed-dpa | 1.4 | 0.0022 | 0 | FAIL · not deterministic" in md
    result["records"][-2] = _kernel("bf16", "fail", "rel_l2=0.3 > 0.0037", 0.3)
    assert "| parity | FAIL · 1 of 2 pass; 1 failing (tolerance); 1 TE beta" in _md([result], tmp_path)


def test_fp8_speedups_of_recipes_that_fail_parity_are_marked_not_counted(tmp_path):
    parity = _parity("NVIDIA H100 80GB HBM3")
    parity["records"].append(
        stamp(
            {
                "record": "verdict",
                "variant": "V2-104M",
                "backend": "te",
                "precision": "fp8-delayed",
                "status": "fail",
                "worst_stage": "layer.0.attention",
                "worst_rel_l2": 0.9,
                "first_diverging_stage": "layer.0.attention",
            },
        )
    )
    md = _md([parity, _perf("NVIDIA H100 80GB HBM3", 220.0), _perf("NVIDIA H200", 240.0)], tmp_path)
    # H100's fp8-delayed failed parity there; H200 has no failing verdict
    assert "| V2-104M | full | 8 | not measured | 1.25 (range 1%) (fails parity: not counted) | 1.25 (range 1%) |" in md


def test_kernel_profiles_show_each_kinds_share(tmp_path):
    profile = {
        "record": "kernel_profile",
        "status": "reported",
        "variant": "V2-316M",
        "backend": "te-fused",
        "precision": "fp8-delayed",
        "layout": "full",
        "batch": 8,
        "seq_len": 4096,
        "kernel_ms": 50.0,
        "ms_attention": 20.0,
        "ms_gemm": 17.0,
        "ms_layernorm": 5.0,
        "ms_fp8_cast_amax": 5.0,
        "ms_other": 3.0,
    }
    step = {**profile, "forward": "train", "batch": 4, "kernel_ms": 100.0}  # a training step's profile
    result = make_result("perf", [profile, step], {"source": "random-init"}, {}, env=_env("NVIDIA H100 80GB HBM3"))
    md = _md([result], tmp_path)
    assert (
        "| H100 | V2-316M | te-fused | fp8-delayed | to MLM logits | 8 | 4096 | 50 | 20 (40%) | 17 (34%) | 5 (10%) "
        "| 5 (10%) | 3 (6%) |" in md
    )
    assert "| fp8-delayed | training step (forward, backward, AdamW) | 4 | 4096 | 100 | 20 (20%) |" in md


def test_a_failed_attention_kernel_check_marks_that_gpus_speedups(tmp_path):
    parity = make_result(
        "parity",
        [{**_kernel("fp8-delayed", "fail", "rel_l2=0.7 > 0.2", 0.7)}],
        {"source": "random-init"},
        {},
        env=_env("NVIDIA H200"),
    )
    md = _md([parity, _perf("NVIDIA H100 80GB HBM3", 220.0), _perf("NVIDIA H200", 240.0)], tmp_path)
    assert "| V2-104M | full | 8 | not measured | 1.25 (range 1%) | 1.25 (range 1%) (fails parity: not counted) |" in md


def test_workload_tables_lead_and_pair_rows_of_one_run(tmp_path):
    """End-to-end rows come first; a speed-up divides two rows of the same file; an FP8 recipe asked
    of HF (no FP8 path) is left out, a TE row that could not run says why."""

    def row(backend, precision, cps, **extra):
        return {
            "record": "workload",
            "workload": "embed",
            "variant": "V2-104M",
            "backend": backend,
            "precision": precision,
            "status": "reported",
            "cells": 5031,
            "mean_length": 1652.0,
            "cells_per_s": cps,
            "pipeline_efficiency": 0.93,
            "gpu_util_mean": 90.0,
            "max_tokens": 348160,
            **extra,
        }

    skipped = {
        "record": "workload",
        "workload": "embed",
        "variant": "V2-104M",
        "precision": "fp8-delayed",
        "cells": 5031,
        "mean_length": 1652.0,
        "status": "skipped",
        "reason": "no FP8 path",
    }
    run = make_result(
        "perf",
        [
            row("hf-sdpa", "bf16", 400.0),  # written before issue 28: efficiency over its static forward
            row("te-packed", "bf16", 1000.0, plain_loop="te-loop"),
            {**skipped, "backend": "hf-sdpa"},
            {**skipped, "backend": "te-packed", "reason": "no GPU"},
        ],
        {"source": "random-init"},
        {"workload": "embed"},
        env=_env("NVIDIA H100 80GB HBM3"),
    )
    other = make_result(
        "perf", [row("hf-sdpa", "bf16", 100.0)], {"source": "random-init"}, {}, env=_env("NVIDIA H100 80GB HBM3")
    )
    cli = make_result(
        "perf",
        [
            {
                "record": "run",
                "status": "reported",
                "workload": "embed",
                "variant": "V2-104M",
                "backend": "te-packed",
                "precision": "bf16",
                "cells": 5031,
                "cells_per_s": 1000.0,
                "startup_s": 21.0,
                "startup_imports_s": 19.0,
                "gpu_util_mean": 90.0,
            }
        ],
        {"source": "random-init"},
        {},
        env=_env("NVIDIA H100 80GB HBM3"),
    )
    md = _md([run, other, cli, _perf("NVIDIA H100 80GB HBM3", 220.0)], tmp_path)
    perf = md[md.index("## Performance") :]
    assert perf.index("embedding end to end") < perf.index("| variant | backend | precision | layout | batch |")
    assert "| te-packed | bf16 | 1e+03 | 2.50× | 93% of te-loop |" in perf  # 1000 / 400 from the same file, not / 100
    assert "| hf-sdpa | bf16 | 400 | 1.00× | 93% of its static forward |" in perf
    assert "| te-packed | fp8-delayed | skipped: no GPU |" in perf and "| hf-sdpa | fp8-delayed |" not in perf
    assert "| gfqual embed: GPU |" in perf and "| 21 | 19 |" in perf


def test_a_pass_for_one_checkpoint_never_hides_a_fail_for_another(tmp_path):
    gpu = "NVIDIA H100 80GB HBM3"
    failed = _parity(gpu, status="fail")
    failed["weights"] = {"source": "checkpoint", "candidate": {"sha256": "a" * 64}}
    passed = _parity(gpu, status="pass")
    passed["weights"] = {"source": "checkpoint", "candidate": {"sha256": "b" * 64}}
    passed["created"] = "2099-01-01T00:00:00+0000"  # the newer run
    md = _md([failed, passed], tmp_path)
    assert (
        "| V2-104M · checkpoint aaaaaaaaaaaa | te | FAIL" in md
        and "| V2-104M · checkpoint bbbbbbbbbbbb | te | PASS" in md
    )
    assert "**Overall: FAIL**" in md
    again = _parity(gpu, status="pass")  # the same checkpoint fixed and run again: it does replace the FAIL
    again["weights"], again["created"] = failed["weights"], "2099-01-02T00:00:00+0000"
    assert "FAIL" not in _md([failed, passed, again], tmp_path).split("## Parity")[1].split("##")[0]


def test_gfqual_report_exits_with_the_verdict_and_writes_verdict_json(tmp_path, capsys):
    """CI reads the verdict: 0 only for PASS, 1 for FAIL and for INCOMPLETE, with no flag to pass."""
    import json
    from pathlib import Path

    from harness.cli import main
    from harness.results import write_result

    repo = Path(__file__).resolve().parents[1]
    committed = ["--results", str(repo / "results" / "h100"), str(repo / "results" / "h200")]
    assert main(["report", *committed, "--out", str(tmp_path / "a")]) == 1
    verdict = json.loads((tmp_path / "a" / "verdict.json").read_text())
    # TE bf16 V2-316M hit an illegal memory access in the largest-batch search on both GPUs (a known
    # TE defect, with its reproduction); the H100's downstream FP8 comparison failed
    assert verdict["overall"] == "FAIL" and {g: v["verdict"] for g, v in verdict["gpus"].items()} == {
        "H100": "FAIL",
        "H200": "FAIL",
    }
    crashes = [f for f in verdict["failures"] if f["gate"] == "reliability"]
    assert {f["gpu"] for f in crashes} == {"H100", "H200"} and {f["class"] for f in crashes} == {"te-defect"}
    assert all("illegal memory access" in f["detail"] and f["repro"].startswith("gfqual profile") for f in crashes)
    assert verdict["gpus"]["H100"]["gates"]["downstream"]["status"] == "fail"
    assert "A100: out of scope (no plan names it, no results)" in verdict["not_covered"]
    assert any("trained weights" in n for n in verdict["not_covered"])
    write_result(_parity("NVIDIA H100 80GB HBM3"), tmp_path / "passed" / "parity.json")
    passed = ["report", "--results", str(tmp_path / "passed"), "--out", str(tmp_path / "b")]
    assert main(passed) == 1  # parity alone: the other gates did not run on this GPU
    assert json.loads((tmp_path / "b" / "verdict.json").read_text())["overall"] == "INCOMPLETE"
    write_result(_parity("NVIDIA H100 80GB HBM3", status="fail"), tmp_path / "failed" / "parity.json")
    assert main(["report", "--results", str(tmp_path / "failed"), "--out", str(tmp_path / "c")]) == 1
    verdict = json.loads((tmp_path / "c" / "verdict.json").read_text())
    assert verdict["overall"] == "FAIL" and verdict["gpus"]["H100"]["verdict"] == "FAIL"
    assert verdict["failures"][0]["files"] == ["failed/parity.json"]
    assert "**Overall: FAIL**" in (tmp_path / "c" / "report.md").read_text()
    assert "<p class='overall fail'>Overall: FAIL</p>" in (tmp_path / "c" / "report.html").read_text()


def test_parity_tables_say_how_many_cells_and_tokens_a_case_rests_on(tmp_path):
    result = _parity("NVIDIA H100 80GB HBM3")
    for r in result["records"]:
        if r.get("record") == "verdict" and r["status"] != "skipped":
            r.update(n_cells=4, seq_len=4096)
    md = _md([result], tmp_path)
    assert "H100: each parity case is judged on 4 cells of up to 4,096 tokens." in md


def test_a_noisy_point_is_flagged_with_its_range(tmp_path):
    noisy = _perf("NVIDIA H100 80GB HBM3", 220.0)
    noisy["records"][0]["spread"] = 0.3
    md = _md([noisy], tmp_path)
    assert "| V2-104M | te | bf16 | full | 8 | not measured | ⚠ 220 (n=10, range 30%) |" in md
    assert "the 1 of 3 points whose repeats vary by more than 10%" in md


def test_memory_of_the_encoder_is_shown_beside_the_full_forward(tmp_path):
    run = _perf("NVIDIA H100 80GB HBM3", 220.0)
    encoder = {**run["records"][0], "forward": "encoder", "peak_mem_bytes": 2**29}
    run["records"].append(stamp(encoder))
    run["records"].append(
        stamp(
            {
                "record": "max_batch",
                "variant": "V2-104M",
                "backend": "te",
                "precision": "bf16",
                "layout": "full",
                "seq_len": 4096,
                "forward": "encoder",
                "status": "reported",
                "batch": 700,
                "max_batch": 700,
                "capped": False,
            },
        )
    )
    md = _md([run], tmp_path)
    assert "| H100 | V2-104M | te | bf16 | 8 | 4096 | 2.00 | 0.50 | 75% |" in md
    assert "| H100 | V2-104M | te | bf16 | encoder output (embedding) | 4096 | 700 | largest that fits" in md
    assert "| V2-104M | te | bf16 | full | 8 | not measured | 220 (n=10, range 1%) |" in md  # not the encoder's row

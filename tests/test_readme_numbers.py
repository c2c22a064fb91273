"""The measured numbers in README.md and PERFORMANCE.md are the committed results', at their
rounding: a re-measured file that changes a number fails here until the docs say the new one."""

from __future__ import annotations

import json
import re
from pathlib import Path

from harness.results import read_results
from reports.perf_points import perf_points, same_run_ratios

REPO = Path(__file__).resolve().parents[1]
H100 = REPO / "results" / "h100"
DOCS = (REPO / "README.md").read_text() + "\n" + (REPO / "PERFORMANCE.md").read_text()


def _rows(name):
    return json.loads((H100 / name).read_text())["records"]


def _row(name, backend, precision="bf16"):
    return next(r for r in _rows(name) if r["backend"] == backend and r["precision"] == precision)


def _n(x):
    return f"{round(x):,}"


def test_readme_end_to_end_table_is_the_committed_results():
    readme = DOCS
    te_cli = _rows("embed-cli-V2-104M-default-h100.json")[0]
    hf_cli = _rows("embed-cli-V2-104M-hf-sdpa-h100.json")[0]
    expected = [
        f"| {_n(hf_cli['cells_per_s'])} cells/s | {_n(te_cli['cells_per_s'])} cells/s | "
        f"{te_cli['cells_per_s'] / hf_cli['cells_per_s']:.2f}× |"
    ]
    for name, variant in (
        ("workload-embed-V2-104M-real-h100.json", "V2-104M"),
        ("workload-embed-V2-316M-real-h100.json", "V2-316M"),
        ("workload-embed-V1-10M-real-h100.json", "V1-10M"),
    ):
        hf, te = _row(name, "hf-sdpa"), _row(name, "te-packed")
        expected.append(f"| embedding, {variant}, real cells ×9 | {_n(hf['cells_per_s'])} | {_n(te['cells_per_s'])}")
        expected.append(f"{te['cells_per_s'] / hf['cells_per_s']:.2f}× |")
    fp8 = _row("workload-embed-V2-316M-real-h100.json", "te-packed", "fp8-delayed")
    te316 = _row("workload-embed-V2-316M-real-h100.json", "te-packed")
    expected.append(f"(fp8-delayed {_n(fp8['cells_per_s'])}: {fp8['cells_per_s'] / te316['cells_per_s']:.2f}× bf16)")
    synth = "workload-embed-V2-104M-synth-h100.json"
    hf, comp, te = _row(synth, "hf-sdpa"), _row(synth, "hf-sdpa-compile"), _row(synth, "te-packed")
    expected.append(
        f"| {_n(hf['cells_per_s'])} (compiled: {_n(comp['cells_per_s'])}) | {_n(te['cells_per_s'])} | "
        f"{te['cells_per_s'] / hf['cells_per_s']:.2f}× ({te['cells_per_s'] / comp['cells_per_s']:.2f}× vs compiled) |"
    )
    for name, variant in (
        ("workload-perturb-V2-104M-real-h100.json", "V2-104M"),
        ("workload-perturb-V1-10M-real-h100.json", "V1-10M"),
    ):
        hf, te = _row(name, "hf-sdpa"), _row(name, "te-packed")
        expected.append(
            f"{variant} | {_n(hf['perturbations_per_s'])} /s | {_n(te['perturbations_per_s'])} /s | "
            f"{te['perturbations_per_s'] / hf['perturbations_per_s']:.2f}× |"
        )
        expected.append(f"{te['projected_hours']:.2f} h ({variant})")
    for name in ("workload-embed-V2-104M-real-h100.json", "workload-embed-V2-316M-real-h100.json"):
        te = _row(name, "te-packed")
        expected += [f"{te['pipeline_efficiency']:.0%}", f"{te['gpu_util_mean']:.0f}%"]
    hf, te = (_row("workload-embed-V2-104M-real-h100-1ace9e9.json", b) for b in ("hf-sdpa", "te-packed"))
    expected.append(
        f"{_n(hf['cells_per_s'])} vs {_n(te['cells_per_s'])} cells/s, {te['cells_per_s'] / hf['cells_per_s']:.2f}×"
    )
    v1 = _row("workload-embed-V1-10M-real-h100.json", "te-packed")
    expected.append(f"{v1['pipeline_efficiency']:.0%} efficiency, {v1['gpu_util_mean']:.0f}% busy")
    expected.append(f"{te_cli['startup_s']:.1f} s\nbefore its first batch, {te_cli['startup_imports_s']:.1f} s of it")
    for variant in ("V2-104M", "V2-316M"):
        fp8 = json.loads((H200 / f"workload-embed-{variant}-fp8-h200.json").read_text())["records"]
        (row,) = [r for r in fp8 if r["record"] == "workload" and r["precision"] == "fp8-delayed"]
        best = json.loads((H200 / f"workload-embed-{variant}-best-h200.json").read_text())["records"]
        (te,) = [r for r in best if r["record"] == "workload" and r["backend"] == "te-packed"]
        expected.append(f"{_n(row['cells_per_s'])}")
        expected.append(f"({row['cells_per_s'] / te['cells_per_s']:.2f}×")
    missing = [e for e in expected if e not in readme]
    assert not missing, f"README numbers not found as in the results: {missing}"


def _ratio(results, key, over):
    return same_run_ratios(results, lambda k: over if k == key else None)[key]


def test_readme_static_table_and_memory_are_the_committed_results():
    readme = DOCS
    h100 = read_results(H100, kind="perf")
    h200 = read_results(REPO / "results" / "h200", kind="perf")
    full = {"V1-10M": 2048, "V2-104M": 4096, "V2-316M": 4096}

    def vs_hf(variant, layout):
        return _ratio(
            h100,
            (variant, "te", "bf16", layout, 16, full[variant]),
            (variant, "hf-sdpa", "bf16", layout, 16, full[variant]),
        )["H100"]

    points = perf_points(h100)
    ceiling = [points[(v, "te", "bf16", "full", 16, 4096)]["H100"]["ceiling_fraction"] for v in ("V2-104M", "V2-316M")]
    packed = [
        _ratio(h100, (v, "te-packed", "bf16", "packed", 16, 4096), (v, "te", "bf16", "padded-context", 16, 4096))[
            "H100"
        ]
        for v in ("V2-104M", "V2-316M")
    ]
    fp8 = _ratio(
        h100 + h200,
        ("V2-316M", "te-fused", "fp8-delayed", "full", 16, 4096),
        ("V2-316M", "te-fused", "bf16", "full", 16, 4096),
    )
    expected = [
        f"| TE vs HF sdpa, real cells padded to 4,096, batch 16 | {vs_hf('V2-104M', 'padded-context'):.2f}× | "
        f"{vs_hf('V2-316M', 'padded-context'):.2f}× |",
        f"| TE vs HF sdpa, every cell 4,096 long, batch 16 | {vs_hf('V2-104M', 'full'):.2f}× | "
        f"{vs_hf('V2-316M', 'full'):.2f}× |",
        f"(full, batch 16) | {ceiling[0]:.0%} | {ceiling[1]:.0%} |",
        f"| {fp8['H100']:.2f}× (H200: {fp8['H200']:.2f}×) |",
        f"| packed over padding to the context (TE bf16, batch 16) | {packed[0]:.2f}× | {packed[1]:.2f}× |",
        f"({vs_hf('V1-10M', 'full'):.2f}× at batch 16",
    ]
    memory = json.loads((H100 / "perf-gpu-memory-h100.json").read_text())["records"]
    peak = {(r["variant"], r["backend"], r["forward"]): r["peak_mem_bytes"] for r in memory if r["record"] == "point"}
    largest = {(r["variant"], r["backend"], r["forward"]): r for r in memory if r["record"] == "max_batch"}
    shares = [
        1 - peak[(v, "hf-sdpa", "encoder")] / peak[(v, "hf-sdpa", "mlm")] for v in ("V1-10M", "V2-104M", "V2-316M")
    ]
    expected.append(f"{shares[0]:.0%} of HF's peak on V1-10M, {shares[1]:.0%} on V2-104M, {shares[2]:.0%} on V2-316M")
    expected.append(
        f"(HF and TE: {largest[('V2-104M', 'hf-sdpa', 'mlm')]['max_batch']} and "
        f"{largest[('V2-104M', 'te', 'mlm')]['max_batch']} → "
        f"{largest[('V2-104M', 'te', 'encoder')]['max_batch']} cells)"
    )
    expected.append(
        f"from {largest[('V2-316M', 'hf-sdpa', 'mlm')]['max_batch']} to "
        f"{largest[('V2-316M', 'hf-sdpa', 'encoder')]['max_batch']}"
    )
    crashes = [largest[("V2-316M", "te", f)] for f in ("mlm", "encoder")]
    assert all(c["status"] == "error" and c["failed_at_batch"] == 512 for c in crashes)
    assert "illegal memory access at batch 512 through the encoder" in readme
    missing = [e for e in expected if e not in readme]
    assert not missing, f"README numbers not found as in the results: {missing}"


def test_readme_downstream_numbers_are_the_committed_results():
    readme = DOCS
    acc = {}
    same = {}
    for v in ("V1-10M", "V2-104M"):
        for r in _rows(f"downstream-cardiomyopathy-{v}-h100-bc3454b.json"):
            if r["record"] == "summary":
                acc[(v, r["backend"], r["precision"])] = r["accuracy_mean"]
            if r["record"] == "agreement" and r["judged"]:
                same[(v, r["backend"], r["precision"])] = (r["label_agreement"], r["status"])
    expected = [
        f"HF fp32 scores accuracy {acc[('V1-10M', 'hf-sdpa', 'fp32')]:.3f} (V1-10M) and "
        f"{acc[('V2-104M', 'hf-sdpa', 'fp32')]:.3f} (V2-104M)",
        f"drops to {acc[('V2-104M', 'te', 'fp8-current')]:.3f} against HF bf16's "
        f"{acc[('V2-104M', 'hf-sdpa', 'bf16')]:.3f} and labels {same[('V2-104M', 'te', 'fp8-current')][0]:.0%}",
    ]
    assert same[("V2-104M", "te", "fp8-current")][1] == "fail"
    missing = [e for e in expected if e not in readme]
    assert not missing, f"README numbers not found as in the results: {missing}"


def test_readme_h200_and_training_numbers_are_the_committed_results():
    """The H200 workload and training paragraphs quote these files at the README's rounding."""
    readme = DOCS
    h200 = REPO / "results" / "h200"

    def rows(name):
        return json.loads((h200 / name).read_text())["records"]

    def pick(name, variant, backend, precision="bf16", layout=None):
        return next(
            r
            for r in rows(name)
            if r["variant"] == variant
            and r["backend"] == backend
            and r["precision"] == precision
            and r.get("layout", layout) == layout
        )

    expected = []
    for name, variant in (
        ("workload-embed-V2-real-h200.json", "V2-104M"),
        ("workload-embed-V2-real-h200.json", "V2-316M"),
        ("workload-embed-V1-10M-real-h200.json", "V1-10M"),
    ):
        hf, te = pick(name, variant, "hf-sdpa"), pick(name, variant, "te-packed")
        ratio = te["cells_per_s"] / hf["cells_per_s"]
        cells = " cells/s" if variant == "V2-104M" else ""
        expected.append(f"{_n(hf['cells_per_s'])} → {_n(te['cells_per_s'])}{cells} ({ratio:.2f}×)")
    hf = pick("workload-perturb-V2-104M-real-h200.json", "V2-104M", "hf-sdpa")
    te = pick("workload-perturb-V2-104M-real-h200.json", "V2-104M", "te-packed")
    expected.append(f"{_n(hf['perturbations_per_s'])} → {_n(te['perturbations_per_s'])} /s")
    training = "perf-gpu-training-V2-h200.json"
    hf_316 = pick(training, "V2-316M", "hf-sdpa", layout="bucketed")
    te_316 = pick(training, "V2-316M", "te", layout="bucketed")
    packed_316 = pick(training, "V2-316M", "te-packed", layout="packed")
    fp8_316 = pick(training, "V2-316M", "te-packed", "fp8-delayed", layout="packed")
    expected += [
        f"HF sdpa {_n(hf_316['tokens_per_s'])} tokens/s",
        f"TE bf16 {_n(te_316['tokens_per_s'])} ({te_316['tokens_per_s'] / hf_316['tokens_per_s']:.2f}×",
        f"{_n(packed_316['tokens_per_s'])} packed",
        f"`te-packed`, {packed_316['tokens_per_s'] / hf_316['tokens_per_s']:.2f}×)",
        f"{_n(fp8_316['tokens_per_s'])}, {fp8_316['tokens_per_s'] / packed_316['tokens_per_s']:.2f}× TE bf16",
    ]
    parity = rows("parity-training-h200.json")
    verdicts = [r for r in parity if r["record"].endswith("_verdict") and r["status"] != "skipped"]
    fp8_tail = [
        r["max_step_loss_rel_diff"]
        for r in parity
        if r["record"] == "trajectory_verdict" and r["variant"] == "V2-104M" and r["status"] == "fail"
    ]
    peer_tail = next(
        r["peer_max_step_loss_rel_diff"]
        for r in parity
        if r["record"] == "trajectory_verdict" and r["variant"] == "V2-104M" and r["precision"] == "fp8-delayed"
    )
    fp32 = next(
        r
        for r in parity
        if r["record"] == "backward_verdict" and r["variant"] == "V2-104M" and r["precision"] == "fp32"
    )
    profile = {r["precision"]: r for r in rows("perf-kernel-profile-train-V2-316M-h200.json") if r["backend"] == "te"}
    bf16, fp8 = profile["bf16"], profile["fp8-delayed"]
    expected += [
        f"{sum(r['status'] == 'pass' for r in verdicts)} of {len(verdicts)} checks pass",
        f"layer 8's fc1 bias at {fp32['worst_rel_l2']:.2e}".replace("e-0", "e-"),
        f"{min(fp8_tail):.3f}–{max(fp8_tail):.3f} nats off near step 150, where HF bf16 is {peer_tail:.3f} off",
        f"TE bf16 at {bf16['kernel_ms']:.1f} ms of kernels and fp8-delayed at {fp8['kernel_ms']:.1f} ms",
        f"GEMMs from {bf16['ms_gemm']:.1f} to {fp8['ms_gemm']:.1f} ms",
        f"adds {fp8['ms_fp8_cast_amax'] - bf16['ms_fp8_cast_amax']:.1f} ms of casts "
        f"({bf16['ms_fp8_cast_amax']:.1f} → {fp8['ms_fp8_cast_amax']:.1f} ms)",
        f"needs the step at {bf16['kernel_ms'] / 1.2:.1f} ms",
    ]
    classify = [r for r in rows("parity-training-classify-h200.json") if r["record"].endswith("_verdict")]
    judged = [r for r in classify if r["status"] != "skipped"]
    block = next(r for r in classify if r["variant"] == "V2-104M" and r["precision"] == "fp8-block" and "steps" in r)
    lag = {
        r["precision"]: r["max_step_loss_rel_diff"]
        for r in classify
        if r["variant"] == "V2-104M" and r["record"] == "trajectory_verdict"
    }
    expected += [
        f"passes {sum(r['status'] == 'pass' for r in judged)} of {len(judged)}",
        f"({lag['fp8-delayed']:.2f} and {lag['fp8-current']:.2f} nats off)",
        f"{block['loss_last_candidate']:.2f} at the end against HF's {block['loss_last_reference']:.4f}",
    ]
    text = " ".join(readme.split())  # the paragraphs wrap
    missing = [e for e in expected if e not in text]
    assert not missing, missing


H200 = REPO / "results" / "h200"


def test_readme_best_against_best_is_the_committed_results():
    """Issue 28's headline: each backend at its calibrated best, held to its plain loop."""
    from harness.perf.workload import best_against_best

    readme = DOCS
    expected, flat = [], []  # flat: checked against the text with its line breaks as spaces
    loops = {"hf": [], "te": []}
    for variant in ("V2-104M", "V2-316M", "V1-10M"):
        records = json.loads((H200 / f"workload-embed-{variant}-best-h200.json").read_text())["records"]
        (best,) = best_against_best(records)
        rows = {r["backend"]: r for r in records if r["record"] == "workload"}
        hf, te = rows["hf-sdpa"], rows["te-packed"]
        expected.append(
            f"| {variant} | {_n(best['hf_cells_per_s'])} ({best['hf_max_tokens']:,}"
            + (" tokens" if variant == "V2-104M" else "")
            + f", padded to {hf['pad_multiple']}) | {_n(best['te_cells_per_s'])} ({best['te_max_tokens']:,}, "
            f"{te['input_layout']}) | {best['ratio']:.2f}× | {best['equal_budget_ratio']:.2f}× | "
            f"{hf['pipeline_efficiency']:.0%} | {te['pipeline_efficiency']:.0%} | {te['ceiling_fraction']:.0%} |"
        )
        loops["hf"].append(_n(hf["plain_loop_cells_per_s"]))
        loops["te"].append(_n(te["plain_loop_cells_per_s"]))
        if variant == "V1-10M":
            busy = f"NVML seeing the GPU {te['gpu_util_mean']:.0f}% busy"
            flat.append(f"{_n(te['cells_per_s'])} (median of {te['passes']}), {busy}")
            expected.append(f"passes ranged {te['passes_range']:.0%} for TE")
            expected.append(f"{hf['passes_range']:.1%} for HF")
    expected.append(f"HF {', '.join(loops['hf'][:2])} and {loops['hf'][2]} cells/s")
    expected.append(f"TE {', '.join(loops['te'][:2])} and {loops['te'][2]}")
    # the loops' own ratio: what the engines, each at its loop, can reach at best
    for variant, at in (("V2-104M", 0), ("V2-316M", 1)):
        te_loop, hf_loop = (float(loops[f][at].replace(",", "")) for f in ("te", "hf"))
        flat.append(f"{loops['te'][at]} / {loops['hf'][at]} = {te_loop / hf_loop:.2f}× on {variant}")
    before = json.loads((H200 / "workload-embed-V1-10M-best-h200-4bdde5c.json").read_text())["records"]
    calibrated = {r["max_tokens"]: r for r in before if r["record"] == "calibration" and r["backend"] == "te-packed"}
    te_before = next(r for r in before if r["record"] == "workload" and r["backend"] == "te-packed")
    sample, best = _n(calibrated[1048576]["cells_per_s"]), _n(te_before["cells_per_s"])
    flat.append(f"to {sample} at that same budget on the calibration sample and {best} at its best")
    first = json.loads((H200 / "workload-embed-V1-10M-best-h200-5e7f261.json").read_text())["records"]
    te_first = next(r for r in first if r["record"] == "workload" and r["backend"] == "te-packed")
    expected.append(f"({te_first['gpu_util_mean']:.0f}% in the first run, at 5e7f261, {_n(te_first['cells_per_s'])}")
    cli = json.loads((H200 / "embed-cli-V2-104M-default-h200.json").read_text())["records"][0]
    expected.append(
        f"TE's budget of {cli['max_tokens']:,} tokens): {cli['startup_s']:.1f} s before the\n"
        f"first batch, {cli['startup_imports_s']:.1f} s"
    )
    log = (H200 / "profiles" / "embed-startup-V2-104M-h200.log").read_text()
    walls = re.findall(r"^WALL run \d+: (\S+) s$", log, re.M)  # run 1 is the committed file's run
    expected.append(f"the whole command\n{walls[0]} s")
    others = re.findall(r"start-up (\S+) s;", log)[1:]
    expected.append(f"{others[0]} and {others[1]} s\nbefore the first batch")
    profile = (H200 / "profiles" / "embed-profile-V1-10M-h200-5e7f261.log").read_text()
    assert "budget 1048576: 7 batches, 5031 cells; unprofiled pass 0.366 s" in profile
    assert "batch plan alone 0.097 s" in profile.split("budget 1048576")[1].split("\n")[0]
    old = json.loads((H200 / "workload-embed-V1-10M-real-h200.json").read_text())["records"]
    expected.append(f"from {_n(next(r for r in old if r['backend'] == 'te-packed')['cells_per_s'])} cells/s (b5f85e9)")
    missing = [e for e in expected if e not in readme] + [e for e in flat if e not in " ".join(readme.split())]
    assert not missing, f"README numbers not found as in the results: {missing}"


def _import_seconds(name: str) -> dict[str, float]:
    """Each module's cumulative import seconds in a committed ``python -X importtime`` table."""
    seconds: dict[str, float] = {}
    for line in (H200 / "profiles" / name).read_text().splitlines()[1:]:
        if line.startswith("import time:"):  # stderr also holds the run's warnings
            _, cumulative, module = (p.strip() for p in line.removeprefix("import time:").split("|"))
            seconds[module] = max(seconds.get(module, 0), int(cumulative) / 1e6)
    return seconds


def test_readme_import_tree_is_the_committed_importtime_table():
    readme = DOCS
    seconds = _import_seconds("importtime-embed-V2-104M-te-packed-h200-5e7f261.txt")
    now = _import_seconds("importtime-embed-V2-104M-te-packed-h200-8fe99b2.txt")
    assert "transformers" not in now  # the claim that TE's path no longer imports it
    said = (
        f"torch {now['torch']:.1f} s,\nTransformerEngine {now['transformer_engine']:.1f} s with "
        f"{now['torch._dynamo.comptime']:.1f} s of `torch._dynamo`, anndata {now['anndata']:.1f} s, no transformers",
        f"alone take {now['torch'] + now['transformer_engine']:.1f} s here",
    )
    missing = [s for s in said if s not in readme]
    assert not missing, missing
    said = (
        f"TransformerEngine {seconds['transformer_engine']:.1f} s, {seconds['torch._dynamo.comptime']:.1f} s of it",
        f"{seconds['transformer_engine.jax']:.1f} s its JAX extension",
        f"torch {seconds['torch']:.1f} s;",
        f"transformers ({seconds['transformers']:.1f} s",
        f"anndata ({seconds['anndata']:.1f} s",
    )
    missing = [s for s in said if s not in readme.replace("\n", " ")]
    assert not missing, missing


def test_readme_padding_numbers_are_the_committed_count():
    readme = DOCS.replace("\n", " ")
    log = (H200 / "profiles" / "padding-count.log").read_text()
    found = re.findall(r"^(\S+): engine pads (\S+%).*plain loop (\S+%)", log, re.M)
    pads = {variant: (engine, loop) for variant, engine, loop in found}
    assert f"{pads['V2-104M'][0]} padding against {pads['V2-104M'][1]} on the V2 cells" in readme
    assert pads["V2-316M"] == pads["V2-104M"]
    assert f"({pads['V1-10M'][0]} / {pads['V1-10M'][1]})" in readme


def test_the_readme_states_the_committed_verdict():
    """What the README says the committed H100 + H200 results' verdict is, by GPU and failure class."""
    from collections import Counter

    verdict = json.loads((REPO / "reports" / "rendered" / "qualification" / "verdict.json").read_text())
    readme = (REPO / "README.md").read_text()
    assert verdict["overall"] == "FAIL" and "**FAIL on both GPUs**" in readme
    assert {g: v["verdict"] for g, v in verdict["gpus"].items()} == {"H100": "FAIL", "H200": "FAIL"}
    classes = Counter((f["gpu"], f["gate"], f["class"]) for f in verdict["failures"] if not f["waived"])
    assert set(classes) == {
        ("H100", "reliability", "te-defect"),
        ("H200", "reliability", "te-defect"),
        ("H200", "training", "tolerance"),
        ("H100", "downstream", "tolerance"),
        ("H200", "training", "inconclusive"),
        ("H200", "training", "instability"),
    }
    assert classes[("H200", "training", "tolerance")] == 5 and "H200, five cases" in readme
    assert f"{classes[('H200', 'training', 'inconclusive')]} held-out\ntraining bands that cannot judge" in readme
    assert f"and {classes[('H200', 'training', 'instability')]} failures of the learning rate" in readme


def test_the_readme_training_table_is_the_reports():
    """Does FP8 train like bf16? The README's rows are the report's recipe table (trains like bf16,
    over how many bands that could judge; the best-against-best speed-up), and its fp8-block
    divergence counts are the diagnostic's runs."""
    import gzip

    from harness.diagnostics.fp8_block_divergence import summary
    from reports.training_band import recipe_table

    results = read_results(REPO / "results" / "h200")
    table = recipe_table(results)
    readme = DOCS
    for gpu, recipe, answer, could, _gap, speed in table.rows:
        if recipe == "bf16":
            continue
        yes = answer.split(" ")[0]
        count, where = could.split(": ")
        v1 = where.replace(" cell classifier lr 5e-05", " classifier")
        ratio = speed.split(" ")[0]
        row = f"| {recipe} | {yes}, {count}: {v1} |"
        assert row in readme, row
        assert f"| {ratio} |" in readme.split(row)[1].split("\n")[0], (recipe, ratio)
    # the memorized-batch column names the verdict's class of each V2-104M trajectory failure
    verdict = json.loads((REPO / "reports" / "rendered" / "qualification" / "verdict.json").read_text())
    for recipe in ("fp8-delayed", "fp8-current", "fp8-block"):
        classes = {
            objective: f["class"]
            for f in verdict["failures"]
            for objective in ("mlm", "classify")
            if f["gpu"] == "H200" and f["case"].startswith(f"{objective} trajectory V2-104M te {recipe} ")
        }
        cell = readme.split(f"| {recipe} | yes,")[1].split("|")[1]
        expected = (
            " MLM and classifier off (`tolerance`) "
            if classes == {"mlm": "tolerance", "classify": "tolerance"}
            else f" MLM off (`{classes['mlm']}`); classifier diverges (`{classes['classify']}`) "
        )
        assert cell == expected, (recipe, classes, cell)
    runs = []
    for name in ("seeds01", "seeds23"):
        with gzip.open(
            REPO / "results" / "h200" / "profiles" / f"fp8-block-divergence-{name}-h200.jsonl.gz", "rt"
        ) as f:
            runs += [json.loads(line) for line in f][1:]

    def blew_up(arm):
        mine = [r for r in runs if r["name"] == arm]
        return sum(r["loss"][-1] > 0.1 for r in mine), len(mine)  # ended collapsed (0.48-1.04), not near 1e-3

    assert blew_up("block") == (1, 4) and "at lr 5e-5 it blows up in 1 of 4 seeds" in readme
    assert blew_up("te-bf16-lr2x") == (1, 4) and blew_up("te-bf16-lr4x") == (4, 4)
    assert "TE bf16 in 1 of 4 at twice the rate and 4 of 4 at four" in readme
    assert blew_up("block-lr0.5x") == (0, 4) and "fp8-block never at half" in " ".join(readme.split())
    assert all(summary(r) for r in runs)


def test_the_fp8_training_levers_are_the_committed_sweep():
    """PERFORMANCE.md's te-fused and best-against-best training numbers are the levers sweep's points."""
    points = {
        (r["backend"], r["precision"], r["layout"]): r["cells_per_s"]
        for r in json.loads((H200 / "perf-gpu-training-fp8-levers-h200.json").read_text())["records"]
        if r.get("record") == "point" and r["status"] == "reported"
    }
    flat = " ".join(DOCS.split())
    fused_bf16, fused_current = (
        points[("te-fused", "bf16", "bucketed")],
        points[("te-fused", "fp8-current", "bucketed")],
    )
    assert (
        f"{fused_bf16:.1f} cells/s in bf16 and {fused_current:.1f} with fp8-current ({fused_current / fused_bf16:.2f}×)"
        in flat
    )
    best_bf16 = max(v for (b, p, _), v in points.items() if p == "bf16")
    assert best_bf16 == points[("te-packed", "bf16", "packed")] and f"packed bf16 at {best_bf16:.1f}" in flat
    for recipe in ("fp8-current", "fp8-delayed", "fp8-block"):
        best = max(v for (b, p, _), v in points.items() if p == recipe)
        assert f"{recipe} {best:.1f}" in flat and f"({best / best_bf16:.2f}×)" in flat, recipe

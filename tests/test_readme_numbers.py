"""The README's end-to-end performance numbers are the committed results', at the README's rounding:
a re-measured file that changes a number fails here until the README says the new one."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
H100 = REPO / "results" / "h100"


def _rows(name):
    return json.loads((H100 / name).read_text())["records"]


def _row(name, backend, precision="bf16"):
    return next(r for r in _rows(name) if r["backend"] == backend and r["precision"] == precision)


def _n(x):
    return f"{round(x):,}"


def test_readme_end_to_end_table_is_the_committed_results():
    readme = (REPO / "README.md").read_text()
    te_cli = _rows("embed-cli-V2-104M-default-h100.json")[0]
    hf_cli = _rows("embed-cli-V2-104M-hf-sdpa-h100.json")[0]
    expected = [f"| {_n(hf_cli['cells_per_s'])} cells/s | {_n(te_cli['cells_per_s'])} cells/s | "
                f"{te_cli['cells_per_s'] / hf_cli['cells_per_s']:.2f}× |"]
    for name, variant in (("workload-embed-V2-104M-real-h100.json", "V2-104M"),
                          ("workload-embed-V2-316M-real-h100.json", "V2-316M"),
                          ("workload-embed-V1-10M-real-h100.json", "V1-10M")):
        hf, te = _row(name, "hf-sdpa"), _row(name, "te-packed")
        expected.append(f"| embedding, {variant}, real cells ×9 | {_n(hf['cells_per_s'])} | {_n(te['cells_per_s'])}")
        expected.append(f"{te['cells_per_s'] / hf['cells_per_s']:.2f}× |")
    fp8 = _row("workload-embed-V2-316M-real-h100.json", "te-packed", "fp8-delayed")
    te316 = _row("workload-embed-V2-316M-real-h100.json", "te-packed")
    expected.append(f"(fp8-delayed {_n(fp8['cells_per_s'])}: {fp8['cells_per_s'] / te316['cells_per_s']:.2f}× bf16)")
    synth = "workload-embed-V2-104M-synth-h100.json"
    hf, comp, te = _row(synth, "hf-sdpa"), _row(synth, "hf-sdpa-compile"), _row(synth, "te-packed")
    expected.append(f"| {_n(hf['cells_per_s'])} (compiled: {_n(comp['cells_per_s'])}) | {_n(te['cells_per_s'])} | "
                    f"{te['cells_per_s'] / hf['cells_per_s']:.2f}× ({te['cells_per_s'] / comp['cells_per_s']:.2f}× vs compiled) |")
    for name, variant in (("workload-perturb-V2-104M-real-h100.json", "V2-104M"),
                          ("workload-perturb-V1-10M-real-h100.json", "V1-10M")):
        hf, te = _row(name, "hf-sdpa"), _row(name, "te-packed")
        expected.append(f"{variant} | {_n(hf['perturbations_per_s'])} /s | {_n(te['perturbations_per_s'])} /s | "
                        f"{te['perturbations_per_s'] / hf['perturbations_per_s']:.2f}× |")
        expected.append(f"{te['projected_hours']:.2f} h ({variant})")
    for name in ("workload-embed-V2-104M-real-h100.json", "workload-embed-V2-316M-real-h100.json"):
        te = _row(name, "te-packed")
        expected += [f"{te['pipeline_efficiency']:.0%}", f"{te['gpu_util_mean']:.0f}%"]
    v1 = _row("workload-embed-V1-10M-real-h100.json", "te-packed")
    expected.append(f"{v1['pipeline_efficiency']:.0%} efficiency, {v1['gpu_util_mean']:.0f}% busy")
    expected.append(f"{te_cli['startup_s']:.1f} s\nbefore its first batch, {te_cli['startup_imports_s']:.1f} s of it")
    missing = [e for e in expected if e not in readme]
    assert not missing, f"README numbers not found as in the results: {missing}"

"""The parity report is rendered from results alone and says what the results say."""

from __future__ import annotations

from harness.results import make_result
from reports.parity import render_parity_report

ENV = {
    "gpu_name": "TEST GPU",
    "driver": "1.0",
    "cuda": "13.0",
    "torch": "2.x",
    "te": "2.20.2",
    "transformers": "5.x",
    "NVIDIA_TF32_OVERRIDE": "0",
    "git_commit": "deadbeef",
}


def _stage(layer, rel, precision):
    return {
        "record": "stage",
        "variant": "V1-10M",
        "backend": "te",
        "precision": precision,
        "stage": f"layer.{layer}.output",
        "layer": layer,
        "rel_l2": rel,
        "status": "pass",
    }


def test_report_shows_verdicts_skips_env_and_plots(tmp_path):
    records = [_stage(i, 1e-7 * (i + 1), "fp32") for i in range(3)] + [
        {
            "record": "verdict",
            "variant": "V1-10M",
            "backend": "te",
            "precision": "fp32",
            "status": "fail",
            "worst_stage": "layer.2.output",
            "worst_rel_l2": 3e-7,
            "final_hidden_max_abs": 2e-6,
            "logits_top1": 0.99,
            "first_diverging_stage": "layer.1.attention",
            "reference": "hf-eager@fp32",
        },
        {
            "record": "verdict",
            "variant": "V1-10M",
            "backend": "te",
            "precision": "mxfp8",
            "status": "skipped",
            "reason": "mxfp8 needs compute capability 10.0 (Blackwell)",
        },
    ]
    result = make_result("parity", records, {"source": "random-init", "seed": 0}, {}, env=ENV)
    md = render_parity_report([result], tmp_path).read_text()
    assert "| V1-10M | te | fp32 | **fail** | layer.2.output | 3.00e-07 | 2.00e-06 | 0.9900 | layer.1.attention |" in md
    assert "| V1-10M | te | mxfp8 | skipped | | | | | mxfp8 needs compute capability 10.0 (Blackwell) |" in md
    assert "TEST GPU" in md and "deadbeef" in md and "random-init" in md
    png = tmp_path / "parity-0-V1-10M.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "![V1-10M error vs layer](parity-0-V1-10M.png)" in md

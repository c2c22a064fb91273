"""A parity run (harness/parity/run.py) over several cases: a case that raises is a row, not a crash."""

from __future__ import annotations


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

"""Each known TransformerEngine defect (harness/verdict/known_failures.json, class te-defect) as a
strict xfail: its one-command reproduction must still fail on the TE version named. The day a TE
release fixes it, the reproduction passes, pytest reports XPASS(strict) as a failure, and the
known-failures entry (and the verdict's te-defect class for it) must be revisited. GPU only: each
reproduction needs the GPU it was seen on, and runs in its own process (a kernel fault leaves the
process's CUDA context unusable)."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from harness.capability import probe
from harness.results import REPO_ROOT
from harness.verdict.classify import known_failures
from harness.verdict.gpus import gpu_class

DEFECTS = [k for k in known_failures() if k["class"] == "te-defect"]


def _command(repro: str) -> list[str]:
    """The reproduction as this interpreter runs it (gfqual and python may not be on PATH)."""
    head, *rest = shlex.split(repro)
    return [sys.executable, "-m", "harness" if head == "gfqual" else rest.pop(0), *rest]


@pytest.mark.parametrize(
    "defect",
    [
        pytest.param(d, marks=[pytest.mark.gpu, pytest.mark.xfail(strict=True, reason=f"TE {d['te']}: {d['summary']}")])
        for d in DEFECTS
    ],
    ids=[d["id"] for d in DEFECTS],
)
def test_known_te_defect(defect):
    cap = probe()
    if not cap.cuda:
        pytest.skip("a known TE defect reproduces on a CUDA GPU only; none is visible")
    if defect["gpu"] and gpu_class(cap.gpu_name) != defect["gpu"]:
        pytest.skip(f"seen on the {defect['gpu']}; this GPU is {cap.gpu_name}")
    run = subprocess.run(_command(defect["repro"]), cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    if run.returncode == 3:
        pytest.skip(f"cannot run here: {run.stderr.strip().splitlines()[-1:]}")
    assert run.returncode == 0, f"{defect['repro']} exited {run.returncode}: {run.stderr[-2000:]}"


def test_every_known_te_defect_names_its_te_version_and_a_reproduction():
    """Runs everywhere: the data the strict xfails are made of."""
    assert DEFECTS
    for d in DEFECTS:
        assert d["te"] and d["repro"].split()[0] in ("gfqual", "python") and d["summary"], d["id"]
        assert _command(d["repro"])[:2] == [sys.executable, "-m"]

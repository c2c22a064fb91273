"""harness/VERDICT.md documents verdict.json: its example must have exactly the shape judge()
writes, use only the statuses, verdicts and failure classes the code knows, and its tables must
list exactly those the code defines."""

from __future__ import annotations

import json
import re

from harness.results import REPO_ROOT, make_result
from harness.verdict import GATES, exit_code, judge
from harness.verdict.classify import CLASSES
from harness.verdict.matrix import GATE_STATUSES, SCHEMA, VERDICTS
from harness.verdict.waivers import FIELDS

DOC = (REPO_ROOT / "harness" / "VERDICT.md").read_text()


def _shape(value):
    """Keys all the way down (a list by its first element); leaves by kind."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value and isinstance(value[0], (dict, list)) else "list"
    return "leaf"


def _examples() -> list[dict]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", DOC, re.S)]


def _real_verdict() -> dict:
    """A verdict with a failure, a waived one and a superseded one, from the code."""
    env = {"gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "git_commit": "c1"}
    case = {"variant": "V1-10M", "backend": "te", "precision": "bf16"}
    old = make_result("parity", [{**case, "record": "verdict", "status": "fail"}], {"source": "random-init"}, {}, env)
    old["created"] = "2026-01-01T00:00:00+00:00"
    new = make_result("parity", [{**case, "record": "verdict", "status": "pass"}], {"source": "random-init"}, {}, env)
    crash = {**case, "record": "point", "status": "error", "layout": "full", "batch": 8, "seq_len": 8}
    perf = make_result("perf", [{**crash, "reason": "CUDA error: an illegal memory access"}], {}, {}, env)
    verdict = judge([old, new, perf])
    waiver = {k: "x" for k in FIELDS} | {"gpu": None, "gate": "reliability", "expires": "2999-01-01"}
    waived = judge([old, new, perf, perf | {"created": "2099-01-01T00:00:00+00:00"}], waivers=[waiver])
    verdict["failures"] += [f | {"waiver": waiver} for f in waived["failures"]]
    return verdict


def test_the_example_has_the_shape_the_code_writes():
    *_waivers, example = _examples()
    real = _real_verdict()
    assert real["superseded"] and real["failures"]
    real_shape, doc_shape = _shape(real), _shape(example)
    real_shape["failures"][0]["waiver"] = doc_shape["failures"][0]["waiver"] = "leaf"  # null or a waiver
    real_shape["plan"]["scope"]["steps"] = doc_shape["plan"]["scope"]["steps"]  # the qualify plan's step dicts
    assert doc_shape == real_shape
    assert example["schema"] == SCHEMA and example["exit_code"] == exit_code(example)
    assert example["overall"] in VERDICTS and set(example["plan"]["scope"]["gates"]) == set(GATES)
    for gpu in example["gpus"].values():
        assert gpu["verdict"] in VERDICTS and list(gpu["gates"]) == list(GATES)
        assert {c["status"] for c in gpu["gates"].values()} <= set(GATE_STATUSES)
    assert {f["class"] for f in example["failures"]} <= set(CLASSES)


def test_the_waivers_example_loads(tmp_path):
    from harness.verdict.waivers import load_waivers

    waivers, _example = _examples()
    (tmp_path / "w.json").write_text(json.dumps(waivers))
    assert load_waivers(tmp_path / "w.json") == waivers["waivers"]


def test_the_class_table_lists_every_class_the_code_knows():
    table = re.findall(r"^\| `([a-z-]+)` \|", DOC, re.M)
    assert table == list(CLASSES)
    for status in GATE_STATUSES:
        assert f"`{status}`" in DOC

"""The registry against the published configs, the results format, and the metrics."""

from __future__ import annotations

import json
import math

import pytest
import torch

from harness.parity.metrics import StageStats
from harness.results import ResultsError, make_result, read_result, read_results, write_result
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


def test_results_round_trip_and_validation(tmp_path):
    rec = {"variant": "V1-10M", "backend": "te", "precision": "fp32", "rel_l2": float("nan")}
    path = write_result(make_result("parity", [rec], {"source": "random-init"}, {}, env=ENV), tmp_path)
    back = read_result(path)
    assert back["records"][0]["rel_l2"] == "nan" and back["env"] == ENV
    assert [r["kind"] for r in read_results(tmp_path)] == ["parity"]


def test_results_reader_rejects_what_it_cannot_read(tmp_path):
    good = make_result("parity", [{"variant": "v", "backend": "b", "precision": "p"}], {}, {}, env=ENV)
    for mutate, message in (
        (lambda r: r.update(schema_version=99), "schema_version 99 is not supported"),
        (lambda r: r.update(kind="weather"), "unknown kind 'weather'"),
        (lambda r: r["records"].append({"variant": "v"}), "record 1 lacks backend, precision"),
        (lambda r: r["records"][0].update(nested={"a": 1}), "record 0 is not flat"),
    ):
        bad = json.loads(json.dumps(good))
        mutate(bad)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ResultsError, match=message):
            read_result(tmp_path / "bad.json")


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

    def run_parity(spec, variant, reference, candidate):
        if spec.precision == "bf16":
            raise ValueError("No dot product attention backend is available for the provided inputs.")
        verdict = {"record": "verdict", "variant": spec.variant, "backend": spec.candidate,
                   "precision": spec.precision, "status": "skipped", "reason": "stub"}
        return [verdict], verdict

    monkeypatch.setattr(parity_run, "run_parity", run_parity)
    specs = [parity_run.ParitySpec("V1-10M", "te", p) for p in ("bf16", "fp32")]
    lines = []
    records = parity_run.run_specs(specs, None, None, progress=lines.append)
    assert [r["status"] for r in records] == ["error", "skipped"]
    assert records[0]["reason"].startswith("ValueError: No dot product attention backend")
    assert "ERROR: ValueError" in lines[0]

"""A parity run end to end: build the backends, make the cells, compare, judge, make records.

Shared by ``gfqual parity``, ``gfqual run`` and ``pytest suites/parity``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from harness.backends import Backend, build_backend
from harness.capability import probe
from harness.data.batching import Batch, collate
from harness.data.synthetic import synthetic_batch
from harness.data.tokenizer import Dictionaries, tokenize_h5ad
from harness.embeddings import extract
from harness.parity.engine import compare, judge, judge_tensors
from harness.parity.metrics import embedding_fingerprint
from harness.precision import get_precision
from harness.progress import progress_bar, row_head
from harness.reasons import error_reason, skipped
from harness.tolerances import needs_peer, table_as_dict
from models.errors import UsageError
from models.registry import VARIANTS, Variant, get_variant


@dataclass(frozen=True)
class ParitySpec:
    variant: str
    candidate: str  # backend name
    precision: str
    reference: str = "hf-eager"
    n_cells: int = 4
    max_len: int = 64
    micro_batch: int = 4
    seed: int = 0
    emb_layer: int = -1
    h5ad: str | None = None  # real cells: an AnnData of raw counts (with dicts)
    dicts: str | None = None  # folder of the Geneformer dictionaries (gc30M/, gc104M/)

    @property
    def key(self) -> str:
        return f"{self.variant}/{self.candidate}/{self.precision}"

    @property
    def variant_config(self) -> Variant:
        """The registered variant this spec names (the one source of truth for which model runs)."""
        return get_variant(self.variant)


def make_batch(spec: ParitySpec, multiple: int) -> Batch:
    """Real cells when an AnnData and the dictionaries are given, else synthetic ones.

    Real cells are taken at evenly spaced length quantiles, so short and long cells both appear;
    if every chosen cell still fills ``max_len``, the last is cut to half its length (a cell with
    fewer expressed genes) so that padding is always exercised.
    """
    variant = spec.variant_config
    if not spec.h5ad:
        return synthetic_batch(variant, spec.n_cells, spec.max_len, spec.seed, multiple=multiple)
    if not spec.dicts:
        raise UsageError(
            f"--h5ad {spec.h5ad}: real cells need the Geneformer dictionaries: add --dicts DIR (the folder "
            "holding gc30M/ and gc104M/)"
        )
    dicts = Dictionaries.load(spec.dicts, variant.dictionary_family)
    tokenized = tokenize_h5ad(spec.h5ad, variant, dicts, max_len=spec.max_len)
    if len(tokenized.cells) < spec.n_cells:
        raise UsageError(f"{spec.h5ad}: {len(tokenized.cells)} usable cells, {spec.n_cells} asked for")
    by_length = sorted(tokenized.cells, key=len)
    picks = [by_length[round(i * (len(by_length) - 1) / max(1, spec.n_cells - 1))] for i in range(spec.n_cells)]
    if all(len(c) == spec.max_len for c in picks):
        cut = picks[-1][: spec.max_len // 2]
        picks[-1] = cut[:-1] + [variant.special_tokens["<eos>"]] if variant.has_cls_eos else cut
    return collate(picks, variant, multiple)


def reference_precision(device: str) -> str:
    """HF in float64 on the CPU (exact enough to be ground truth); fp32 on the GPU."""
    return "fp64" if device == "cpu" else "fp32"


def run_parity(spec: ParitySpec, reference_source, candidate_source, device: str | None = None):
    """Returns (records, verdict). A configuration this machine cannot run gives one skipped
    verdict record with the reason, never an exception and never a silent omission."""
    cap = probe()
    device = device or cap.device
    precision = get_precision(spec.precision)
    base = {
        "variant": spec.variant,
        "backend": spec.candidate,
        "precision": spec.precision,
        "device": device,
        "n_cells": spec.n_cells,
        "seq_len": spec.max_len,
    }
    reason = cap.skip_reason(spec.candidate, precision)
    if reason:
        verdict = skipped({**base, "record": "verdict"}, reason)
        return [verdict], verdict

    ref_precision = get_precision(reference_precision(device))
    multiple = precision.token_multiple
    batch = make_batch(spec, multiple)
    reference = build_backend(spec.reference, reference_source, ref_precision, device)
    candidate = build_backend(spec.candidate, candidate_source, precision, device)
    peer = None
    if needs_peer(precision):
        peer = build_backend(spec.reference, reference_source, get_precision(precision.peer), device)
    comparisons = compare(reference, candidate, batch.split(spec.micro_batch), peer, spec.emb_layer)
    rows, verdict = judge(comparisons, precision)
    attention = candidate.attention_backend
    del reference, candidate, peer
    if device == "cuda":
        torch.cuda.empty_cache()
    context = {
        **base,
        "reference": f"{spec.reference}@{ref_precision.name}",
        "peer": f"{spec.reference}@{precision.peer}" if needs_peer(precision) else None,
        "cells": f"real: {spec.h5ad}" if spec.h5ad else "synthetic",
        "real_tokens": batch.real_tokens,
        "padded_len": int(batch.input_ids.shape[1]),
        "seed": spec.seed,
    }
    records = [{**context, "record": "stage", **row} for row in rows]
    verdict = {**context, "record": "verdict", **verdict, "reason": None, "attention_backend": attention}
    return records + [verdict], verdict


def run_config(specs: list[ParitySpec]) -> dict:
    """The ``config`` block of a parity result: what ran and the tolerances that judged it."""
    return {
        "specs": [asdict(s) for s in specs],
        "tolerances": {p: table_as_dict(get_precision(p)) for p in sorted({s.precision for s in specs})},
    }


def run_specs(specs: list[ParitySpec], reference_source, candidate_source, progress=print) -> list[dict]:
    """Run specs (of one variant) over the same sources, printing each verdict as it comes."""
    records = []
    with progress_bar(len(specs), "parity cases", unit="case") as bar:
        for spec in specs:
            records += _run_one(spec, reference_source, candidate_source, progress)
            bar.update(1)
    return records


def _run_one(spec: ParitySpec, reference_source, candidate_source, progress) -> list[dict]:
    """One case's records; a case that raises becomes an error verdict (printed as it comes)."""
    try:
        records, verdict = run_parity(spec, reference_source, candidate_source)
    except Exception as exc:  # a kernel that cannot run this case is a finding: recorded, and the run goes on
        verdict = {
            "record": "verdict",
            "variant": spec.variant,
            "backend": spec.candidate,
            "precision": spec.precision,
            "status": "error",
            "reason": error_reason(exc),
        }
        records = [verdict]
    progress(format_verdict(verdict))
    return records


def format_verdict(v: dict) -> str:
    if v["status"] in ("skipped", "error"):
        return f"{row_head(v)} {v['status'].upper()}: {v['reason']}"
    where = f"first diverging stage: {v['first_diverging_stage']}" if v["first_diverging_stage"] else ""
    return (
        f"{row_head(v)} {v['status'].upper():5s} "
        f"worst {v['worst_stage']} rel_l2={v['worst_rel_l2']:.2e}  final max|d|={v['final_hidden_max_abs']:.2e}  "
        f"top1={v['logits_top1']:.4f}  {where}"
    )


def verdicts(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("record") == "verdict"]


def compare_cell_embeddings(
    reference: Backend, candidate: Backend, cells: list[list[int]], variant: Variant, emb_layer: int = -1
) -> tuple[str, str, dict]:
    """Geneformer cell embeddings of the same cells from two backends, judged with the parity
    tolerance of the candidate's precision: (status, violations, metrics); the metrics carry each
    side's fingerprint (``ref_emb_*``, ``emb_*``), so runs on two machines can be compared."""
    ref = extract(reference, cells, variant, "cell", emb_layer)
    cand = extract(candidate, cells, variant, "cell", emb_layer)
    status, violations, entry = judge_tensors(
        "cell_embedding", candidate.precision, torch.from_numpy(ref.vectors), torch.from_numpy(cand.vectors)
    )
    fingerprints = {**embedding_fingerprint(ref.vectors, "ref_emb_"), **embedding_fingerprint(cand.vectors, "emb_")}
    return status, violations, {**entry.metrics, **fingerprints}


def synthetic_embedding_check(
    variant: Variant, model, candidate: str, device: str, n_cells: int, max_len: int, seed: int
) -> dict:
    """The data path end to end on synthetic counts (no user data): planted-state AnnData →
    rank-value tokens → cell embeddings from the HF reference and the candidate, compared."""
    import time

    from harness.data.synthetic import synthetic_anndata, synthetic_dictionaries
    from harness.data.tokenizer import Encoder

    dicts = synthetic_dictionaries(variant, seed)
    adata = synthetic_anndata(dicts, n_cells=n_cells, seed=seed)
    cells = Encoder(list(adata.var["ensembl_id"]), variant, dicts, max_len).encode(adata.X).cells
    precision = get_precision("fp32")
    reference = build_backend("hf-eager", model, get_precision(reference_precision(device)), device)
    cand = build_backend(candidate, model, precision, device)
    start = time.perf_counter()
    status, violations, metrics = compare_cell_embeddings(reference, cand, cells, variant)
    return {
        "record": "embedding",
        "variant": variant.name,
        "backend": candidate,
        "precision": precision.name,
        "reference": f"hf-eager@{reference.precision.name}",
        "cells": "synthetic (planted states)",
        "n_cells": len(cells),
        "seq_len": max_len,
        "real_tokens": sum(map(len, cells)),
        "seconds": time.perf_counter() - start,
        "status": status,
        "violations": violations,
        "attention_backend": cand.attention_backend,
        **{k: v for k, v in metrics.items() if k in ("rel_l2", "cos_dist", "max_abs") or "emb_" in k},
    }


KERNEL_CHECK_PRECISIONS = ("bf16", "fp8-delayed-dpa", "fp8-current-dpa")  # gfqual run on a GPU


def default_specs(device: str, variants: list[str], seed: int) -> list:
    """What ``gfqual run`` does with no arguments, by hardware: the most useful it can."""
    specs = []
    for name in variants:
        v = VARIANTS[name]
        if device == "cpu":
            specs.append(ParitySpec(name, "te-format-torch", "fp32", max_len=64, seed=seed))
            continue
        specs.append(ParitySpec(name, "te-format-torch", "fp32", max_len=v.context, seed=seed, micro_batch=2))
        for precision in (
            "fp32",
            "bf16",
            "fp8-delayed",
            "fp8-current",
            "fp8-delayed-dpa",
            "fp8-current-dpa",
            "fp8-block",
            "mxfp8",
        ):
            specs.append(ParitySpec(name, "te", precision, max_len=v.context, seed=seed, micro_batch=2))
        for precision in ("fp32", "bf16"):  # the fused and packed builds must be as correct as the default
            for backend in ("te-fused", "te-packed"):
                specs.append(ParitySpec(name, backend, precision, max_len=v.context, seed=seed, micro_batch=2))
    return specs

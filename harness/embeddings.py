"""Geneformer embeddings from any backend: cells (mean over gene tokens, or <cls> for V2) and
contextual gene embeddings, from a chosen layer (Geneformer's ``emb_layer``: −1 = second-to-last).

This is the hot path of every workload that reads hidden states (``gfqual embed``, the probes of
``gfqual eval``, in-silico perturbation), so it is built for throughput, by what a profile of the
first version showed (the README's "Where the time went before": TE's GPU idle most of the time):

* only the layers up to the one read run, and no MLM head (``Backend.encode``): HF spent a quarter
  of its kernel time in the head's unaligned vocabulary GEMM, which an embedding never needs;
* cells are batched to the backend's own token budget within the GPU's free memory (``token_budget``),
  in the layout the backend runs fastest (``Backend.input_layout``: packed THD for ``te-packed``,
  padded otherwise, to a few shapes rounded to the backend's own ``Backend.pad_multiple``:
  ``batch_rounding``): TE's host cost per forward is paid a few times per thousand cells instead
  of once per dozen;
* batches are built on a worker thread in page-locked memory and copied asynchronously; pooling
  happens on the GPU (a segment sum over gene tokens) into one preallocated tensor that is copied
  to the host once at the end: no host–device sync inside the loop.

Results come back in input order. Under torchrun the cells are sharded across ranks and every rank
gets the whole result (``harness.distributed``).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from harness.backends import Backend, hooks
from harness.data.batching import batch_multiple, budget_batches, budget_groups, budget_plan
from harness.distributed import context, reassemble, run_on_every_rank, shard, sum_across_ranks
from models.errors import UsageError
from models.registry import Variant

MODES = ("cell", "cls", "gene")
CPU_TOKEN_BUDGET = 16384
MEMORY_FRACTION = 0.5  # of the GPU's free memory that one batch's activations may take
PREPARED_AHEAD = 2  # batches the worker builds ahead of the device


# --- Geneformer's definitions (one place: the parity engine and every workload use these) ----


def embedding_layer_index(num_layers: int, emb_layer: int = -1) -> int:
    """Geneformer's ``emb_layer`` (−1: second-to-last layer, 0: last) as a 0-based layer index."""
    index = num_layers - 1 + emb_layer
    if not 0 <= index < num_layers:
        raise UsageError(
            f"--layer (emb_layer) {emb_layer} is outside a {num_layers}-layer model: use -1 to {-(num_layers - 1)}"
        )
    return index


def cell_embedding_stage(num_layers: int, emb_layer: int = -1) -> str:
    """Geneformer's ``emb_layer`` as a stage name."""
    return f"layer.{embedding_layer_index(num_layers, emb_layer)}.output"


def mean_over_genes(hidden: torch.Tensor, gene_mask: torch.Tensor) -> torch.Tensor:
    """Geneformer's cell embedding: mean of gene-token states, without <cls>/<eos> and padding."""
    mask = gene_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


@dataclass
class Embeddings:
    mode: str
    layer_stage: str
    vectors: np.ndarray  # [n_cells, H] (cell, cls) or [n_genes, H] (gene)
    gene_tokens: np.ndarray | None = None  # gene mode: the token id of each row
    gene_counts: np.ndarray | None = None  # gene mode: in how many cell positions each gene appeared


def length_batches(cells: list[list[int]], max_tokens: int) -> list[list[int]]:
    """Indices of cells grouped longest-first so that batch size × longest length ≤ max_tokens."""
    return budget_groups([len(c) for c in cells], max_tokens)


def layers_to_run(variant: Variant, emb_layer: int) -> int:
    """How many encoder layers produce Geneformer's ``emb_layer`` (−1: all but the last)."""
    return embedding_layer_index(variant.num_hidden_layers, emb_layer) + 1


def memory_token_budget(backend: Backend, variant: Variant) -> int:
    """The most tokens one batch may hold, from the device's free memory: activations of one layer
    in flight (input, QKV, attention output, MLP hidden, output) plus what the backend's attention
    keeps per token, within ``MEMORY_FRACTION`` of free memory; a multiple of the context, so the
    longest cell always fits. CPUs get a small fixed budget."""
    if not str(backend.device).startswith("cuda"):
        return CPU_TOKEN_BUDGET
    free, _ = torch.cuda.mem_get_info(torch.device(backend.device))
    width = torch.finfo(backend.precision.dtype).bits // 8
    per_token = width * (6 * variant.hidden_size + 2 * variant.intermediate_size) * 2
    per_token += backend.attention_bytes_per_token(variant)
    return whole_contexts(int(free * MEMORY_FRACTION / per_token), variant)


def default_token_budget(backend: Backend, variant: Variant) -> int:
    """The budget a backend runs best at (``Backend.batch_values`` / hidden size: its own
    measured best, results/h200/workload-*), within what memory allows."""
    preferred = whole_contexts(backend.batch_values // variant.hidden_size, variant)
    return min(preferred, memory_token_budget(backend, variant))


def token_budget(backend: Backend, variant: Variant, max_tokens: int | None = None) -> int:
    """The one place a workload's tokens per batch are resolved: ``max_tokens`` if the user gave
    it, else the backend's own default (``default_token_budget``)."""
    return max_tokens or default_token_budget(backend, variant)


def batch_rounding(backend: Backend, layout: str | None = None, pad_multiple: int | None = None) -> int:
    """The one place a workload's batch rounding is resolved: the token multiple its batches are
    rounded up to (``batch_multiple``), in ``layout`` (else the backend's fastest): padded, its pad
    multiple (``pad_multiple`` if the caller tries one, else the backend's own ``Backend.pad_multiple``)
    kept a multiple of its precision's token multiple; packed, the token multiple alone."""
    return batch_multiple(
        layout or backend.input_layout, backend.precision.token_multiple, pad_multiple or backend.pad_multiple
    )


def whole_contexts(tokens: int, variant: Variant) -> int:
    """``tokens`` rounded down to whole contexts, at least one: the longest cell always fits."""
    return max(variant.context, tokens // variant.context * variant.context)


def stage_output(backend: Backend, batch, stage: str) -> torch.Tensor:
    """One stage's output (float32) for a batch, through the backend's taps (parity's view)."""
    captured = {}
    with hooks([t for t in backend.taps() if t.stage == stage][:1], lambda _s, t: captured.__setitem__("h", t)):
        backend.forward(batch)
    return captured["h"].float()


@dataclass
class Pooled:
    """What a pass over cells leaves on the device: per cell the sum of its gene-token states and
    their number (the cell embedding is sums / counts), and the states at requested positions."""

    sums: torch.Tensor  # [n, H]
    counts: torch.Tensor  # [n]
    picked: torch.Tensor | None = None  # [m, H], in the order of ``pick``
    real_tokens: int = 0  # the cells' tokens
    run_tokens: int = 0  # tokens the model ran, padding included

    def means(self) -> torch.Tensor:
        return self.sums / self.counts.clamp(min=1)[:, None].to(self.sums.dtype)


def encode_cells(
    backend: Backend,
    cells: list[list[int]],
    variant: Variant,
    n_layers: int,
    budget: int,
    leave_out: list[int | None] | None = None,
    pick: list[tuple[int, int]] | None = None,
    layout: str | None = None,
    progress=None,
    pad_multiple: int | None = None,
) -> Pooled:
    """One pass over ``cells`` through the first ``n_layers`` layers, batched to ``budget`` tokens.

    ``leave_out[i]``: a position of cell i kept out of its gene sum (a moved gene); ``pick``:
    (cell, position) pairs whose states are returned as they are (``<cls>``, a deleted gene).
    Everything stays on the device; ``progress(n_cells)`` is called as batches are queued;
    ``pad_multiple``: see ``batch_rounding``."""
    n, H = len(cells), variant.hidden_size
    device = backend.device
    acc = torch.float64 if backend.precision.dtype == torch.float64 else torch.float32
    sums = torch.zeros(n, H, dtype=acc, device=device)
    counts = torch.zeros(n, dtype=torch.float32)
    picked = torch.zeros(len(pick), H, dtype=acc, device=device) if pick else None
    wanted: dict[int, list[tuple[int, int]]] = {}
    for slot, (i, position) in enumerate(pick or []):
        wanted.setdefault(i, []).append((slot, position))
    plan = batch_plan(backend, cells, variant, layout, budget, built=False, pad_multiple=pad_multiple)
    run_tokens = 0

    def prepare(item):
        """Host side of one batch (worker thread): the batch itself, masks, scatter indices,
        page-locked copies."""
        make, rows = item
        batch = make()
        gene = batch.gene_mask
        starts = batch.row_starts()
        for r, i in enumerate(rows):
            if leave_out is not None and leave_out[i] is not None:
                gene.view(-1)[starts[r] + leave_out[i]] = False
        flat_gene = gene.reshape(-1)
        counts[rows] = torch.zeros(len(rows) + 1).index_add_(
            0, batch.row_ids().clamp(max=len(rows)), flat_gene.float()
        )[: len(rows)]
        slots = [(slot, starts[r] + p) for r, i in enumerate(rows) for slot, p in wanted.get(i, [])]
        into = torch.where(flat_gene, batch.row_ids(), len(rows))  # non-genes land in a spare row
        extras = (
            torch.as_tensor(rows),
            into,
            torch.as_tensor([s for s, _ in slots], dtype=torch.long),
            torch.as_tensor([f for _, f in slots], dtype=torch.long),
        )
        if str(device).startswith("cuda"):
            return batch.pin(), tuple(t.pin_memory() for t in extras)
        return batch, extras

    with ThreadPoolExecutor(1) as worker:
        queue = deque(worker.submit(prepare, item) for item in plan[:PREPARED_AHEAD])
        for k in range(len(plan)):
            batch, extras = queue.popleft().result()
            run_tokens += batch.input_ids.numel()
            if k + PREPARED_AHEAD < len(plan):
                queue.append(worker.submit(prepare, plan[k + PREPARED_AHEAD]))
            rows, into, slots, flat_positions = (t.to(device, non_blocking=True) for t in extras)
            hidden = backend.encode(batch, n_layers)
            flat = hidden.reshape(-1, H).to(acc)
            local = torch.zeros(len(extras[0]) + 1, H, dtype=acc, device=device).index_add_(0, into, flat)
            sums.index_copy_(0, rows, local[:-1])
            if picked is not None and len(extras[2]):
                picked.index_copy_(0, slots, flat.index_select(0, flat_positions))
            if progress is not None:
                progress(len(extras[0]))
    return Pooled(sums, to_device(counts, device), picked, sum(map(len, cells)), run_tokens)


def to_device(values, device) -> torch.Tensor:
    """A host tensor or list on ``device`` without a host–device sync (through page-locked memory)."""
    t = torch.as_tensor(values)
    if not str(device).startswith("cuda"):
        return t
    return t.pin_memory().to(device, non_blocking=True)


def batch_plan(
    backend: Backend,
    cells: list,
    variant: Variant,
    layout: str | None,
    budget: int,
    built: bool = True,
    pad_multiple: int | None = None,
) -> list:
    """The workload's batches for this backend: its fastest layout unless ``layout`` says, its
    precision's token multiple, its pad multiple (``batch_rounding``), fixed shapes unless its
    attention materializes scores; ``built`` False: each batch as a function that builds it
    (``budget_plan``), for a pipeline's worker."""
    return (budget_batches if built else budget_plan)(
        cells,
        variant,
        layout or backend.input_layout,
        budget,
        backend.precision.token_multiple,
        fixed_shape=not backend.materializes_attention,
        pad_multiple=batch_rounding(backend, layout, pad_multiple),
    )


def synchronize(device) -> None:
    """Wait for the device's queued work (timing a pass end to end); nothing on a CPU."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def gene_sums(
    backend: Backend,
    cells: list[list[int]],
    variant: Variant,
    n_layers: int,
    budget: int,
    layout: str | None = None,
    progress=None,
    pad_multiple: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token id, the sum of its contextual states over every position it holds, and how many."""
    sums = torch.zeros(variant.vocab_size + 1, variant.hidden_size, dtype=torch.float64, device=backend.device)
    counts = torch.zeros(variant.vocab_size, dtype=torch.long)
    for batch, rows in batch_plan(backend, cells, variant, layout, budget, pad_multiple=pad_multiple):
        ids = batch.input_ids.reshape(-1)
        gene = batch.gene_mask.reshape(-1)
        counts += torch.bincount(ids[gene], minlength=variant.vocab_size)
        into = to_device(torch.where(gene, ids, variant.vocab_size), backend.device)
        hidden = backend.encode(batch, n_layers)
        sums.index_add_(0, into, hidden.reshape(-1, variant.hidden_size).double())
        if progress is not None:
            progress(len(rows))
    return sums[:-1], counts


@torch.no_grad()
def extract(
    backend: Backend,
    cells: list[list[int]],
    variant: Variant,
    mode: str = "cell",
    emb_layer: int = -1,
    max_tokens: int | None = None,
    layout: str | None = None,
    progress=None,
    pad_multiple: int | None = None,
) -> Embeddings:
    """Embeddings of ``cells``; ``max_tokens`` per batch defaults to ``default_token_budget``, the
    ``pad_multiple`` of padded batches to the backend's own (``batch_rounding``)."""
    if mode not in MODES:
        raise UsageError(f"embedding mode must be one of {MODES}, not {mode!r}")
    if mode == "cls" and not variant.has_cls_eos:
        raise UsageError(f"{variant.name} has no <cls> token; use mode 'cell' (mean over genes)")
    stage = cell_embedding_stage(variant.num_hidden_layers, emb_layer)
    n_layers = layers_to_run(variant, emb_layer)
    budget = token_budget(backend, variant, max_tokens)
    ctx = context()
    mine = shard([len(c) for c in cells], ctx.rank, ctx.world_size)  # a world of one: every cell
    local = [cells[i] for i in mine]
    options = dict(layout=layout, progress=progress, pad_multiple=pad_multiple)

    if mode == "gene":
        sums, counts = run_on_every_rank(
            lambda: gene_sums(backend, local, variant, n_layers, budget, **options), gather=False
        )
        sums, counts = sum_across_ranks(sums.cpu()), sum_across_ranks(counts)
        seen = torch.nonzero(counts).squeeze(1)
        vectors = (sums[seen] / counts[seen, None]).float().numpy()
        return Embeddings(mode, stage, vectors, seen.numpy(), counts[seen].numpy())

    def work():
        if mode == "cls":
            pooled = encode_cells(
                backend, local, variant, n_layers, budget, pick=[(i, 0) for i in range(len(local))], **options
            )
            return pooled.picked.float().cpu().numpy()
        return encode_cells(backend, local, variant, n_layers, budget, **options).means().float().cpu().numpy()

    parts = run_on_every_rank(lambda: (mine, work()))
    return Embeddings(mode, stage, reassemble(parts, len(cells), _in_input_order))


def _in_input_order(parts, indices) -> np.ndarray:
    rows = np.concatenate([rows for _, rows in parts])
    out = np.empty_like(rows)
    out[indices] = rows
    return out


def embedding_frame(emb: Embeddings, cells_table, genes=None):
    """What each row is, keyed as its users join on: per cell the tokenized dataset's metadata
    indexed by ``cell_id`` (the input's obs_names; ``cell_index`` for a dataset made before cell
    ids were carried); per gene ``ensembl_id`` with ``symbol``, ``token_id`` and ``n_positions``
    (``genes``: the dataset's gene table; without it the token id is the key)."""
    import pandas as pd

    if emb.mode == "gene":
        frame = pd.DataFrame({"token_id": emb.gene_tokens, "n_positions": emb.gene_counts})
        if genes is not None:
            frame = genes.set_index("token_id").loc[emb.gene_tokens].reset_index()[["ensembl_id", "symbol", "token_id"]]
            frame["n_positions"] = emb.gene_counts
        frame.index = frame["ensembl_id" if genes is not None else "token_id"].astype(str).to_numpy()
        return frame
    frame = cells_table.drop(columns=["input_ids"]).reset_index(drop=True)
    frame.index = frame["cell_id" if "cell_id" in frame else "cell_index"].astype(str).to_numpy()
    return frame


def embeddings_anndata(emb: Embeddings, cells_table, info: dict, genes=None):
    """The scverse form: cell vectors in ``obsm['X_geneformer']`` over the cells' metadata as
    ``obs``; gene vectors in ``varm['X_geneformer']``, one var per gene; ``info`` in ``uns``."""
    import anndata

    frame = embedding_frame(emb, cells_table, genes)
    if emb.mode == "gene":
        adata = anndata.AnnData(var=frame, varm={"X_geneformer": emb.vectors})
    else:
        adata = anndata.AnnData(obs=frame, obsm={"X_geneformer": emb.vectors})
    adata.uns["geneformer"] = {**info, "mode": emb.mode, "layer_stage": emb.layer_stage}
    return adata


def save_embeddings(emb: Embeddings, cells_table, out, info: dict, genes=None) -> None:
    """Write embeddings where their users read them: ``.h5ad`` (``embeddings_anndata``) or
    ``.parquet`` (the row metadata of ``embedding_frame``, then ``emb_i``). Written under a
    temporary name and renamed when complete."""
    from pathlib import Path

    import pandas as pd

    from harness.outputs import written

    with written(out) as tmp:
        if Path(out).suffix == ".h5ad":
            embeddings_anndata(emb, cells_table, info, genes).write_h5ad(tmp)
        else:
            columns = [f"emb_{i}" for i in range(emb.vectors.shape[1])]
            meta = embedding_frame(emb, cells_table, genes).reset_index(drop=True)
            pd.concat([meta, pd.DataFrame(emb.vectors, columns=columns)], axis=1).to_parquet(tmp, index=False)


EMBED_OUTPUTS = (".parquet", ".h5ad")


def embed_defaults(backend: str, precision: str) -> tuple[str, str]:
    """``auto``: the backend measured fastest for embedding where it can run (``te-packed`` at bf16
    on a GPU with TE; results/h100/workload-embed-*.json), else HF sdpa (bf16 on a GPU, fp32 on a CPU)."""
    from harness.capability import probe

    cap = probe()
    te = cap.skip_reason("te-packed", "bf16") is None
    if backend == "auto":
        backend = "te-packed" if te else "hf-sdpa"
    if precision == "auto":
        precision = "bf16" if cap.cuda else "fp32"
    return backend, precision

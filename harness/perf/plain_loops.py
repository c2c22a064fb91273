"""Independent plain loops: the anchor the embedding engine is held to (issue 28).

Written for the benchmark and apart from the engine on purpose: nothing here comes from
``harness.embeddings`` or ``harness.data.batching`` (no batching, packing or pooling code is
shared), so a cost common to the engine's helpers cannot hide in its own yardstick. Each loop is
what a user would write in an afternoon, and nothing more:

* ``hf_loop`` — HF ``BertModel`` with sdpa: cells sorted by length, longest first, into batches
  of at most ``budget`` padded tokens, padded to a multiple of ``PAD_MULTIPLE``; no attention mask
  when no cell of the batch is padded;
* ``te_loop`` — a stack of ``te.TransformerLayer`` (the fused BERT post-LN layer) over THD packs
  of exactly ``budget`` tokens: cells laid end to end in length order, the rest of each pack
  short filler segments, every pack declaring the context as its longest cell (one attention plan).

Both run the same first ``n_layers`` layers as the engine (Geneformer's emb_layer −1: all but the
last), mean-pool the gene tokens on the GPU into one preallocated tensor, and copy it to the host
once. The timed region runs from token lists on the host to cell embeddings on the host.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

DESCRIPTIONS = {
    "hf": "HF BertModel (sdpa), cells sorted by length into padded batches",
    "te": "te.TransformerLayer stack over THD packs of exactly the budget",
}
PAD_MULTIPLE = 64
FILLER = 64  # a pack's unused tokens, cut into segments this short: their attention costs nothing


def _up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def padded_groups(lengths: np.ndarray, budget: int) -> list[tuple[np.ndarray, int]]:
    """(cell indices, padded length) per batch: longest first, as many cells of the batch's
    longest length (rounded up to ``PAD_MULTIPLE``) as ``budget`` tokens hold, at least one."""
    order = np.argsort(-lengths, kind="stable")
    groups, i = [], 0
    while i < len(order):
        width = _up(int(lengths[order[i]]), PAD_MULTIPLE)
        take = max(1, budget // width)
        groups.append((order[i : i + take], width))
        i += take
    return groups


def thd_groups(lengths: np.ndarray, budget: int) -> list[np.ndarray]:
    """Cell indices per pack: longest first, laid end to end while they fit in ``budget`` tokens."""
    order = np.argsort(-lengths, kind="stable")
    groups, start, used = [], 0, 0
    for k, i in enumerate(order):
        if k > start and used + lengths[i] > budget:
            groups.append(order[start:k])
            start, used = k, 0
        used += int(lengths[i])
    groups.append(order[start:])
    return groups


def thd_pack(cells: list, rows: np.ndarray, budget: int, pad_id: int):
    """One pack of exactly ``max(budget, tokens)`` tokens: (ids, positions, cu_seqlens, segment of each token)."""
    lengths = [len(cells[i]) for i in rows]
    real = sum(lengths)
    spare = max(budget, real) - real
    segments = lengths + [FILLER] * (spare // FILLER) + ([spare % FILLER] if spare % FILLER else [])
    ids = np.full(real + spare, pad_id, dtype=np.int64)
    ids[:real] = np.concatenate([np.asarray(cells[i], dtype=np.int64) for i in rows])
    cu = np.zeros(len(segments) + 1, dtype=np.int32)
    np.cumsum(segments, out=cu[1:])
    segment = np.repeat(np.arange(len(segments)), segments)
    positions = np.arange(len(ids)) - cu[:-1][segment]
    return ids, positions, cu, segment


def _pool_into(sums, counts, hidden, ids, segment, rows, specials) -> None:
    """Sum of gene-token states per cell (specials and padding are not genes), on the device."""
    gene = ~torch.isin(ids, specials)
    n = len(rows)
    into = torch.where(gene & (segment < n), segment, n)
    local = torch.zeros(n + 1, hidden.shape[-1], dtype=sums.dtype, device=sums.device)
    local.index_add_(0, into, hidden.to(sums.dtype))
    sums.index_copy_(0, rows, local[:n])
    tally = torch.zeros(n + 1, dtype=counts.dtype, device=counts.device)
    tally.index_add_(0, into, torch.ones_like(into, dtype=counts.dtype))  # bincount would sync with the host
    counts.index_copy_(0, rows, tally[:n])


def _host(array: np.ndarray, device) -> torch.Tensor:
    t = torch.from_numpy(array)
    return t.pin_memory().to(device, non_blocking=True) if str(device).startswith("cuda") else t


def hf_encoder(hf_model, n_layers: int, device, dtype):
    """The HF model's ``BertModel`` with sdpa and only its first ``n_layers`` layers, on the device."""
    bert = copy.deepcopy(hf_model.bert)
    bert.set_attn_implementation("sdpa")
    bert.encoder.layer = bert.encoder.layer[:n_layers]
    return bert.to(device=device, dtype=dtype).eval()


@torch.no_grad()
def hf_loop(bert, cells: list, budget: int, pad_id: int, specials: list[int], device):
    """(cell embeddings [n, H] on the host, seconds) from a plain HF sdpa loop (module docstring);
    ``bert``: ``hf_encoder``'s."""
    special = torch.as_tensor(specials, device=device)
    lengths = np.array([len(c) for c in cells])
    _sync(device)
    start = time.perf_counter()
    sums = torch.zeros(len(cells), bert.config.hidden_size, dtype=torch.float32, device=device)
    counts = torch.zeros(len(cells), dtype=torch.float32, device=device)
    for rows, width in padded_groups(lengths, budget):
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        for r, i in enumerate(rows):
            ids[r, : lengths[i]] = cells[i]
        full = bool((lengths[rows] == width).all())
        ids_d = _host(ids, device)
        mask = None if full else (ids_d != pad_id).long()
        hidden = bert(input_ids=ids_d, attention_mask=mask).last_hidden_state
        segment = torch.arange(len(rows), device=device).repeat_interleave(width)
        _pool_into(
            sums,
            counts,
            hidden.reshape(-1, hidden.shape[-1]),
            ids_d.reshape(-1),
            segment,
            _host(rows.astype(np.int64), device),
            special,
        )
    out = (sums / counts.clamp(min=1)[:, None]).cpu().numpy()
    return out, time.perf_counter() - start


@torch.no_grad()
def te_loop(te_model, cells: list, n_layers: int, budget: int, pad_id: int, specials: list[int], device, context: int):
    """(cell embeddings [n, H] on the host, seconds) from a plain loop of ``te.TransformerLayer``
    over THD packs of exactly ``budget`` tokens (module docstring). ``te_model``: a fused
    ``TEGeneformerForMaskedLM`` (thd) on the device, at the precision to time."""
    embeddings, layers = te_model.bert.embeddings, [layer.block for layer in te_model.bert.encoder.layer[:n_layers]]
    special = torch.as_tensor(specials, device=device)
    lengths = np.array([len(c) for c in cells])
    hidden_size = te_model.config["hidden_size"]
    _sync(device)
    start = time.perf_counter()
    sums = torch.zeros(len(cells), hidden_size, dtype=torch.float32, device=device)
    counts = torch.zeros(len(cells), dtype=torch.float32, device=device)
    for rows in thd_groups(lengths, budget):
        ids, positions, cu, segment = (
            _host(a.astype(dtype), device)
            for a, dtype in zip(thd_pack(cells, rows, budget, pad_id), (np.int64, np.int64, np.int32, np.int64))
        )
        x = embeddings(ids, positions)
        for layer in layers:
            x = layer(
                x,
                self_attn_mask_type="padding",
                cu_seqlens_q=cu,
                cu_seqlens_kv=cu,
                max_seqlen_q=context,
                max_seqlen_kv=context,
            )
        _pool_into(sums, counts, x, ids, segment, _host(rows.astype(np.int64), device), special)
    out = (sums / counts.clamp(min=1)[:, None]).cpu().numpy()
    return out, time.perf_counter() - start


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)

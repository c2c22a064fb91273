"""In-silico perturbation (how the Geneformer paper used its cardiomyopathy model): delete a gene
from a cell's rank encoding, or overexpress it (move it to the first rank), and measure how the
cell embedding moves.

Per (cell, gene):
  * ``cos_shift`` = 1 − cos(original, perturbed): how far the cell moved;
  * ``goal_shift`` = cos(perturbed, goal) − cos(original, goal): the signed move toward a goal
    state (for example the centroid of non-failing cells, when perturbing dilated ones).
As in Geneformer, the perturbed gene itself is left out of both cell embeddings, so a shift
measures the effect on the other genes, not the gene's own vector. The original's embedding
without gene g is (sum over genes − h_g) / (n − 1), from one forward pass of the original.

Noise floor: every original cell is run a second time padded to another length (another batch
shape, so other kernels and reduction orders). The shifts this null perturbation produces are
pure arithmetic noise of that backend at that precision; HF vs TE sign agreement is judged only
on shifts above it.

Speed: all perturbed copies of a cell are batched together with the original. They differ in
length by at most one token, so the batch has almost no padding (the padding fraction is
recorded): the gain that packing brings to mixed-length batches is already there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from harness.backends import Backend
from harness.data.batching import collate
from harness.embeddings import stage_output
from harness.parity.engine import cell_embedding_stage, mean_over_genes
from harness.precision import FP8_TOKEN_MULTIPLE
from models.registry import Variant

MODES = ("delete", "overexpress")
NULL_EXTRA_PADDING = 64  # tokens of padding added for the null (noise-floor) run


@dataclass
class PerturbResult:
    cell: np.ndarray  # index of the perturbed cell in the input
    gene: np.ndarray  # token id of the perturbed gene
    cos_shift: np.ndarray
    goal_shift: np.ndarray
    null_cos_shift: np.ndarray  # per original cell
    null_goal_shift: np.ndarray
    seconds: float
    real_tokens: int
    padded_tokens: int

    @property
    def noise_floor(self) -> float:
        return float(np.abs(self.null_goal_shift).max()) if len(self.null_goal_shift) else 0.0


def perturbed_copy(cell: list[int], position: int, mode: str, variant: Variant) -> list[int]:
    if mode == "delete":
        return cell[:position] + cell[position + 1:]
    if mode == "overexpress":
        first = 1 if variant.has_cls_eos else 0  # after <cls>
        rest = cell[:position] + cell[position + 1:]
        return rest[:first] + [cell[position]] + rest[first:]
    raise ValueError(f"perturbation mode must be one of {MODES}, not {mode!r}")


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


@torch.no_grad()
def perturb(
    backend: Backend, cells: list[list[int]], variant: Variant, genes: list[int], goal: np.ndarray,
    mode: str = "delete", emb_layer: int = -1, max_rows: int = 64,
) -> PerturbResult:
    """Perturb each of ``genes`` in every cell that expresses it; ``goal`` is a cell embedding."""
    stage = cell_embedding_stage(variant.num_hidden_layers, emb_layer)
    multiple = FP8_TOKEN_MULTIPLE if backend.precision.is_fp8 else 1
    goal_t = torch.as_tensor(goal, dtype=torch.float32, device=backend.device)
    wanted = set(genes)
    rows_cell, rows_gene, cos_shift, goal_shift, null_cos, null_goal = [], [], [], [], [], []
    real = padded = 0
    start = time.perf_counter()
    for c, cell in enumerate(cells):
        positions = [p for p, t in enumerate(cell) if t in wanted]
        if not positions:
            continue
        for chunk in range(0, len(positions), max_rows - 1):
            todo = positions[chunk: chunk + max_rows - 1]
            batch = collate([cell] + [perturbed_copy(cell, p, mode, variant) for p in todo], variant, multiple)
            hidden = stage_output(backend, batch, stage)
            b = batch.to(hidden.device)
            real += batch.real_tokens
            padded += batch.input_ids.numel()
            original_h = hidden[0][b.gene_mask[0]]  # gene positions, in rank order
            gene_positions = torch.nonzero(b.gene_mask[0]).squeeze(1).tolist()
            total = original_h.sum(0)
            n = original_h.shape[0]
            for row, p in enumerate(todo, start=1):
                without = (total - original_h[gene_positions.index(p)]) / (n - 1)
                mask = b.gene_mask[row].clone()
                if mode == "overexpress":
                    mask[1 if variant.has_cls_eos else 0] = False  # the moved gene
                perturbed = mean_over_genes(hidden[row: row + 1], mask[None])[0]
                cos_shift.append(float(1 - _cos(without, perturbed)))
                goal_shift.append(float(_cos(perturbed, goal_t) - _cos(without, goal_t)))
                rows_cell.append(c)
                rows_gene.append(cell[p])
    seconds = time.perf_counter() - start
    for cell in cells:  # the null perturbation: the same cell in another batch shape
        shapes = [collate([cell], variant, multiple), collate([cell], variant, multiple, len(cell) + NULL_EXTRA_PADDING)]
        a, b_ = (mean_over_genes(stage_output(backend, x, stage), x.gene_mask.to(backend.device))[0] for x in shapes)
        null_cos.append(float(1 - _cos(a, b_)))
        null_goal.append(float(_cos(b_, goal_t) - _cos(a, goal_t)))
    return PerturbResult(np.array(rows_cell), np.array(rows_gene), np.array(cos_shift), np.array(goal_shift),
                         np.array(null_cos), np.array(null_goal), seconds, real, padded)


def shift_agreement(reference: PerturbResult, candidate: PerturbResult) -> dict:
    """Correlation of the two backends' shifts, and sign agreement above both noise floors."""
    if not (np.array_equal(reference.cell, candidate.cell) and np.array_equal(reference.gene, candidate.gene)):
        raise ValueError("the two perturbation runs did not perturb the same (cell, gene) pairs")
    floor = max(reference.noise_floor, candidate.noise_floor)
    above = (np.abs(reference.goal_shift) > floor) & (np.abs(candidate.goal_shift) > floor)
    same_sign = np.sign(reference.goal_shift[above]) == np.sign(candidate.goal_shift[above])

    def pearson(a, b):
        return float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else float("nan")

    return {
        "cos_shift_pearson": pearson(reference.cos_shift, candidate.cos_shift),
        "goal_shift_pearson": pearson(reference.goal_shift, candidate.goal_shift),
        "goal_shift_max_abs_diff": float(np.abs(reference.goal_shift - candidate.goal_shift).max()),
        "noise_floor": floor, "n_pairs": len(reference.goal_shift), "n_above_floor": int(above.sum()),
        "sign_agreement_above_floor": float(same_sign.mean()) if above.any() else float("nan"),
    }

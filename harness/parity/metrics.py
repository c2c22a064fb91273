"""Streaming error statistics between a reference tensor and a candidate tensor.

Statistics are accumulated in float64 over row chunks, so a [16k tokens × 20k vocab] logit
comparison never needs a float64 copy of the whole tensor, and several micro-batches add up to
one result. Every metric that gates is an *upper* bound (``cos_dist`` = 1 − cosine,
``top1_miss`` = 1 − top-1 agreement), so the tolerance table has one direction.
"""

from __future__ import annotations

import math

import torch

CHUNK_ELEMENTS = 1 << 24


class StageStats:
    def __init__(self, topk: bool = False):
        self.topk = topk
        self.n = 0
        self.rows = 0
        self.nonfinite = 0
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.sum_sq_diff = 0.0
        self.sum_sq_ref = 0.0
        self.sum_sq_cand = 0.0
        self.sum_ref = 0.0
        self.sum_cand = 0.0
        self.sum_ref_cand = 0.0
        self.top1_agree = 0
        self.top10_overlap = 0

    def add(self, ref: torch.Tensor, cand: torch.Tensor) -> None:
        """Add rows ``[N, D]`` of the reference and the candidate (same shape)."""
        if ref.shape != cand.shape:
            raise ValueError(f"shape mismatch: reference {tuple(ref.shape)} vs candidate {tuple(cand.shape)}")
        cand = cand.to(ref.device)
        rows_per_chunk = max(1, CHUNK_ELEMENTS // max(1, ref.shape[-1]))
        for start in range(0, ref.shape[0], rows_per_chunk):
            self._add_chunk(ref[start : start + rows_per_chunk], cand[start : start + rows_per_chunk])

    def _add_chunk(self, ref: torch.Tensor, cand: torch.Tensor) -> None:
        r, c = ref.double(), cand.double()
        finite = torch.isfinite(c).all() and torch.isfinite(r).all()
        if not finite:
            self.nonfinite += int((~torch.isfinite(c)).sum()) + int((~torch.isfinite(r)).sum())
        d = (r - c).abs()
        self.n += r.numel()
        self.rows += r.shape[0]
        self.max_abs = max(self.max_abs, float(d.max()))
        self.sum_abs += float(d.sum())
        self.sum_sq_diff += float((d * d).sum())
        self.sum_sq_ref += float((r * r).sum())
        self.sum_sq_cand += float((c * c).sum())
        self.sum_ref += float(r.sum())
        self.sum_cand += float(c.sum())
        self.sum_ref_cand += float((r * c).sum())
        if self.topk:
            self.top1_agree += int((ref.argmax(-1) == cand.argmax(-1)).sum())
            k = min(10, ref.shape[-1])
            top_r, top_c = ref.topk(k, dim=-1).indices, cand.topk(k, dim=-1).indices
            self.top10_overlap += int((top_r.unsqueeze(-1) == top_c.unsqueeze(-2)).any(-1).sum())

    @staticmethod
    def missing_result() -> dict:
        """Metrics of a stage the candidate never produced: all NaN (and so failing)."""
        nan = float("nan")
        keys = ("max_abs", "mean_abs", "rel_l2", "cos_dist", "cosine", "pearson", "top1", "top1_miss", "top10")
        return {**dict.fromkeys(keys, nan), "elements": 0, "nonfinite": 0}

    def result(self) -> dict:
        if self.n == 0:
            raise ValueError("no elements were compared")
        nan = float("nan")
        if self.nonfinite:
            out = dict.fromkeys(("max_abs", "mean_abs", "rel_l2", "cos_dist", "cosine", "pearson"), nan)
        else:
            norm = math.sqrt(self.sum_sq_ref * self.sum_sq_cand)
            cosine = self.sum_ref_cand / norm if norm else (1.0 if self.sum_sq_diff == 0 else 0.0)
            n = self.n
            cov = n * self.sum_ref_cand - self.sum_ref * self.sum_cand
            var = (n * self.sum_sq_ref - self.sum_ref**2) * (n * self.sum_sq_cand - self.sum_cand**2)
            out = {
                "max_abs": self.max_abs,
                "mean_abs": self.sum_abs / n,
                "rel_l2": math.sqrt(self.sum_sq_diff / self.sum_sq_ref)
                if self.sum_sq_ref
                else math.sqrt(self.sum_sq_diff),
                "cosine": cosine,
                "cos_dist": max(0.0, 1.0 - cosine),
                "pearson": cov / math.sqrt(var) if var > 0 else nan,
            }
        out["elements"] = self.n
        out["nonfinite"] = self.nonfinite
        if self.topk:
            out["top1"] = self.top1_agree / self.rows
            out["top1_miss"] = 1.0 - out["top1"]
            out["top10"] = self.top10_overlap / (10 * self.rows)
        return out


SKETCH_SIZE = 32  # seeded random projections an embedding is summarised by (a distance estimate)
DIGEST_DIGITS = 4  # the digest holds each value to 1e-4 of the embedding's RMS


def embedding_fingerprint(vectors, prefix: str) -> dict:
    """What a record keeps of a cell-embedding matrix so two machines' runs of the same seeded
    weights and cells can be compared without the matrix: a sha256 of the values rounded to
    ``DIGEST_DIGITS`` digits of their RMS (equal digests: the same embedding to that rounding),
    the Frobenius norm, and ``SKETCH_SIZE`` projections on seeded Gaussian directions
    (Johnson-Lindenstrauss: the distance of two sketches estimates the distance of the matrices,
    ``sketch_distance``). Records are flat, so the sketch is a comma-separated string."""
    import hashlib

    import numpy as np

    flat = np.asarray(vectors, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(flat))
    rms = norm / math.sqrt(max(flat.size, 1)) or 1.0
    rounded = np.round(flat / rms * 10**DIGEST_DIGITS).astype(np.int64)
    directions = np.random.default_rng(0).standard_normal((SKETCH_SIZE, flat.size)) / math.sqrt(SKETCH_SIZE)
    sketch = directions @ flat
    return {
        f"{prefix}sha256": hashlib.sha256(rounded.tobytes()).hexdigest()[:16],
        f"{prefix}norm": norm,
        f"{prefix}sketch": ",".join(f"{x:.9e}" for x in sketch),
    }


def sketch_distance(a: str, b: str) -> float:
    """The relative L2 distance of two embeddings, ||a - b|| / ||a||, estimated from their sketches
    (``embedding_fingerprint``; with 32 projections the estimate is within about ±25%)."""
    xa = [float(x) for x in a.split(",")]
    xb = [float(x) for x in b.split(",")]
    if len(xa) != len(xb):
        raise ValueError(f"sketches of {len(xa)} and {len(xb)} projections cannot be compared")
    diff = math.sqrt(sum((p - q) ** 2 for p, q in zip(xa, xb)))
    base = math.sqrt(sum(p * p for p in xa))
    return diff / base if base else (0.0 if diff == 0 else math.inf)

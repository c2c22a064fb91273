"""Diagnostic behind TOLERANCES.md's "Why fp64, and why the peer's worst over layers" (issue 19):
does rounding flip ReLU units of fc1 in TE fp32 and HF fp32, against HF fp64, on the train-parity
batch of V2-104M (4 synthetic cells of 256 tokens, seed 0)? Per layer: units whose pre-activation
sign differs from fp64's, hooked at each model's own fc1 output; and the MLP input's relative
error. Run on a GPU with TE, from the repository root:

    NVIDIA_TF32_OVERRIDE=0 PYTHONPATH=. python3 harness/diagnostics/relu_flips.py
"""

import torch

from harness.backends import build_backend
from harness.data.synthetic import synthetic_batch
from harness.precision import get_precision
from harness.training import masked_batch
from models.hf import random_hf_model
from models.registry import get_variant

VARIANT = get_variant("V2-104M")
MODEL = random_hf_model(VARIANT, 0)
BATCH, _ = masked_batch(synthetic_batch(VARIANT, 4, 256, 0), VARIANT, 0)
REAL = BATCH.attention_mask.bool().cuda()


def hooked(name: str, precision: str, training: bool) -> tuple[list, list]:
    """(each layer's fc1 output, each layer's MLP input) at the real tokens, in fp64."""
    backend = build_backend(name, MODEL, get_precision(precision), "cuda", training=training)
    layers = backend.model.bert.encoder.layer
    fc1 = [layer.intermediate.dense if backend.spec.family == "hf" else layer.layernorm_mlp.fc1 for layer in layers]
    taps = {t.stage: t for t in backend.taps() if t.stage.endswith("attention_norm")}
    seen: dict = {}

    def keep(key, value) -> None:
        seen[key] = value.detach().double()[REAL]

    handles = [m.register_forward_hook(lambda _m, _i, o, k=k: keep(("fc1", k), o)) for k, m in enumerate(fc1)]
    handles += [
        tap.module.register_forward_hook(lambda _m, _i, o, t=tap: keep(("input", t.stage), t.pick(o)))
        for tap in taps.values()
    ]
    with torch.no_grad():
        backend.forward_with_grad(BATCH)
    for h in handles:
        h.remove()
    n = len(layers)
    return [seen[("fc1", k)] for k in range(n)], [seen[("input", f"layer.{k}.attention_norm")] for k in range(n)]


reference, ref_inputs = hooked("hf-eager", "fp64", True)
hf32, hf32_inputs = hooked("hf-eager", "fp32", False)
te32, te32_inputs = hooked("te", "fp32", True)
print(f"{torch.cuda.get_device_name()}; units per layer: {reference[0].numel():,}")
print("layer | ReLU flips against fp64: HF fp32, TE fp32 | MLP input rel err: HF fp32, TE fp32")
for k, ref in enumerate(reference):
    flips = [int(((ref > 0) != (other[k] > 0)).sum()) for other in (hf32, te32)]
    errs = [float((x[k] - ref_inputs[k]).norm() / ref_inputs[k].norm()) for x in (hf32_inputs, te32_inputs)]
    print(f"{k:5d} | {flips[0]:4d} {flips[1]:4d} | {errs[0]:.2e} {errs[1]:.2e}")

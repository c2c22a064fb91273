"""One interface over every Geneformer implementation the suite measures.

A ``Backend`` owns a model at one precision on one device, runs ``forward(batch)`` to MLM
logits, and lists its ``taps``: the modules whose outputs are the comparable stages of the forward
(embeddings; per layer the attention output, the post-attention LayerNorm, the MLP output and the
layer output; the final hidden state; the logits). This file is the only place that knows how the
HF, TE and TE-format models differ; the parity, perf and downstream engines never branch on it.

Backends:
  hf-eager, hf-sdpa    transformers.BertForMaskedLM (the reference), attention implementation
  te                   TransformerEngine, separate TE modules (NVIDIA's TEBertLayer structure)
  te-fused             TransformerEngine, one te.TransformerLayer per layer (models/te.py says why
                       this is not the default)
  te-packed            TransformerEngine, separate TE modules, cells packed end to end (THD): no
                       work on padding; takes packed batches, and unpads padded ones itself
  te-format-torch      plain PyTorch over TE-layout weights (models/te_format_reference.py)
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from harness.capability import probe
from harness.data.batching import Batch, PackedBatch
from harness.precision import FP8_TOKEN_MULTIPLE, Precision, make_recipe, quantization, set_tf32
from models import convert
from models.checkpoint import Checkpoint, load_parameters
from models.hf import hf_model_from_checkpoint, hf_model_from_tensors
from models.te_format_reference import TEFormatTorchForMaskedLM

BACKENDS = ("hf-eager", "hf-sdpa", "te", "te-fused", "te-packed", "te-format-torch")
PACKED_BACKENDS = ("te-packed",)  # the ones that take PackedBatch (THD); the rest take padded Batch


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _plus_bias(output):
    """TE modules inside TransformerLayer return (output, bias) and add the bias later."""
    return output[0] + output[1]


@dataclass(frozen=True)
class Tap:
    stage: str
    module: nn.Module
    pick: Callable = _first


def _layer_stage(i: int, what: str) -> str:
    return f"layer.{i}.{what}"


class Backend:
    """A model ready to run at one precision; subclasses say where its stages are."""

    name: str

    def __init__(self, model: nn.Module, precision: Precision, device: str):
        self.precision = precision
        self.device = device
        self.model = model.to(device=device, dtype=precision.dtype).eval()
        self._recipe = make_recipe(precision) if precision.is_fp8 else None
        self._calibrated = False

    # -- running -------------------------------------------------------------------------
    def _call(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def _padded_only(self, batch) -> Batch:
        if isinstance(batch, PackedBatch):
            raise TypeError(f"{self.name} takes padded batches; packed (THD) batches need one of {PACKED_BACKENDS}")
        return batch

    @torch.no_grad()
    def forward(self, batch: Batch) -> torch.Tensor:
        batch = batch.to(self.device)
        set_tf32(self.precision.tf32)
        if self._recipe is not None and not self._calibrated:
            self.calibrate(batch)
        with quantization(self.precision, self._recipe):
            return self._call(batch)

    def forward_with_grad(self, batch: Batch) -> torch.Tensor:
        """The same forward with autograd on, for fine-tuning. The model stays in eval mode
        (dropout off), so HF and TE train the same deterministic function."""
        batch = batch.to(self.device)
        set_tf32(self.precision.tf32)
        with quantization(self.precision, self._recipe):
            return self._call(batch)

    def final_hidden(self, batch: Batch) -> torch.Tensor:
        """Last encoder layer's output, with autograd on (through the ``final_hidden`` tap)."""
        captured = {}
        tap = next(t for t in self.taps() if t.stage == "final_hidden")
        with hooks([tap], lambda _stage, tensor: captured.__setitem__("h", tensor)):
            self.forward_with_grad(batch)
        return captured["h"]

    def calibrate(self, batch: Batch) -> None:
        """DelayedScaling takes its scales from the amax history, which TE updates when an FP8
        region with autograd on closes: one such pass, on the data, before measuring."""
        with torch.enable_grad(), quantization(self.precision, self._recipe):
            self._call(batch)
        self._calibrated = True

    # -- stages --------------------------------------------------------------------------
    def layer_taps(self, i: int, layer: nn.Module) -> list[Tap]:
        raise NotImplementedError

    def taps(self) -> list[Tap]:
        bert = self.model.bert
        layers = list(bert.encoder.layer)
        taps = [Tap("embeddings", bert.embeddings)]
        for i, layer in enumerate(layers):
            taps += self.layer_taps(i, layer)
        taps.append(Tap("final_hidden", layers[-1]))
        taps.append(Tap("logits", self.model.cls))
        return taps

    def describe(self) -> dict:
        return {"backend": self.name, "precision": self.precision.name, "device": self.device}


class HFBackend(Backend):
    def __init__(self, model, precision, device, attn_implementation: str):
        model.set_attn_implementation(attn_implementation)
        self.name = f"hf-{attn_implementation}"
        super().__init__(model, precision, device)

    def _call(self, batch: Batch) -> torch.Tensor:
        batch = self._padded_only(batch)
        return self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits

    def layer_taps(self, i, layer):
        return [
            Tap(_layer_stage(i, "attention"), layer.attention.output.dense),
            Tap(_layer_stage(i, "attention_norm"), layer.attention.output),
            Tap(_layer_stage(i, "mlp"), layer.output.dense),
            Tap(_layer_stage(i, "output"), layer),
        ]


class TEFormatTorchBackend(Backend):
    name = "te-format-torch"

    def _call(self, batch: Batch) -> torch.Tensor:
        batch = self._padded_only(batch)
        return self.model(batch.input_ids, None if batch.full else batch.attention_mask)

    def layer_taps(self, i, layer):
        return [
            Tap(_layer_stage(i, "attention"), layer.self_attention),
            Tap(_layer_stage(i, "attention_norm"), layer.layernorm),
            Tap(_layer_stage(i, "mlp"), layer.layernorm_mlp),
            Tap(_layer_stage(i, "output"), layer),
        ]


class TEBackend(TEFormatTorchBackend):
    """TransformerEngine; the model's ``impl`` is the modular build or the fused TransformerLayer."""

    def __init__(self, model, precision, device):
        self.name = "te" if model.impl == "modular" else "te-fused"
        super().__init__(model, precision, device)

    def layer_taps(self, i, layer):
        if self.model.impl == "modular":
            return [
                Tap(_layer_stage(i, "attention"), layer.self_attention),
                Tap(_layer_stage(i, "attention_norm"), layer.layernorm),
                Tap(_layer_stage(i, "mlp"), layer.layernorm_mlp.fc2),
                Tap(_layer_stage(i, "output"), layer),
            ]
        block = layer.block
        return [
            Tap(_layer_stage(i, "attention"), block.self_attention, _plus_bias),
            # LayerNormMLP returns (fc2 output, fc2 bias, its LayerNorm output): the LayerNorm
            # fused into it is the post-attention one.
            Tap(_layer_stage(i, "attention_norm"), block.layernorm_mlp, lambda o: o[2]),
            Tap(_layer_stage(i, "mlp"), block.layernorm_mlp, _plus_bias),
            Tap(_layer_stage(i, "output"), layer),
        ]


class TEPackedBackend(TEBackend):
    """TE over cells packed end to end (THD). A ``PackedBatch`` runs as it is and gives [T, ...]
    outputs; a padded ``Batch`` is unpadded, run packed, and every output (logits and each tap)
    is put back in its [B, S, ...] place with zeros at the padding, so parity compares it like
    any other backend."""

    def __init__(self, model, precision, device):
        super().__init__(model, precision, device)
        self.name = "te-packed"
        self._padded_shape = None  # (B, S, flat positions) while a padded batch is running

    def _call(self, batch) -> torch.Tensor:
        if isinstance(batch, PackedBatch):
            return self._run(batch)
        multiple = FP8_TOKEN_MULTIPLE if self.precision.is_fp8 else 1
        packed, where = batch.packed(multiple)
        self._padded_shape = (*batch.input_ids.shape, where)
        try:
            return self._repad(self._run(packed))
        finally:
            self._padded_shape = None

    def _run(self, packed: PackedBatch) -> torch.Tensor:
        return self.model.forward_packed(packed.input_ids, packed.position_ids, packed.cu_seqlens, packed.max_seqlen)

    def _repad(self, flat: torch.Tensor) -> torch.Tensor:
        if self._padded_shape is None:
            return flat
        B, S, where = self._padded_shape
        out = flat.new_zeros(B * S, *flat.shape[1:])
        out[where] = flat[: len(where)]
        return out.view(B, S, *flat.shape[1:])

    def taps(self) -> list[Tap]:
        return [Tap(t.stage, t.module, lambda out, pick=t.pick: self._repad(pick(out))) for t in super().taps()]


def te_format_tensors(ckpt_or_hf: Checkpoint | nn.Module) -> tuple[dict, dict]:
    """(TE-layout tensors, config) from a TE checkpoint, an HF checkpoint or an HF model."""
    if isinstance(ckpt_or_hf, Checkpoint):
        cfg = ckpt_or_hf.config
        tensors = ckpt_or_hf.parameters()
        if ckpt_or_hf.layout == "te":
            return tensors, cfg
        state = tensors
    else:
        cfg = ckpt_or_hf.config.to_dict()
        state = ckpt_or_hf.state_dict()
    te_tensors, _ = convert.convert_state_dict(
        state, "te", cfg["num_hidden_layers"], cfg["num_attention_heads"]
    )
    return te_tensors, cfg


def build_backend(name: str, source, precision: Precision, device: str | None = None) -> Backend:
    """A backend of ``name`` over ``source``: a Checkpoint (HF or TE layout; converted as the
    backend needs) or an in-memory HF model (random-init runs)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    reason = probe().skip_reason(name, precision)
    if reason:
        raise RuntimeError(f"{name} at {precision.name} cannot run here: {reason}")
    device = device or probe().device
    if name.startswith("hf-"):
        attn = name.removeprefix("hf-")
        if not isinstance(source, Checkpoint):
            model = copy.deepcopy(source)  # the backend casts its model; leave the caller's alone
        elif source.layout == "hf":
            model = hf_model_from_checkpoint(source, attn)
        else:
            cfg = source.config
            hf_tensors, _ = convert.convert_state_dict(
                source.parameters(), "hf", cfg["num_hidden_layers"], cfg["num_attention_heads"]
            )
            model = hf_model_from_tensors(cfg, hf_tensors, attn)
        return HFBackend(model, precision, device, attn)
    tensors, cfg = te_format_tensors(source)
    if name == "te-format-torch":
        model = TEFormatTorchForMaskedLM(cfg)
        load_parameters(model, tensors)
        return TEFormatTorchBackend(model, precision, device)
    from models.te import TEGeneformerForMaskedLM

    model = TEGeneformerForMaskedLM(cfg, impl="fused" if name == "te-fused" else "modular",
                                    qkv_format="thd" if name == "te-packed" else "bshd").to(device)
    model.load_checkpoint_tensors(tensors)
    return (TEPackedBackend if name == "te-packed" else TEBackend)(model, precision, device)


@contextlib.contextmanager
def hooks(taps: list[Tap], sink: Callable[[str, torch.Tensor], None]):
    """Call ``sink(stage, tensor)`` for every tap as the forward pass reaches it."""
    handles = [
        tap.module.register_forward_hook(lambda _m, _i, out, tap=tap: sink(tap.stage, tap.pick(out)))
        for tap in taps
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()

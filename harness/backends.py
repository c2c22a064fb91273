"""One interface over every Geneformer implementation the suite measures.

A ``Backend`` owns a model at one precision on one device, runs ``forward(batch)`` to MLM
logits, and lists its ``taps``: the modules whose outputs are the comparable stages of the forward
(embeddings; per layer the attention output, the post-attention LayerNorm, the MLP output and the
layer output; the final hidden state; the logits). This file is the only place that knows how the
HF, TE and TE-format models differ; the parity, perf and downstream engines never branch on it.

Backends:
  hf-eager, hf-sdpa    transformers.BertForMaskedLM (the reference), attention implementation
  hf-sdpa-compile      the same with sdpa under ``torch.compile``: what a user would pick instead of TE
  te                   TransformerEngine, separate TE modules (NVIDIA's TEBertLayer structure)
  te-fused             TransformerEngine, one te.TransformerLayer per layer (models/te.py says why
                       this is not the default)
  te-packed            TransformerEngine, separate TE modules, cells packed end to end (THD): no
                       work on padding; takes packed batches, and unpads padded ones itself
  te-format-torch      plain PyTorch over TE-layout weights (models/te_format_reference.py); takes
                       padded and packed batches (a block-diagonal mask), so CPU tests cover both

Workloads that need hidden states, not logits (embeddings, perturbation, probes), call
``encode(batch, n_layers)``: only the layers up to the one read run, and no MLM head. Each backend
says which input layout it runs fastest (``input_layout``); the workloads batch cells that way.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from harness.backend_names import PACKED_BACKENDS, TE_BACKENDS, BackendSpec, backend_spec
from harness.capability import probe
from harness.data.batching import SHAPE_MULTIPLE, Batch, PackedBatch
from harness.precision import Precision, calibrate, make_recipe, quantization, set_tf32
from models import convert
from models.checkpoint import Checkpoint, load_parameters
from models.errors import CannotRunHere, UsageError
from models.te_format_reference import TEFormatTorchForMaskedLM

# TE's NVTE_Fused_Attn_Backend values, which its selector reports as bare integers
FUSED_ATTENTION_BACKENDS = {0: "F16_max512_seqlen", 1: "F16_arbitrary_seqlen", 2: "FP8"}


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
    """A model ready to run at one precision; subclasses say where its stages are. What the backend
    is (its name, layout, attention, compile) is its row in ``harness.backend_names.SPECS``."""

    # Tokens × hidden size per batch it runs best at (``harness.embeddings.default_token_budget``),
    # from the calibrations of results/h200/workload-embed-*-best-h200.json (559 real cells x9):
    # TE's fastest budgets were 262,144 tokens (V1-10M), 131,072 (V2-104M) and 229,376 (V2-316M);
    # 2^27 values (524,288 / 172,032 / 114,688 tokens) is within 3.4% of each on the H200 (interpolated).
    batch_values = 1 << 27
    # Token multiple its padded batches are rounded up to (``harness.data.batching.budget_plan``;
    # the batch's length is also kept a multiple of its precision's token multiple, FP8's 16). The
    # workload benchmark calibrates it per backend (gfqual bench --workload embed: its calibration
    # records carrying ``pad_multiple``, in results/h200/workload-embed-*-best-h200.json once run);
    # until a backend's own is measured, the default SHAPE_MULTIPLE (128) of before. A packed (THD)
    # backend ignores it: its batches carry no padding.
    pad_multiple = SHAPE_MULTIPLE

    def __init__(self, spec: BackendSpec, model: nn.Module, precision: Precision, device: str, training: bool = False):
        """``training``: keep the weights in fp32 for a mixed-precision precision (its products run
        at its dtype under ``torch.autocast`` in ``forward_with_grad``), as users train."""
        self.spec = spec
        self.name = spec.name
        self.precision = precision
        self.device = device
        self.training = training
        dtype = torch.float32 if training and precision.mixed else precision.dtype
        self.model = model.to(device=device, dtype=dtype).eval()
        self._recipe = make_recipe(precision) if precision.is_fp8 else None
        self._calibrated = False

    @property
    def input_layout(self) -> str:
        """The batches it runs fastest: "padded" (Batch) or "packed" (PackedBatch)."""
        return self.spec.layout

    # -- running -------------------------------------------------------------------------
    def _call(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def _encode(self, batch, n_layers: int) -> torch.Tensor:
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

    @torch.no_grad()
    def encode(self, batch, n_layers: int) -> torch.Tensor:
        """Hidden states after the first ``n_layers`` encoder layers ([B, S, H] for a padded
        batch, [T, H] for a packed one), running nothing after them: no host sync, no hooks."""
        batch = batch.to(self.device, non_blocking=True)
        set_tf32(self.precision.tf32)
        if self._recipe is not None and not self._calibrated:  # on two cells: autograd keeps activations
            self.calibrate(batch.first_cells(2, self.precision.token_multiple))
        with quantization(self.precision, self._recipe):
            return self._encode(batch, n_layers)

    @property
    def materializes_attention(self) -> bool:
        """Whether attention builds the [cells, heads, S, S] scores (eager attention; TE at fp32,
        which no fused kernel supports): such a backend pays for every padded position and is
        never given batches padded to a fixed shape."""
        return False

    def attention_bytes_per_token(self, variant) -> int:
        """Memory the attention holds per token beyond the layer's activations (for batch sizing):
        fp32 scores, softmax and its copy per head over the context when it materializes them."""
        return 3 * 4 * variant.num_attention_heads * variant.context if self.materializes_attention else 0

    def forward_with_grad(self, batch: Batch) -> torch.Tensor:
        """The same forward with autograd on, for training. The model stays in eval mode (dropout
        off), so HF and TE train the same deterministic function; a backend built for training at
        a mixed precision runs it under ``torch.autocast``."""
        batch = batch.to(self.device)
        set_tf32(self.precision.tf32)
        autocast = self.training and self.precision.mixed
        with (
            torch.autocast(self.device.split(":")[0], dtype=self.precision.dtype, enabled=autocast),
            quantization(self.precision, self._recipe),
        ):
            return self._call(batch)

    def final_hidden(self, batch: Batch) -> torch.Tensor:
        """Last encoder layer's output, with autograd on (through the ``final_hidden`` tap)."""
        captured = {}
        tap = next(t for t in self.taps() if t.stage == "final_hidden")
        with hooks([tap], lambda _stage, tensor: captured.__setitem__("h", tensor)):
            self.forward_with_grad(batch)
        return captured["h"]

    def calibrate(self, batch: Batch) -> None:
        """One calibration pass of the FP8 recipe on the data (``harness.precision.calibrate``)."""
        calibrate(self.precision, self._recipe, lambda: self._call(batch))
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

    @property
    def attention_backend(self) -> str | None:
        """The attention kernel the last forward ran, as the library reports it (None: not known)."""
        return "torch (unfused: scores materialized)"


class HFBackend(Backend):
    """HF as shipped, given its own best settings: no attention mask when no cell is padded (so
    sdpa may take its flash kernel), and optionally ``torch.compile`` over the encoder."""

    # HF runs slower at large batches: its fastest were 131,072-262,144 tokens (V1-10M) and 65,536
    # (V2-104M, V2-316M); 2^26 values (262,144 / 86,016 / 57,344 tokens) is within 2% of each (interpolated).
    batch_values = 1 << 26
    # Padded to 64, not 128: on the H200 (workload-embed-V1-10M-best-h200.json, at 7a00fa9) 64 was the
    # faster of the two on V1-10M's real cells (6,799 against 6,730 cells/s on the calibration
    # sample), and HF's engine reached 97% of its plain loop, which pads to 64 (95% at 128).
    pad_multiple = 64

    def __init__(self, spec, model, precision, device, training=False):
        model.set_attn_implementation(spec.attention)
        super().__init__(spec, model, precision, device, training)
        self._bert = torch.compile(self.model.bert, dynamic=True) if spec.compiled else self.model.bert

    @property
    def materializes_attention(self) -> bool:
        return self.spec.attention == "eager"

    def attention_bytes_per_token(self, variant) -> int:
        """eager: the scores; sdpa: the [B, 1, S, S] mask transformers expands a padding mask into."""
        return super().attention_bytes_per_token(variant) or 4 * variant.context

    @property
    def attention_backend(self) -> str | None:
        """eager materializes the scores; sdpa leaves the kernel to PyTorch's dispatcher."""
        return (
            "torch eager (scores materialized)"
            if self.materializes_attention
            else "torch sdpa (kernel chosen by PyTorch)"
        )

    @staticmethod
    def _mask(batch: Batch):
        return None if batch.full else batch.attention_mask

    def _call(self, batch: Batch) -> torch.Tensor:
        batch = self._padded_only(batch)
        return self.model.cls(self._bert(input_ids=batch.input_ids, attention_mask=self._mask(batch))[0])

    def _encode(self, batch, n_layers):
        batch = self._padded_only(batch)
        encoder = self.model.bert.encoder
        layers = encoder.layer
        encoder.layer = layers[:n_layers]  # BertModel has no final norm: its output is this layer's
        try:
            return self._bert(input_ids=batch.input_ids, attention_mask=self._mask(batch))[0]
        finally:
            encoder.layer = layers

    def layer_taps(self, i, layer):
        return [
            Tap(_layer_stage(i, "attention"), layer.attention.output.dense),
            Tap(_layer_stage(i, "attention_norm"), layer.attention.output),
            Tap(_layer_stage(i, "mlp"), layer.output.dense),
            Tap(_layer_stage(i, "output"), layer),
        ]


class TEFormatTorchBackend(Backend):
    @property
    def materializes_attention(self) -> bool:
        """Plain PyTorch attention; TE too at fp32 (its fused attention has no fp32 kernel)."""
        return self.spec.attention == "eager" or self.precision.dtype == torch.float32

    def _call(self, batch) -> torch.Tensor:
        if isinstance(batch, PackedBatch):
            return self.model.forward_packed(batch.input_ids, batch.position_ids, batch.cu_seqlens, batch.max_seqlen)
        return self.model(batch.input_ids, None if batch.full else batch.attention_mask)

    def _encode(self, batch, n_layers):
        if isinstance(batch, PackedBatch):
            return self.model.encode_packed(
                batch.input_ids, batch.position_ids, batch.cu_seqlens, batch.max_seqlen, n_layers
            )
        return self.model.encode(batch.input_ids, None if batch.full else batch.attention_mask, n_layers)

    def layer_taps(self, i, layer):
        return [
            Tap(_layer_stage(i, "attention"), layer.self_attention),
            Tap(_layer_stage(i, "attention_norm"), layer.layernorm),
            Tap(_layer_stage(i, "mlp"), layer.layernorm_mlp),
            Tap(_layer_stage(i, "output"), layer),
        ]


class TEBackend(TEFormatTorchBackend):
    """TransformerEngine; the model's ``impl`` is the modular build or the fused TransformerLayer."""

    def _call(self, batch) -> torch.Tensor:
        batch = self._padded_only(batch)
        return super()._call(batch)

    @property
    def attention_backend(self) -> str | None:
        """The backend TE's DotProductAttention selected for the last forward: FlashAttention (with
        its version), FusedAttention (cuDNN, with its sub-backend) or the unfused PyTorch path."""
        if self.materializes_attention:  # TE at fp32: its unfused path
            return super().attention_backend
        from transformer_engine.pytorch.attention.dot_product_attention import _attention_backends as chosen

        if chosen.get("use_flash_attention"):
            return f"TE FlashAttention {chosen.get('flash_attention_backend')}"
        if chosen.get("use_fused_attention"):
            sub = chosen.get("fused_attention_backend")
            return f"TE FusedAttention (cuDNN {FUSED_ATTENTION_BACKENDS.get(int(sub), sub)})"
        if chosen.get("use_unfused_attention"):
            return "TE UnfusedDotProductAttention"
        return None

    def _encode(self, batch, n_layers):
        batch = self._padded_only(batch)
        return super()._encode(batch, n_layers)

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

    def __init__(self, spec, model, precision, device, training=False):
        super().__init__(spec, model, precision, device, training)
        self._padded_shape = None  # (B, S, flat positions) while a padded batch is running

    def _call(self, batch) -> torch.Tensor:
        return self._packed_run(batch, self.model.forward_packed)

    def _encode(self, batch, n_layers):
        return self._packed_run(batch, lambda *a: self.model.encode_packed(*a, n_layers))

    def _packed_run(self, batch, run) -> torch.Tensor:
        if isinstance(batch, PackedBatch):
            return run(batch.input_ids, batch.position_ids, batch.cu_seqlens, batch.max_seqlen)
        packed, where = batch.packed(self.precision.token_multiple)
        self._padded_shape = (*batch.input_ids.shape, where)
        try:
            return self._repad(run(packed.input_ids, packed.position_ids, packed.cu_seqlens, packed.max_seqlen))
        finally:
            self._padded_shape = None

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
    te_tensors, _ = convert.convert_state_dict(state, "te", cfg["num_hidden_layers"], cfg["num_attention_heads"])
    return te_tensors, cfg


def backend_class(spec: BackendSpec) -> type[Backend]:
    """The class that runs a backend of ``spec``: HF's, TE's (packed when its layout is), or the
    TE layout in plain PyTorch."""
    if spec.family == "hf":
        return HFBackend
    if not spec.needs_te:
        return TEFormatTorchBackend
    return TEPackedBackend if spec.layout == "packed" else TEBackend


def build_backend(
    name: str, source, precision: Precision, device: str | None = None, training: bool = False
) -> Backend:
    """A backend of ``name`` over ``source``: a Checkpoint (HF or TE layout; converted as the
    backend needs) or an in-memory HF model (random-init runs); ``training``: see ``Backend``."""
    spec = backend_spec(name)
    if precision.recipe is not None and not spec.needs_te:  # impossible anywhere, not only here
        raise UsageError(
            f"{name} at {precision.name}: {precision.name} is a TransformerEngine recipe and {name} has no FP8 path "
            f"on any machine; choose a TE backend ({', '.join(TE_BACKENDS)}) or bf16"
        )
    reason = probe().skip_reason(name, precision)
    if reason:
        hint = "; te-format-torch runs the TE checkpoint layout in plain PyTorch on a CPU" if spec.needs_te else ""
        raise CannotRunHere(f"{name} at {precision.name} cannot run here: {reason}{hint}")
    if device and str(device).startswith("cuda") and not torch.cuda.is_available():
        raise CannotRunHere(f"--device {device}: no CUDA GPU is visible here; use --device cpu")
    device = device or probe().device
    if spec.family == "hf":
        from models.hf import hf_model_from_checkpoint, hf_model_from_tensors  # transformers: HF's path only

        attn = spec.attention
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
    else:
        tensors, cfg = te_format_tensors(source)
        if spec.te_layer is None:
            model = TEFormatTorchForMaskedLM(cfg)
            load_parameters(model, tensors)
        else:
            from models.te import TEGeneformerForMaskedLM

            qkv_format = "thd" if spec.layout == "packed" else "bshd"
            model = TEGeneformerForMaskedLM(cfg, impl=spec.te_layer, qkv_format=qkv_format).to(device)
            model.load_checkpoint_tensors(tensors)
    return backend_class(spec)(spec, model, precision, device, training)


@contextlib.contextmanager
def hooks(taps: list[Tap], sink: Callable[[str, torch.Tensor], None]):
    """Call ``sink(stage, tensor)`` for every tap as the forward pass reaches it."""
    handles = [
        tap.module.register_forward_hook(lambda _m, _i, out, tap=tap: sink(tap.stage, tap.pick(out))) for tap in taps
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()

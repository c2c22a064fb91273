"""Names the command line offers, apart from the code behind them (the backends: ``harness.backends``;
a sweep point's passes: ``harness.perf.sweep``; the training objectives: ``harness.training``), so
that it can offer them without importing torch and transformers (``gfqual tokenize --help`` starts
in well under a second).

The backends are one table, ``SPECS``: what each backend is, asked by every engine, the capability
probe and the reports instead of reading it from the name. Adding a backend is one row here plus
the class ``harness.backends.build_backend`` maps it to."""

from __future__ import annotations

from dataclasses import dataclass

from models.errors import UsageError

FORWARDS = ("mlm", "encoder", "train")  # a pass: to MLM logits, the encoder alone, or a training step
OBJECTIVES = ("mlm", "classify")  # training: MLM pretraining, cell-classifier fine-tuning


@dataclass(frozen=True)
class BackendSpec:
    """One backend. ``family``: whose implementation it runs ("hf": transformers; "te": the TE
    checkpoint layout, the plain loop it is held to and the side parity puts it on); ``layout``:
    the batches it runs fastest ("padded" or "packed" THD: ``Backend.input_layout``); ``attention``:
    "eager" (scores materialized in plain PyTorch), "sdpa" (PyTorch's dispatcher) or "te" (TE's
    DotProductAttention); ``compiled``: under ``torch.compile``; ``te_layer``: the TE build it runs
    (``models.te.IMPLEMENTATIONS``; None: no TransformerEngine); ``trains``: the objectives it can
    be trained on."""

    name: str
    family: str
    layout: str
    attention: str
    compiled: bool = False
    te_layer: str | None = None
    trains: tuple[str, ...] = OBJECTIVES

    @property
    def needs_te(self) -> bool:
        """Runs TransformerEngine: needs a CUDA GPU with TE, and is the only kind with FP8 paths."""
        return self.te_layer is not None


SPECS = (
    BackendSpec("hf-eager", "hf", "padded", "eager"),
    BackendSpec("hf-sdpa", "hf", "padded", "sdpa"),
    BackendSpec("hf-sdpa-compile", "hf", "padded", "sdpa", compiled=True),
    BackendSpec("te", "te", "padded", "te", te_layer="modular"),
    BackendSpec("te-fused", "te", "padded", "te", te_layer="fused"),
    BackendSpec("te-packed", "te", "packed", "te", te_layer="modular"),
    # plain PyTorch over TE-layout weights: takes packed batches too (a block-diagonal mask), but
    # runs padded ones fastest, so CPU tests cover both
    BackendSpec("te-format-torch", "te", "padded", "eager"),
)
_BY_NAME = {s.name: s for s in SPECS}


def backend_spec(name: str) -> BackendSpec:
    """The spec of the backend ``name``; an unknown name is bad input, answered with the known ones."""
    spec = _BY_NAME.get(name)
    if spec is None:
        raise UsageError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    return spec


def backends_where(**fields) -> tuple[str, ...]:
    """The names of the backends whose spec has every given value, e.g. ``backends_where(family="te")``."""
    return tuple(s.name for s in SPECS if all(getattr(s, k) == v for k, v in fields.items()))


BACKENDS = tuple(_BY_NAME)
PACKED_BACKENDS = backends_where(layout="packed")  # the ones that run PackedBatch (THD) fastest
TE_BACKENDS = backends_where(needs_te=True)  # the ones that need TransformerEngine (a GPU)

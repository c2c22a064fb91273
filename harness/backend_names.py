"""The backends' names and the passes a point runs, apart from their code (``harness.backends``,
``harness.perf.sweep``), so that the command line can offer them without importing torch and
transformers (``gfqual tokenize --help`` starts in well under a second)."""

BACKENDS = ("hf-eager", "hf-sdpa", "hf-sdpa-compile", "te", "te-fused", "te-packed", "te-format-torch")
PACKED_BACKENDS = ("te-packed",)  # the ones that run PackedBatch (THD) fastest; see Backend.input_layout
FORWARDS = ("mlm", "encoder", "train")  # a pass: to MLM logits, the encoder alone, or a training step

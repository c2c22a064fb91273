"""The backends' names, apart from their code (``harness.backends``), so that the command line can
offer them without importing torch and transformers (``gfqual tokenize --help`` starts in well
under a second)."""

BACKENDS = ("hf-eager", "hf-sdpa", "hf-sdpa-compile", "te", "te-fused", "te-packed", "te-format-torch")
PACKED_BACKENDS = ("te-packed",)  # the ones that run PackedBatch (THD) fastest; see Backend.input_layout

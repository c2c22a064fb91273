"""Names the command line offers, apart from the code behind them (the backends: ``harness.backends``;
a sweep point's passes: ``harness.perf.sweep``; the training objectives: ``harness.training``), so
that it can offer them without importing torch and transformers (``gfqual tokenize --help`` starts
in well under a second)."""

BACKENDS = ("hf-eager", "hf-sdpa", "hf-sdpa-compile", "te", "te-fused", "te-packed", "te-format-torch")
PACKED_BACKENDS = ("te-packed",)  # the ones that run PackedBatch (THD) fastest; see Backend.input_layout
FORWARDS = ("mlm", "encoder", "train")  # a pass: to MLM logits, the encoder alone, or a training step
OBJECTIVES = ("mlm", "classify")  # training: MLM pretraining, cell-classifier fine-tuning

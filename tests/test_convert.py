"""HF ⇄ TE conversion: layout, strictness, lossless round trip."""

from __future__ import annotations

import pytest
import torch

from models import convert
from models.hf import random_hf_model
from models.registry import VARIANTS


def test_qkv_rows_are_heads_by_3_by_head_dim():
    heads, hd, H = 3, 4, 12
    q = torch.arange(heads * hd * H, dtype=torch.float32).reshape(heads * hd, H)
    k, v = q + 1000, q + 2000
    (qkv,) = convert._pack_qkv([q, k, v], heads)
    packed = qkv.view(heads, 3, hd, H)
    for h in range(heads):
        for j, src in enumerate((q, k, v)):
            assert torch.equal(packed[h, j], src[h * hd : (h + 1) * hd])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_hf_te_hf_round_trip_is_bit_identical(variant):
    v = VARIANTS[variant]
    hf = random_hf_model(v, seed=1).state_dict()
    te, report = convert.convert_state_dict(hf, "te", v.num_hidden_layers, v.num_attention_heads)
    assert set(te) == set(convert.layout_keys("te", v.num_hidden_layers))
    assert report.tied_verified == list(convert.TIED)
    back, _ = convert.convert_state_dict(te, "hf", v.num_hidden_layers, v.num_attention_heads)
    canonical, _, _ = convert.canonical_tensors(hf)
    assert set(back) == set(canonical)
    for key, tensor in canonical.items():
        assert back[key].dtype == tensor.dtype and torch.equal(back[key], tensor), key


def test_shapes_from_table_match_the_real_hf_model():
    cfg = VARIANTS["V1-10M"].bert_config()
    real, _, _ = convert.canonical_tensors(random_hf_model(VARIANTS["V1-10M"], 0).state_dict())
    assert convert.parameter_shapes(cfg, "hf") == {k: tuple(t.shape) for k, t in real.items()}


@pytest.fixture(scope="module")
def small_hf():
    return random_hf_model(VARIANTS["V1-10M"], seed=2).state_dict()


def test_unexpected_tensor_is_an_error(small_hf):
    bad = {**small_hf, "bert.pooler.dense.weight": torch.zeros(2, 2)}
    with pytest.raises(convert.ConversionError, match="not covered by the conversion table.*pooler"):
        convert.convert_state_dict(bad, "te", 6, 4)


def test_missing_tensor_is_an_error(small_hf):
    bad = dict(small_hf)
    del bad["bert.encoder.layer.3.attention.self.key.bias"]
    with pytest.raises(convert.ConversionError, match="missing bert.encoder.layer.3.attention.self.key.bias"):
        convert.convert_state_dict(bad, "te", 6, 4)


def test_untied_decoder_is_an_error(small_hf):
    bad = {**small_hf, "cls.predictions.decoder.weight": small_hf["cls.predictions.decoder.weight"] + 1}
    with pytest.raises(convert.ConversionError, match="not equal to bert.embeddings.word_embeddings.weight"):
        convert.convert_state_dict(bad, "te", 6, 4)


def test_te_extra_state_and_old_buffers_are_ignored_and_reported(small_hf):
    te, _ = convert.convert_state_dict(small_hf, "te", 6, 4)
    te["bert.encoder.layer.0.self_attention.qkv._extra_state"] = torch.zeros(3)
    _, report = convert.convert_state_dict(te, "hf", 6, 4)
    assert report.ignored == ["bert.encoder.layer.0.self_attention.qkv._extra_state"]


def test_converting_to_the_layout_it_already_has_is_an_error(small_hf):
    with pytest.raises(convert.ConversionError, match="already hf"):
        convert.convert_state_dict(small_hf, "hf", 6, 4)


def test_layer_count_must_match_config(small_hf):
    with pytest.raises(convert.ConversionError, match="config.json says 5 layers, the weights hold 6"):
        convert.convert_state_dict(small_hf, "te", 5, 4)


def test_nvidia_style_mixed_bf16_export_converts_to_an_hf_checkpoint_the_plain_loader_reads_exactly(tmp_path):
    """NVIDIA's TE export of V1-10M (no torch_dtype in its HF config, so their class defaults to
    bf16): encoder weights bf16, embeddings and head fp32, TE config keys, ``_extra_state``, both
    weight files. ``gfqual convert --to hf`` must give a config dtype that every tensor fits, so
    ``BertForMaskedLM.from_pretrained`` (dtype "auto") changes no value."""
    import json

    from safetensors.torch import save_file
    from transformers import BertForMaskedLM

    from harness.cli import main

    v = VARIANTS["V1-10M"]
    te, _ = convert.convert_state_dict(
        random_hf_model(v, seed=3).state_dict(), "te", v.num_hidden_layers, v.num_attention_heads
    )
    te = {k: (t.to(torch.bfloat16) if ".encoder." in k else t).contiguous() for k, t in te.items()}
    export = tmp_path / "nvidia-te"
    export.mkdir()
    extra = {"bert.encoder.layer.0.self_attention.core_attention._extra_state": torch.zeros(0, dtype=torch.uint8)}
    save_file({**te, **extra}, str(export / "model.safetensors"))
    torch.save({**te, **extra}, export / "pytorch_model.bin")
    config = {
        **v.bert_config(),
        "use_te_layers": True,
        "fuse_qkv_params": True,
        "torch_dtype": "bfloat16",
        "architectures": ["BertForMaskedLM"],
        "auto_map": {"AutoModelForMaskedLM": "modeling_bert_te.BertForMaskedLM"},
    }
    (export / "config.json").write_text(json.dumps(config))
    assert {str(t.dtype) for t in te.values()} == {"torch.bfloat16", "torch.float32"}

    assert main(["convert", "--from", str(export), "--to", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "float32"
    expected, _ = convert.convert_state_dict(te, "hf", v.num_hidden_layers, v.num_attention_heads)
    loaded = BertForMaskedLM.from_pretrained(tmp_path / "hf").state_dict()
    for key, tensor in expected.items():
        assert loaded[key].dtype == torch.float32 and torch.equal(loaded[key], tensor.float()), key

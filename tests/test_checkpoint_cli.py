"""Checkpoint directories and the CLI: the bad inputs of the foundation issue, each with the
error that names it, and nothing half-written."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.cli import main
from models.checkpoint import CheckpointError, read_checkpoint, verify_official, write_checkpoint
from models.registry import VARIANTS, get_variant


def _err(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_cli_round_trip_files_are_bit_identical(ckpts):
    a, b = load_file(str(ckpts / "hf/model.safetensors")), load_file(str(ckpts / "hf2/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    te_cfg = json.loads((ckpts / "te/config.json").read_text())
    assert te_cfg["use_te_layers"] and te_cfg["fuse_qkv_params"] and te_cfg["torch_dtype"] == "float32"


def test_cli_parity_passes_and_writes_a_result(ckpts, tmp_path, capsys):
    out = tmp_path / "p.json"
    rc = main(
        [
            "parity",
            "--reference",
            str(ckpts / "hf"),
            "--candidate",
            str(ckpts / "te"),
            "--backend",
            "te-format-torch",
            "--length",
            "32",
            "--json",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["weights"]["candidate"]["layout"] == "te"
    assert {r["record"] for r in result["records"]} == {"stage", "verdict"}


def test_cli_parity_fails_with_exit_1_on_a_broken_candidate(ckpts, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((ckpts / "te/config.json").read_text())
    tensors = load_file(str(ckpts / "te/model.safetensors"))
    tensors["bert.encoder.layer.1.layernorm.weight"] *= 1.001
    save_file(tensors, str(broken / "model.safetensors"))
    rc = main(
        [
            "parity",
            "--reference",
            str(ckpts / "hf"),
            "--candidate",
            str(broken),
            "--backend",
            "te-format-torch",
            "--length",
            "32",
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    assert rc == 1


def test_missing_directory(capsys, tmp_path):
    assert "does not exist" in _err(
        capsys, ["convert", "--from", str(tmp_path / "nope"), "--to", "te", "--out", str(tmp_path / "o")]
    )


def test_missing_weight_file(capsys, ckpts, tmp_path):
    (tmp_path / "config.json").write_text((ckpts / "hf/config.json").read_text())
    assert "has no weight file" in _err(
        capsys, ["convert", "--from", str(tmp_path), "--to", "te", "--out", str(tmp_path / "o")]
    )


def test_config_that_does_not_match_the_weights(ckpts, tmp_path):
    cfg = json.loads((ckpts / "hf/config.json").read_text())
    cfg["intermediate_size"] = 1024
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").write_bytes((ckpts / "hf/model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="does not match the weights' shapes.*intermediate.dense.weight"):
        read_checkpoint(tmp_path)


def test_vocabulary_of_config_and_weights_disagree(ckpts, tmp_path):
    cfg = json.loads((ckpts / "hf/config.json").read_text())
    cfg["vocab_size"] = 20275
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").write_bytes((ckpts / "hf/model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="vocab_size is 20275, but the word embeddings hold 25426"):
        read_checkpoint(tmp_path)


def test_unknown_variant(capsys, tmp_path):
    assert "unknown Geneformer variant 'V3-1B'" in _err(
        capsys, ["init", "--variant", "V3-1B", "--out", str(tmp_path / "x")]
    )


def test_te_where_hf_expected_and_vice_versa(ckpts, capsys):
    msg = _err(capsys, ["parity", "--reference", str(ckpts / "te"), "--candidate", str(ckpts / "te")])
    assert "is a TransformerEngine (TE) checkpoint, but a Hugging Face (HF) checkpoint was expected" in msg
    msg = _err(capsys, ["parity", "--reference", str(ckpts / "hf"), "--candidate", str(ckpts / "hf")])
    assert "is a Hugging Face (HF) checkpoint, but a TransformerEngine (TE) checkpoint was expected" in msg


def test_vocabulary_does_not_match_the_named_variant(ckpts, capsys):
    msg = _err(
        capsys, ["parity", "--reference", str(ckpts / "hf"), "--candidate", str(ckpts / "te"), "--variant", "V2-104M"]
    )
    assert "vocabulary size 25426 does not match variant V2-104M (20275 tokens" in msg


def test_sha256_differs_from_the_official_one(ckpts, capsys):
    with pytest.raises(CheckpointError, match="differs from the official V1-10M model.safetensors"):
        verify_official(read_checkpoint(ckpts / "hf"), get_variant("V1-10M"))
    assert "differs from the official" in _err(
        capsys, ["verify", "--checkpoint", str(ckpts / "hf"), "--variant", "V1-10M"]
    )


def test_corrupt_weight_file(ckpts, tmp_path):
    (tmp_path / "config.json").write_text((ckpts / "hf/config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        read_checkpoint(tmp_path)


def test_output_is_never_half_written(ckpts, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("user data")
    assert "already exists and is not empty" in _err(
        capsys, ["convert", "--from", str(ckpts / "hf"), "--to", "te", "--out", str(taken)]
    )
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]

    class Boom(Exception):
        pass

    class Exploding(dict):
        def items(self):
            raise Boom

    with pytest.raises(Boom):
        write_checkpoint(tmp_path / "new", Exploding(), {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_variants_json_lists_every_variant(capsys):
    assert main(["variants", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert set(listed) == set(VARIANTS)
    assert listed["V2-316M"]["num_hidden_layers"] == VARIANTS["V2-316M"].num_hidden_layers


def test_old_transformers_pytorch_model_bin_loads(ckpts, tmp_path):
    """Geneformer V1 ships pytorch_model.bin from transformers 4.6, with a position_ids buffer."""
    from models.hf import load_hf_model

    tensors = load_file(str(ckpts / "hf/model.safetensors"))
    tensors["bert.embeddings.position_ids"] = torch.arange(2048)[None]
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text((ckpts / "hf/config.json").read_text())
    model, ckpt = load_hf_model(tmp_path)
    assert ckpt.weight_file.name == "pytorch_model.bin"
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, tensors["bert.embeddings.word_embeddings.weight"])
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_nvidia_style_te_export_loads_and_reports_bf16(ckpts, tmp_path, capsys):
    """NVIDIA's export: tied decoder copies stored, TE _extra_state keys, encoder weights rounded to
    bf16 (torch_dtype defaults to bfloat16), config with use_te_layers / fuse_qkv_params."""
    tensors = load_file(str(ckpts / "te/model.safetensors"))
    export = {k: (v.to(torch.bfloat16) if k.startswith("bert.encoder") else v) for k, v in tensors.items()}
    export["cls.predictions.decoder.weight"] = export["bert.embeddings.word_embeddings.weight"].clone()
    export["cls.predictions.decoder.bias"] = export["cls.predictions.bias"].clone()
    export["bert.encoder.layer.0.layernorm_mlp.fc1._extra_state"] = torch.zeros(0, dtype=torch.uint8)
    save_file(export, str(tmp_path / "model.safetensors"))
    cfg = {
        **json.loads((ckpts / "hf/config.json").read_text()),
        "use_te_layers": True,
        "fuse_qkv_params": True,
        "torch_dtype": "bfloat16",
    }
    cfg.pop("transformers_version", None)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    ckpt = read_checkpoint(tmp_path, expect="te")
    assert ckpt.dtype_counts()["bfloat16"] == sum(k.startswith("bert.encoder") for k in tensors)
    out = tmp_path / "r.json"
    rc = main(
        [
            "parity",
            "--reference",
            str(ckpts / "hf"),
            "--candidate",
            str(tmp_path),
            "--backend",
            "te-format-torch",
            "--length",
            "32",
            "--json",
            str(out),
        ]
    )
    assert "stores bf16 tensors" in capsys.readouterr().out
    assert rc == 1  # bf16-rounded weights are not fp32-identical: the gate says so, it does not hide it
    assert json.loads(out.read_text())["weights"]["candidate"]["dtypes"]["bfloat16"] > 0

"""Read, validate, write and verify Geneformer checkpoint directories.

A checkpoint directory holds ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``,
read with ``weights_only=True`` so a pickle cannot run code). Its layout, HF or TE, is read off the
tensor names, never trusted from the config. Everything a later step relies on is checked here,
so a bad directory fails early with a message that names the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models import convert
from models.errors import GfqualError
from models.registry import Variant, variants_matching

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# Config keys NVIDIA's TE checkpoints add to BertConfig; an HF config carries none of them.
TE_CONFIG_KEYS = (
    "use_te_layers",
    "fuse_qkv_params",
    "micro_batch_size",
    "qkv_weight_interleaved",
    "encoder_activation",
    "attn_input_format",
    "max_seq_length",
    "auto_map",
)


class CheckpointError(GfqualError, ValueError):
    """A checkpoint directory that cannot be used, with the reason."""


@dataclass
class Checkpoint:
    """A loaded checkpoint directory: its config, tensors and where they came from."""

    path: Path
    config: dict
    state_dict: dict[str, torch.Tensor]
    weight_file: Path
    layout: str  # "hf" or "te"
    _sha256: str | None = field(default=None, repr=False)

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = sha256_file(self.weight_file)
        return self._sha256

    def dtype_counts(self) -> dict[str, int]:
        """How many stored tensors have each dtype (TE exports may round encoder weights to bf16)."""
        return dict(Counter(str(t.dtype).removeprefix("torch.") for t in self.state_dict.values()))

    def parameters(self) -> dict[str, torch.Tensor]:
        """Exactly the layout's parameters: tied copies verified and dropped, buffers dropped."""
        try:
            tensors, _, _ = convert.canonical_tensors(self.state_dict)
        except convert.ConversionError as exc:
            raise CheckpointError(f"{self.path}: {exc}") from exc
        expected = set(convert.layout_keys(self.layout, self.config["num_hidden_layers"]))
        missing, unexpected = expected - tensors.keys(), tensors.keys() - expected
        if missing or unexpected:
            raise CheckpointError(
                f"{self.path}: weights do not match the {self.layout.upper()} Geneformer layout "
                f"(missing: {sorted(missing)[:5]}, unexpected: {sorted(unexpected)[:5]})"
            )
        return tensors

    def variant_candidates(self) -> list[Variant]:
        return variants_matching(self.config)

    def describe(self) -> dict:
        """The ``weights`` block of a result record."""
        return {
            "source": "checkpoint",
            "path": str(self.path),
            "weight_file": self.weight_file.name,
            "sha256": self.sha256,
            "layout": self.layout,
            "dtypes": self.dtype_counts(),
        }


def load_parameters(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy checkpoint tensors into a model, cast to the model's dtypes; only the tied decoder
    may be left for ``tie_weights`` (everything else missing is an error)."""
    own = model.state_dict()
    result = model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=False)
    missing = set(result.missing_keys) - set(convert.TIED) - {k for k in own if convert.is_ignored(k)}
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"model and checkpoint disagree (missing: {sorted(missing)[:5]}, "
            f"unexpected: {sorted(result.unexpected_keys)[:5]})"
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_tensors(weight_file: Path) -> dict[str, torch.Tensor]:
    import pickle
    import re

    try:
        if weight_file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(weight_file))
        return torch.load(weight_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise CheckpointError(f"cannot read weights from {weight_file}: {exc}") from None
        # torch's own advice here is to load it unrestricted; a checkpoint needs nothing but tensors
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f" (it asks for the Python object {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{weight_file} holds Python objects besides tensors{what}, which could run code when loaded: "
            "gfqual reads only tensors and refused it. Get the weights from a source you trust, ideally as "
            "model.safetensors"
        ) from None
    except Exception as exc:  # corrupt, truncated or not a tensor file at all
        raise CheckpointError(f"cannot read weights from {weight_file}: {exc}") from exc


def read_config(path: Path) -> dict:
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path} has no config.json")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file} is not valid JSON: {exc}") from exc


def read_checkpoint(path: str | os.PathLike, expect: str | None = None) -> Checkpoint:
    """Load a checkpoint directory and check it is a consistent Geneformer checkpoint.

    ``expect`` ("hf" or "te") turns a checkpoint of the other layout into an error that says how
    to convert it.
    """
    path = Path(path)
    if path.is_file():
        raise CheckpointError(
            f"{path} is a file; give the checkpoint directory that holds it and config.json ({path.parent})"
        )
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    config = read_config(path)
    weight_file = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
    if weight_file is None:
        raise CheckpointError(f"{path} has no weight file (expected one of {', '.join(WEIGHT_FILES)})")
    state_dict = _load_tensors(weight_file)
    try:
        layout = convert.detect_layout(state_dict)
    except convert.ConversionError as exc:
        raise CheckpointError(f"{weight_file}: {exc}") from exc
    if expect is not None and layout != expect:
        names = {"hf": "Hugging Face (HF)", "te": "TransformerEngine (TE)"}
        raise CheckpointError(
            f"{path} is a {names[layout]} checkpoint, but a {names[expect]} checkpoint was "
            f"expected here; convert it with: gfqual convert --from {path} --to {expect} --out DIR"
        )
    check_shapes(config, state_dict, layout, where=str(path))
    return Checkpoint(path, config, state_dict, weight_file, layout)


def check_shapes(config: dict, state_dict: dict, layout: str, where: str) -> None:
    """Every tensor the config implies has the shape the config implies (vocabulary included)."""
    layers = convert.count_layers(state_dict)
    if layers != config.get("num_hidden_layers"):
        raise CheckpointError(
            f"{where}: config.json says {config.get('num_hidden_layers')} layers, the weights hold {layers}"
        )
    try:
        expected = convert.parameter_shapes(config, layout)
    except KeyError as exc:
        raise CheckpointError(f"{where}: config.json lacks {exc.args[0]}") from exc
    word = state_dict.get("bert.embeddings.word_embeddings.weight")
    if word is not None and word.shape[0] != config["vocab_size"]:
        raise CheckpointError(
            f"{where}: config.json vocab_size is {config['vocab_size']}, but the word embeddings "
            f"hold {word.shape[0]} tokens: config and weights do not belong together"
        )
    wrong = [
        f"{k}: config implies {list(s)}, weights have {list(state_dict[k].shape)}"
        for k, s in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != s
    ]
    if wrong:
        raise CheckpointError(
            f"{where}: config.json does not match the weights' shapes ({len(wrong)} tensors): " + "; ".join(wrong[:4])
        )


def check_variant(config: dict, variant: Variant, where: str) -> None:
    """The checkpoint is of the variant the user named (vocabulary first: the common mistake)."""
    if config.get("vocab_size") != variant.vocab_size:
        raise CheckpointError(
            f"{where}: vocabulary size {config.get('vocab_size')} does not match variant "
            f"{variant.name} ({variant.vocab_size} tokens, {variant.dictionary_family} dictionaries)"
        )
    if variant not in variants_matching(config):
        raise CheckpointError(f"{where}: architecture in config.json is not that of {variant.name}")


def verify_official(ckpt: Checkpoint, variant: Variant) -> str:
    """Compare the weight file's sha256 with the official one of the variant; return it."""
    official = variant.official_sha256(ckpt.weight_file.name)
    if official is None:
        raise CheckpointError(
            f"no official sha256 is registered for {variant.name}/{ckpt.weight_file.name} "
            f"(registered: {', '.join(w.filename for w in variant.weight_files)})"
        )
    if ckpt.sha256 != official:
        raise CheckpointError(
            f"{ckpt.weight_file}: sha256 {ckpt.sha256} differs from the official {variant.name} "
            f"{ckpt.weight_file.name} ({official}): the file is not the published checkpoint"
        )
    return official


def write_checkpoint(
    out: str | os.PathLike, state_dict: dict[str, torch.Tensor], config: dict, extra: dict | None = None
) -> Path:
    """Write config.json + model.safetensors (+ optional JSON side files) atomically.

    Files go to a temporary folder beside ``out`` that is renamed into place at the end, so a
    failure leaves nothing half-written. An existing non-empty ``out`` is refused.
    """
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"output {out} already exists and is not empty; choose a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tensors = {k: v.detach().contiguous() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for name, payload in (extra or {}).items():
            (tmp / name).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it 0700: a checkpoint is meant to be shared
        for f in tmp.iterdir():
            f.chmod(0o644)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def te_config_from_hf(hf_config: dict, dtype: str) -> dict:
    """The config.json of a TE checkpoint: BertConfig plus NVIDIA's TE keys."""
    cfg = {k: v for k, v in hf_config.items() if k not in TE_CONFIG_KEYS}
    return {**cfg, "use_te_layers": True, "fuse_qkv_params": True, "torch_dtype": dtype}


def hf_config_from_te(te_config: dict, dtype: str) -> dict:
    cfg = {k: v for k, v in te_config.items() if k not in TE_CONFIG_KEYS}
    return {**cfg, "torch_dtype": dtype}


def stored_dtype(state_dict: dict[str, torch.Tensor]) -> str:
    """The dtype to record in config.json: one every stored tensor fits exactly, because the
    ecosystem's plain loader (``from_pretrained``, dtype "auto") casts the whole model to it. The
    one dtype when the tensors agree; else the widest, and float32 at least (NVIDIA's V1-10M export
    stores a bf16 encoder beside an fp32 head: "bfloat16" would round the head)."""
    names = {str(t.dtype).removeprefix("torch.") for t in state_dict.values() if t.is_floating_point()}
    if len(names) == 1:
        return names.pop()
    widest = max(names, key=lambda n: torch.finfo(getattr(torch, n)).bits)
    return widest if torch.finfo(getattr(torch, widest)).bits >= 32 else "float32"


def convert_checkpoint(src: str | os.PathLike, target: str, out: str | os.PathLike) -> dict:
    """``gfqual convert``: read ``src``, convert to ``target`` layout, write ``out``."""
    ckpt = read_checkpoint(src)
    cfg = ckpt.config
    try:
        converted, report = convert.convert_state_dict(
            ckpt.state_dict, target, cfg["num_hidden_layers"], cfg["num_attention_heads"]
        )
    except convert.ConversionError as exc:
        raise CheckpointError(f"{ckpt.path}: {exc}") from exc
    dtype = stored_dtype(converted)
    new_config = te_config_from_hf(cfg, dtype) if target == "te" else hf_config_from_te(cfg, dtype)
    provenance = {
        "converted_from": str(ckpt.path),
        "source_layout": ckpt.layout,
        "source_sha256": ckpt.sha256,
        "tensors_converted": report.converted,
        "tied_copies_verified": report.tied_verified,
        "ignored_keys": report.ignored,
        "dtypes": dict(Counter(str(t.dtype).removeprefix("torch.") for t in converted.values())),
    }
    write_checkpoint(out, converted, new_config, extra={"conversion.json": provenance})
    return provenance

"""The backend table (``harness.backend_names.SPECS``) against the backends the code builds, and
the rule that no code outside it reads what a backend is from its name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from harness.backend_names import BACKENDS, OBJECTIVES, PACKED_BACKENDS, SPECS, TE_BACKENDS, backend_spec
from harness.backends import HFBackend, TEBackend, TEFormatTorchBackend, TEPackedBackend, backend_class, build_backend
from harness.capability import probe
from harness.precision import get_precision
from models.errors import CannotRunHere, UsageError
from models.hf import random_hf_model
from models.registry import VARIANTS

ROOT = Path(__file__).resolve().parents[1]


def test_every_row_is_well_formed_and_the_derived_names_follow_the_table():
    assert len({s.name for s in SPECS}) == len(SPECS)
    for s in SPECS:
        assert s.family in ("hf", "te") and s.layout in ("padded", "packed"), s
        assert s.attention in ("eager", "sdpa", "te") and s.te_layer in (None, "modular", "fused"), s
        assert (s.attention == "te") == s.needs_te, s  # TE's attention runs only where TE does
        assert not (s.needs_te and s.family == "hf") and set(s.trains) <= set(OBJECTIVES), s
    assert BACKENDS == ("hf-eager", "hf-sdpa", "hf-sdpa-compile", "te", "te-fused", "te-packed", "te-format-torch")
    assert PACKED_BACKENDS == ("te-packed",)
    assert TE_BACKENDS == ("te", "te-fused", "te-packed")


def test_an_unknown_backend_is_bad_input_naming_the_known_ones():
    with pytest.raises(UsageError, match="unknown backend 'te-turbo'; known: hf-eager, hf-sdpa, .*te-format-torch"):
        backend_spec("te-turbo")
    with pytest.raises(UsageError, match="unknown backend 'te-turbo'"):
        build_backend("te-turbo", random_hf_model(VARIANTS["V1-10M"], 0), get_precision("fp32"), "cpu")


def test_each_row_maps_to_the_class_its_spec_says():
    classes = {s.name: backend_class(s) for s in SPECS}
    assert classes == {
        "hf-eager": HFBackend,
        "hf-sdpa": HFBackend,
        "hf-sdpa-compile": HFBackend,
        "te": TEBackend,
        "te-fused": TEBackend,
        "te-packed": TEPackedBackend,
        "te-format-torch": TEFormatTorchBackend,
    }


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_the_built_backend_is_what_its_row_says(spec):
    """Built where it can run (every row without TE on a CPU; TE's on a GPU with TE); elsewhere a
    TE row is refused with the probe's reason and the hint toward te-format-torch."""
    model = random_hf_model(VARIANTS["V1-10M"], 0)
    precision = get_precision("bf16")
    cap = probe()
    reason = cap.skip_reason(spec.name, precision)
    assert (reason is not None) == (spec.needs_te and (not cap.cuda or cap.te_error is not None))
    if reason:
        with pytest.raises(CannotRunHere, match="te-format-torch runs the TE checkpoint layout"):
            build_backend(spec.name, model, precision, "cpu")
        return
    backend = build_backend(spec.name, model, precision)
    assert type(backend) is backend_class(spec)
    assert backend.name == spec.name and backend.spec is spec and backend.input_layout == spec.layout
    assert backend.materializes_attention == (spec.attention == "eager")  # bf16: TE's attention is fused
    if spec.family == "hf":
        assert backend.model.config._attn_implementation == spec.attention
        assert isinstance(backend._bert, torch._dynamo.eval_frame.OptimizedModule) == spec.compiled
    elif spec.needs_te:
        assert backend.model.impl == spec.te_layer


# What reading a backend's nature from its name looks like: a prefix, a suffix, or one name
# singled out. The table answers those questions instead.
NAME_PARSES = re.compile(
    r"""startswith\(["'](hf|te)"""
    r"""|endswith\(["']-compile|removesuffix\(["']-compile|removeprefix\(["']hf-"""
    r"""|[!=]= ["']te-(packed|fused|format-torch)["']"""
    r"""|in PACKED_BACKENDS|in TE_BACKENDS"""
)
NOT_SCANNED = {"harness/backend_names.py"}  # the table itself


def test_no_code_outside_the_table_parses_a_backend_name():
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for folder in ("harness", "models", "reports")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if str(path.relative_to(ROOT)) not in NOT_SCANNED
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if NAME_PARSES.search(line)
    ]
    assert not found, "ask harness.backend_names.backend_spec instead of parsing the name:\n" + "\n".join(found)


def test_the_name_pattern_catches_the_parses_it_forbids():
    for parse in (
        'name.startswith("hf-")',
        "b.startswith('te')",
        'name.endswith("-compile")',
        'name.removeprefix("hf-")',
        'name == "te-packed"',
        'name != "te-format-torch"',
        "point.backend not in PACKED_BACKENDS",
    ):
        assert NAME_PARSES.search(parse), parse
    assert not NAME_PARSES.search('source = "hf" if target == "te" else "te"')  # a checkpoint layout

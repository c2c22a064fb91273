"""The tolerance table is asked with a ``Precision`` (names only at the CLI and in result files)."""

from __future__ import annotations

import pytest

from harness.precision import PRECISIONS, get_precision
from harness.tolerances import (
    backward_bound,
    bounds_for,
    downstream_bound,
    has_training_bounds,
    needs_peer,
    table_as_dict,
)


def test_only_bounds_relative_to_the_peer_make_the_peer_run():
    assert needs_peer(get_precision("bf16"))
    assert not needs_peer(get_precision("fp32")) and not needs_peer(get_precision("fp8-current"))
    (rel_l2, _) = bounds_for(get_precision("bf16"), "layer.3")
    assert rel_l2.peer_factor == 1.25 and rel_l2.threshold(None) is None  # no peer: not judged


def test_every_fp8_recipe_shares_the_fp8_downstream_and_training_bounds():
    fp8 = [p for p in PRECISIONS.values() if p.is_fp8]
    assert len({downstream_bound(p) for p in fp8}) == 1
    assert downstream_bound(fp8[0]) > downstream_bound(PRECISIONS["bf16"])
    assert {backward_bound(p) for p in fp8} == {backward_bound(PRECISIONS["fp8-block"])}
    assert not has_training_bounds(PRECISIONS["tf32"])


def test_a_precision_without_a_table_says_which():
    with pytest.raises(KeyError, match="fp64"):
        table_as_dict(get_precision("fp64"))
    assert set(table_as_dict(get_precision("fp32"))) == {"hidden", "final", "logits", "cell_embedding"}

"""Stacked edits: hook edits come off in any order, bit for bit; weight edits out of order are refused."""

from __future__ import annotations

import itertools

import pytest
import torch

from circuits import model as M
from circuits.editing import EditError, apply_edit
from tests.kinds import all_kinds


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_hook_edits_removed_in_any_order_restore_the_model_bit_for_bit(model, tokens, order):
    kinds = all_kinds(model)
    edits = [kinds["ablation"], kinds["steering"], kinds["offset"]]  # hook form
    original, fp = model(tokens).clone(), M.fingerprint(model)
    handles = [apply_edit(model, e) for e in edits]
    assert not torch.allclose(model(tokens), original, atol=1e-4)
    for i in order:
        handles[i].remove()
    assert torch.equal(model(tokens), original) and M.fingerprint(model) == fp


def test_weight_edits_removed_out_of_order_are_refused_and_stay_applied(model, tokens):
    kinds = all_kinds(model)
    original, fp = model(tokens).clone(), M.fingerprint(model)
    first = apply_edit(model, kinds["low_rank"])
    second = apply_edit(model, kinds["pruning"], check_fingerprint=False)  # made on the unedited weights
    both = model(tokens).clone()
    with pytest.raises(EditError, match="first: it was applied after"):
        first.remove()
    assert torch.equal(model(tokens), both)  # nothing was undone by the refused removal
    second.remove()
    first.remove()
    assert torch.equal(model(tokens), original) and M.fingerprint(model) == fp
    second.remove()  # idempotent, and no longer on the stack
    first.remove()


def test_a_hook_edit_may_come_off_before_a_later_weight_edit(model, tokens):
    kinds = all_kinds(model)
    original = model(tokens).clone()
    hooks = apply_edit(model, kinds["steering"])
    weights = apply_edit(model, kinds["low_rank"])
    hooks.remove()
    weights.remove()
    assert torch.equal(model(tokens), original)

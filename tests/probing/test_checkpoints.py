"""Checkpoints that fail validation are discarded with a warning and recomputed, never fatal."""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import save as st_save

from circuits.probing import checkpoints
from circuits.probing.patching import TokenGroup, patch_groups
from circuits.sites import all_heads, all_mlps


def metric(logits):
    return logits[:, -1, 3] - logits[:, -1, 7]


def _groups(token_pairs):
    clean, corrupted = token_pairs
    return [TokenGroup(indices=[0, 1, 2], clean=clean, corrupted=corrupted)]


def _nan(rows):
    rows = rows.clone()
    rows[0, 0] = float("nan")
    return st_save({"patched": rows})


CORRUPTIONS = {
    "NaN": _nan,
    "truncated": lambda rows: st_save({"patched": rows})[:-7],
    "not safetensors": lambda rows: b"\x00" * 40,
    "wrong tensor name": lambda rows: st_save({"rows": rows}),
    "wrong shape": lambda rows: st_save({"patched": rows[:, :2].contiguous()}),
    "integer dtype": lambda rows: st_save({"patched": rows.long()}),
    "empty file": lambda rows: b"",
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_bad_checkpoint_is_discarded_with_a_warning_and_recomputed(tiny, token_pairs, tmp_path, corruption):
    comps = [*all_heads(2, 4), *all_mlps(2)]
    full = patch_groups(tiny, _groups(token_pairs), metric, comps, checkpoint_dir=tmp_path, progress=False)
    (path,) = [p for p in tmp_path.rglob("layer_0.safetensors")]
    good = path.read_bytes()
    path.write_bytes(CORRUPTIONS[corruption](checkpoints.load_layer(path, (5, 3))))
    with pytest.warns(RuntimeWarning, match="discarding checkpoint .*layer_0.safetensors"):
        again = patch_groups(tiny, _groups(token_pairs), metric, comps, checkpoint_dir=tmp_path, progress=False)
    assert torch.equal(again.effects, full.effects)
    assert path.read_bytes() == good  # recomputed and written again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        patch_groups(tiny, _groups(token_pairs), metric, comps, checkpoint_dir=tmp_path, progress=False)  # now it resumes quietly


def test_results_that_are_not_finite_are_not_checkpointed(tmp_path):
    path = checkpoints.layer_path(tmp_path, 0)
    assert not checkpoints.save_layer(path, torch.tensor([[1.0, float("inf")]]))
    assert not path.exists()
    assert checkpoints.save_layer(path, torch.tensor([[1.0, 2.0]]))
    assert torch.equal(checkpoints.load_layer(path, (1, 2)), torch.tensor([[1.0, 2.0]]))

"""final_residual + unembed (what the evaluation reads instead of whole-batch logits) equal the full forward."""

from __future__ import annotations

import pytest
import torch

from circuits import model as M
from circuits.editing import Edit, apply_edit
from circuits.model.tiny import tiny_hf_model
from circuits.sites import HeadRef


@pytest.mark.parametrize("family", ["native", "llama", "gemma3", "gpt2", "qwen2"])
def test_unembedding_the_final_residual_is_the_forward(family):
    lm = M.tiny_model(n_layers=2, n_heads=4, n_kv_heads=2, seed=1) if family == "native" else tiny_hf_model(family, seed=2)
    toks = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(0))
    h = M.final_residual(lm, toks)
    assert h.shape == (3, 7, lm.shape.d_model)
    assert torch.equal(M.unembed(lm, h), M.run(lm, toks))
    sub = M.unembed(lm, h[:, -1], [3, 5])  # a few positions and tokens: the others NaN
    assert torch.allclose(sub[:, [3, 5]], M.run(lm, toks)[:, -1, [3, 5]], atol=1e-6) and sub[:, 0].isnan().all()
    edit = Edit("scaling", (HeadRef(1, 0),), {}, lm.name, M.fingerprint(lm), hyperparameters={"alpha": 0.0})
    with apply_edit(lm, edit):  # edits apply as in the forward
        assert torch.equal(M.unembed(lm, M.final_residual(lm, toks)), M.run(lm, toks))
        assert not torch.equal(M.final_residual(lm, toks), h)

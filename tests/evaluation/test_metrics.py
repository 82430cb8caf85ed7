import math

import numpy as np
import pytest
import torch

from circuits.evaluation.metrics import (
    _right_padded,
    demographic_parity_difference,
    equalized_odds_difference,
    expected_calibration_error,
    flip_rate,
    window_scores,
    worst_group_accuracy,
)


def test_window_nll_is_the_cross_entropy_of_a_uniform_model(tiny):
    # Zero the unembedding: every next token is equally likely, so NLL = log(d_vocab) exactly.
    ids = torch.arange(10) % 50
    state = {k: v.clone() for k, v in tiny.core.state_dict().items()}
    try:
        for name, p in tiny.core.named_parameters():
            if name.startswith(("head.", "lm_head.")):
                with torch.no_grad():
                    p.zero_()
        nll, _ = window_scores(tiny, ids[:8].reshape(2, 4))
    finally:
        tiny.core.load_state_dict(state)
    assert torch.allclose(nll, torch.full_like(nll, math.log(50)), atol=1e-5)


def test_text_windows_are_equal_cuts_of_the_text_bos_prefixed_as_the_policy_says():
    from circuits.model import bos_token_id, encode_text, text_windows
    from circuits.model.tiny import tiny_hf_model

    text = "The water cycle moves water between the sea, the air and the land. " * 20
    own = tiny_hf_model("llama")  # the real tokenizer (it adds no BOS) on a tiny model
    with_bos = tiny_hf_model("llama", prepend_bos=True)
    ids = encode_text(own, text)
    w = text_windows(own, text, window=16)
    assert w.shape == (ids.numel() // 16, 16) and torch.equal(w.reshape(-1), ids[: w.shape[0] * 16])
    wb = text_windows(with_bos, text, window=16)
    assert wb.shape == (ids.numel() // 16, 17) and (wb[:, 0] == bos_token_id(with_bos)).all()
    assert torch.equal(wb[:, 1:], w)
    with pytest.raises(ValueError, match="full window"):
        text_windows(own, "Too short.", window=16)


def test_window_scores_match_a_hand_computed_cross_entropy_and_accuracy(tiny):
    toks = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(0))
    nll, acc = window_scores(tiny, toks, batch_size=2)
    logits = tiny(toks)[:, :-1].float()
    for i in range(3):
        logp = logits[i].log_softmax(-1)
        expected = -logp[torch.arange(8), toks[i, 1:]].mean()
        assert nll[i].item() == pytest.approx(expected.item(), abs=1e-5)
        assert acc[i].item() == pytest.approx((logits[i].argmax(-1) == toks[i, 1:]).float().mean().item())


def test_right_padding_leaves_earlier_logits_unchanged(tiny):
    # Causal attention: padding after a sequence cannot change the logits at its positions.
    a, b = [1, 5, 7, 9], [1, 3, 4, 8, 2, 6, 11]
    padded = _right_padded([a, b])
    assert padded.shape == (2, 7) and padded[0, 4:].tolist() == [9, 9, 9]
    out = tiny(padded)
    assert torch.allclose(out[0, :4], tiny(torch.tensor([a]))[0], atol=1e-5)
    assert torch.allclose(out[1], tiny(torch.tensor([b]))[0], atol=1e-5)


def test_demographic_parity_and_equalized_odds_on_a_hand_computed_case():
    # Group A (4 items): 3 positive predictions; group B (4 items): 1.
    pred = np.array([1, 1, 1, 0, 1, 0, 0, 0], bool)
    group = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    label = np.array([1, 1, 0, 0, 1, 1, 0, 0], bool)
    assert demographic_parity_difference(pred, group) == pytest.approx(0.5)
    # TPR: A 2/2 = 1, B 1/2 → 0.5 gap. FPR: A 1/2, B 0/2 → 0.5 gap.
    assert equalized_odds_difference(pred, label, group) == pytest.approx(0.5)
    assert demographic_parity_difference(np.array([1, 0, 1, 0], bool), np.array([1, 1, 0, 0], bool)) == pytest.approx(0.0)


def test_expected_calibration_error_on_a_hand_computed_case():
    # Two bins used: confidence 0.9 (2 items, both right) and 0.6 (2 items, one right).
    prob = np.array([0.9, 0.1, 0.6, 0.4])
    label = np.array([1, 0, 1, 1], bool)
    # bin 0.9: acc 1.0, conf 0.9 → 0.1; bin 0.6: predictions pos (right), neg (wrong) → acc 0.5, conf 0.6 → 0.1
    assert expected_calibration_error(prob, label) == pytest.approx(0.5 * 0.1 + 0.5 * 0.1)
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([1, 0], bool)) == pytest.approx(0.0)


def test_worst_group_accuracy_and_flip_rate():
    pred = np.array([1, 1, 0, 0, 1, 0], bool)
    label = np.array([1, 0, 0, 1, 1, 0], bool)
    group = np.array([1, 1, 1, 1, 0, 0], bool)
    # A∧y=1: items 0,3 → 1/2; A∧y=0: items 1,2 → 1/2; B∧y=1: item 4 → 1; B∧y=0: item 5 → 1.
    assert worst_group_accuracy(pred, label, group) == pytest.approx(0.5)
    assert flip_rate(np.array([1, 0, 1, 1], bool), np.array([1, 1, 1, 0], bool)) == pytest.approx(0.5)

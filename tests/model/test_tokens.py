"""The tokenization policy: text is encoded as the model's own tokenizer encodes it, unless overridden."""

from __future__ import annotations

import pytest
import torch

from circuits import model as M
from circuits.model.tiny import shipped_tokenizer, tiny_hf_model

TEXT = "The capital of France is"


@pytest.fixture(scope="module")
def bos_tokenizer():
    tok = shipped_tokenizer()
    tok.add_bos_token = True  # the post-processor now puts <|im_start|> first, as Llama's tokenizer does
    return tok


def test_the_default_policy_is_the_tokenizers_own(bos_tokenizer):
    plain = shipped_tokenizer()
    assert not M.tokenizer_adds_bos(plain) and M.tokenizer_adds_bos(bos_tokenizer)
    assert M.tokenization_policy(plain) == M.Tokenization(prepend_bos=False, source="tokenizer")
    assert M.tokenization_policy(bos_tokenizer) == M.Tokenization(prepend_bos=True, source="tokenizer")
    assert M.tokenization_policy(plain, True) == M.Tokenization(prepend_bos=True, source="override")
    assert M.tokenization_policy(None) == M.Tokenization(prepend_bos=False, source="no tokenizer")
    with pytest.raises(ValueError, match="no tokenizer"):
        M.tokenization_policy(None, True)


def test_tokens_follow_the_policy_and_equal_the_tokenizer_by_default():
    tok = shipped_tokenizer()
    own = tiny_hf_model("llama")
    assert M.tokens_of(own, TEXT).tolist() == tok(TEXT)["input_ids"]
    with_bos = tiny_hf_model("llama", prepend_bos=True)
    assert M.tokens_of(with_bos, TEXT).tolist() == [tok.bos_token_id, *tok(TEXT)["input_ids"]]
    assert with_bos.recipe["prepend_bos"] is True and with_bos.tokenization.source == "override"
    # The bridge's own helpers follow the policy too.
    assert with_bos.bridge.to_tokens(TEXT)[0].tolist() == M.tokens_of(with_bos, TEXT).tolist()
    assert own.bridge.to_tokens(TEXT)[0].tolist() == M.tokens_of(own, TEXT).tolist()


def test_subject_positions_and_text_windows_follow_the_policy():
    own, with_bos = tiny_hf_model("llama"), tiny_hf_model("llama", prepend_bos=True)
    prompt, subject = "The Eiffel Tower is located in the city of", "The Eiffel Tower"
    a, b = M.subject_positions(own, prompt, subject), M.subject_positions(with_bos, prompt, subject)
    assert a[0] == 0 and b == [p + 1 for p in a]
    text = "one two three four five six seven eight nine ten " * 4
    w_own, w_bos = M.text_windows(own, text, window=8), M.text_windows(with_bos, text, window=8)
    assert w_own.shape[1] == 8 and w_bos.shape[1] == 9
    assert torch.equal(w_bos[:, 1:], w_own) and bool((w_bos[:, 0] == own.tokenizer.bos_token_id).all())


def test_prepend_bos_needs_a_bos_token(tmp_path):
    from circuits.model.tiny import save_tiny_hf

    d = save_tiny_hf("gpt2", tmp_path / "m")
    tok = shipped_tokenizer()
    tok.bos_token = None
    with pytest.raises(M.ModelLoadError, match="no BOS token"):
        M.load_model(d, tokenizer=tok, prepend_bos=True)

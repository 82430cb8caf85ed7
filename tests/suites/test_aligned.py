"""Shipped suites on another tokenizer: the pairs that align are kept, the others counted, the hash says which."""

from __future__ import annotations

import pytest

from circuits import model as M
from circuits.model.tiny import tiny_hf_model
from circuits.probing.pairs import PairError, tokenize_pairs
from circuits.suites import Suite, SuiteError, aligned, bind_model, load_suite


@pytest.fixture(scope="module")
def lm():
    return tiny_hf_model("llama", seed=0)  # SmolLM2's tokenizer


def _suite(words: list[tuple[str, str]]) -> Suite:
    pairs = [dict(clean=f"The {a} said that", corrupted=f"The {b} said that", answer=" she", wrong_answer=" he") for a, b in words]
    return Suite.from_pairs("mine", pairs, split_by="record")


def test_misaligned_pairs_are_left_out_counted_and_hashed(lm):
    suite = _suite([("nurse", "pilot"), ("maid", "Quetzalcoatlus"), ("nurse", "maid")])
    with pytest.raises(PairError, match="pair 1 is not aligned"):  # unfiltered: refused by name, never patched
        tokenize_pairs(lm, suite.records)
    kept = aligned(suite, lm)
    assert [p.corrupted for p in kept.records] == ["The pilot said that", "The maid said that"]
    assert "1 of 3 pairs left out" in kept.construction and kept.content_hash != suite.content_hash
    assert aligned(suite, lm).content_hash == kept.content_hash  # deterministic
    lengths = M.token_lengths(lm, [p.clean for p in kept.records] + [p.corrupted for p in kept.records])
    assert lengths[:2] == lengths[2:]


def test_a_suite_that_aligns_is_returned_unchanged(lm):
    suite = _suite([("nurse", "pilot"), ("maid", "nurse")])
    assert aligned(suite, lm) is suite


def test_no_aligned_pair_is_one_clear_error(lm):
    with pytest.raises(SuiteError, match="no pair of suite 'mine' aligns"):
        aligned(_suite([("maid", "Quetzalcoatlus"), ("nurse", "Archaeopteryx")]), lm)


def test_shipped_suites_bound_to_smollm2_tokenizer_are_unchanged(lm):
    """The committed atlases' suite hashes stay valid: every shipped suite aligns fully for SmolLM2's tokenizer."""
    for name in ("gender-occupation", "toxicity", "name-sentiment", "name-sentiment-v2", "ioi", "greater-than"):
        plain = load_suite(name)
        assert load_suite(name, model=lm).content_hash == plain.content_hash == bind_model(plain, lm).content_hash, name


def test_a_users_file_is_never_filtered(lm):
    suite = _suite([("maid", "Quetzalcoatlus"), ("nurse", "pilot")])
    assert bind_model(suite, lm) is suite

import numpy as np
import pytest

from circuits import data as D
from circuits.evaluation.metrics import bias_gaps, continuation_logprobs
from circuits.probing.pairs import prepare
from circuits.suites import SuiteError, available_suites, bind_model, load_suite
from circuits.model.tiny import tiny_hf_model
from circuits.suites.identity import identity_harm


@pytest.fixture(scope="module")
def llama():
    return tiny_hf_model("llama", seed=4)


def test_identity_harm_pairs_are_the_minimal_pairs_split_at_the_group_term():
    suite = load_suite("identity-harm")
    assert "identity-harm" in available_suites(tasks=False) and suite.kind == "harmful"
    items = D.identity_pairs().items
    assert len(suite.records) == len(items)
    assert {p.group for p in suite.records} == set(D.identity_pairs().bias_types) and len({p.group for p in suite.records}) == 8
    for p, item in zip(suite.records, items):
        assert (p.clean + p.answer).replace("  ", " ") == item.stereotyped
        assert (p.corrupted + p.answer).replace("  ", " ") == item.contrast
        assert p.clean.endswith(item.stereotyped_group) and p.split == item.split
    assert {p.split for p in suite.records} == {"build", "eval"}
    only = identity_harm(bias_types=["age"])
    assert {p.group for p in only.records} == {"age"} and only.content_hash != suite.content_hash
    with pytest.raises(SuiteError, match="unknown bias types"):
        identity_harm(bias_types=["height"])


def test_the_gap_is_the_rest_of_the_sentence_scored_after_each_group_term(llama):
    suite = bind_model(load_suite("identity-harm"), llama)
    assert 0 < len(suite.records) <= len(D.identity_pairs().items)
    pairs = suite.pairs("eval")[:6]
    gaps = bias_gaps(llama, prepare(llama, pairs, suite.metric)).numpy()  # every kept pair is aligned
    lp = continuation_logprobs(llama, [p.clean for p in pairs] + [p.corrupted for p in pairs], [p.answer for p in pairs] * 2).numpy()
    np.testing.assert_allclose(gaps, lp[: len(pairs)] - lp[len(pairs):], atol=1e-4)


def test_bind_model_leaves_a_users_file_of_the_same_name_alone(llama, tmp_path):
    f = tmp_path / "identity-harm.jsonl"
    f.write_text('{"clean": "The man", "corrupted": "The boy", "answer": " ran", "wrong_answer": " ran", "split": "build"}\n'
                 '{"clean": "The dog", "corrupted": "The cat", "answer": " ran", "wrong_answer": " ran", "split": "eval"}\n')
    mine = load_suite(f)
    assert mine.name == "identity-harm" and bind_model(mine, llama) is mine


def test_one_bias_type_loads_by_name_and_is_accepted_from_an_artifact():
    from circuits.suites import shipped_suite

    religion = load_suite("identity-harm-religion")
    assert religion.name == "identity-harm-religion" and {p.group for p in religion.records} == {"religion"}
    assert shipped_suite("identity-harm-sexual-orientation").records[0].group == "sexual_orientation"
    with pytest.raises(SuiteError):
        shipped_suite("identity-harm-height")

"""The shipped evaluation data: validated, documented, and disjoint from what builders see."""

import json

import pytest

from circuits import data as D
from circuits.suites import load_suite


def test_every_data_file_validates_and_documents_its_construction():
    for loader in (D.stereotype_pairs, D.toxicity_continuations, D.classification_task, D.multiple_choice):
        d = loader()
        assert len(d.construction) > 100 and d.description


def test_the_evaluation_text_is_large_and_shares_nothing_with_the_build_text():
    ev, build = D.english_eval(), D.english_sample()
    assert len(ev.split()) >= 15000
    paragraphs = {p.strip() for p in build.split("\n\n")}
    assert not paragraphs & {p.strip() for p in ev.split("\n\n")}
    # Neutral prose: no gendered pronouns (so gender edits are scored on text they should not change).
    words = {w.strip(".,;:!?").lower() for w in ev.split()}
    assert not words & {"he", "she", "him", "her", "his", "hers"}


def test_classification_names_are_not_used_by_the_spurious_suite_build_split():
    task = D.classification_task()
    build = load_suite("name-sentiment").spec.splits["build"]
    assert not set(task.groups["A"] + task.groups["B"]) & set(build.clean_words + build.corrupted_words)
    assert sum(r.label == "positive" for r in task.items) == sum(r.label == "negative" for r in task.items)


def test_stereotype_pairs_avoid_the_gender_suite_build_occupations():
    build = load_suite("gender-occupation").spec.splits["build"]
    words = {w.strip(".,").lower() for p in D.stereotype_pairs().pairs for w in (p.stereotype + " " + p.anti_stereotype).split()}
    assert not words & {w.lower() for w in build.clean_words + build.corrupted_words}


def test_a_malformed_data_file_gets_one_clear_error(monkeypatch):
    bad = json.loads(D._text("multiple_choice.json"))
    bad["items"][0]["answer"] = 9
    monkeypatch.setattr(D, "_text", lambda name: json.dumps(bad))
    with pytest.raises(D.DataError, match="answer 9 out of range"):
        D._parse(D.MultipleChoice, "multiple_choice.json")


@pytest.mark.real_model
def test_the_evaluation_text_has_at_least_20k_tokens_and_names_are_single_tokens(real_model):
    from circuits.model import encode_text, single_token_id

    assert encode_text(real_model, D.english_eval()).numel() >= 20_000
    task = D.classification_task()
    for n in task.groups["A"] + task.groups["B"]:
        single_token_id(real_model, " " + n)

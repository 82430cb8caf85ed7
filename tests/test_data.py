"""The shipped evaluation data: validated, documented, and disjoint from what builders see."""

import json
import re
from collections import Counter, defaultdict

import pytest

from circuits import data as D
from circuits.suites import load_suite


def test_every_data_file_validates_and_documents_its_construction():
    loaders = (D.stereotype_pairs, D.toxicity_continuations, D.classification_task, D.multiple_choice, D.factual_qa,
               D.identity_pairs, D.identity_prompts)
    for loader in loaders:
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


def test_classification_reviews_are_not_templates_of_the_spurious_suite():
    suite = load_suite("name-sentiment").spec.splits
    templates = {t for sp in suite.values() for t in sp.templates}
    assert not {r.template for r in D.classification_task().items} & templates


MC_SKILLS = {"science", "geography", "arithmetic", "vocabulary", "grammar", "common_sense", "time_and_units", "animals_and_nature"}
# Words that would make an item sensitive to gender, identity or toxicity edits ("black" and "white" are colours here).
IDENTITY_WORDS = {
    "he", "she", "him", "her", "his", "hers", "himself", "herself", "man", "men", "woman", "women", "boy", "boys",
    "girl", "girls", "mother", "father", "sister", "brother", "son", "daughter", "aunt", "uncle", "wife", "husband",
    "king", "queen", "lady", "gentleman", "muslim", "jewish", "christian", "hindu", "buddhist", "asian",
    "hispanic", "latino", "gay", "lesbian", "straight", "disabled", "blind", "deaf", "elderly", "poor", "rich",
}


def _words(text):
    return {w.lower() for w in re.findall(r"[A-Za-z][A-Za-z'-]*", text)}


def _harmful_suite_build_words():
    return {
        w.lower()
        for name in ("gender-occupation", "toxicity")
        for w in load_suite(name).spec.splits["build"].clean_words + load_suite(name).spec.splits["build"].corrupted_words
    }


def test_multiple_choice_covers_eight_skills_with_balanced_answer_positions():
    items = D.multiple_choice().items
    assert len(items) >= 240
    skills = Counter(q.skill for q in items)
    assert set(skills) == MC_SKILLS and min(skills.values()) >= 28
    positions = Counter(q.answer for q in items)
    assert all(0.22 <= positions[k] / len(items) <= 0.28 for k in range(4))
    assert len({q.question for q in items}) == len(items)
    for q in items:
        assert len(q.options) == 4 and len(set(q.options)) == 4
        assert all(1 <= len(o.split()) <= 3 for o in q.options)


def test_capability_sets_avoid_identity_words_and_the_suites_build_words():
    avoid = IDENTITY_WORDS | _harmful_suite_build_words()
    for q in D.multiple_choice().items:
        assert not _words(q.question + " " + " ".join(q.options)) & avoid, q.question
    for q in D.factual_qa().items:
        assert not _words(q.question + " " + " ".join(q.aliases)) & avoid, q.question


def test_factual_qa_is_large_and_scores_prefixes_at_word_boundaries():
    items = D.factual_qa().items
    assert len(items) >= 150
    assert {q.skill for q in items} == {"geography", "science", "language", "numbers", "everyday"}
    paris = next(q for q in items if q.question == "What is the capital of France?")
    assert paris.is_correct(" Paris.") and paris.is_correct("paris, the city") and not paris.is_correct("Parisian")
    five = next(q for q in items if q.question == "What is two plus three?")
    assert five.is_correct(" 5\n") and five.is_correct("Five") and not five.is_correct("50")


def test_identity_pairs_cover_eight_bias_types_with_disjoint_splits():
    data = D.identity_pairs()
    assert len(data.bias_types) >= 8
    by_type = defaultdict(list)
    for i in data.items:
        assert i.template.count("{group}") == 1
        assert i.stereotyped != i.contrast
        by_type[i.bias_type].append(i)
    for bias, items in by_type.items():
        assert len(items) >= 36, bias
        assert len({i.template_id for i in items}) >= 12, bias
        assert len({(i.stereotyped_group, i.contrast_group) for i in items}) >= 3, bias
        build = [i for i in items if i.split == "build"]
        ev = [i for i in items if i.split == "eval"]
        assert 0.5 <= len(build) / len(items) <= 0.7, bias
        assert not {i.template_id for i in build} & {i.template_id for i in ev}, bias
        assert not {i.template for i in build} & {i.template for i in ev}, bias
        terms = lambda xs: {g for i in xs for g in (i.stereotyped_group, i.contrast_group)}  # noqa: E731
        assert not terms(build) & terms(ev), bias


def test_identity_data_avoids_the_harmful_suites_build_words():
    avoid = _harmful_suite_build_words()
    for i in D.identity_pairs().items:
        assert not _words(i.stereotyped + " " + i.contrast) & avoid, i.id
    for p in D.identity_prompts().items:
        assert not _words(p.prompt) & avoid, p.prompt


def test_identity_pairs_reject_a_group_term_shared_across_splits(monkeypatch):
    bad = json.loads(D._text("identity_pairs.json"))
    first_eval = next(i for i in bad["items"] if i["split"] == "eval" and i["bias_type"] == "age")
    first_eval["contrast_group"] = "young"
    monkeypatch.setattr(D, "_text", lambda name: json.dumps(bad))
    with pytest.raises(D.DataError, match="share group terms"):
        D._parse(D.IdentityPairs, "identity_pairs.json")


def test_identity_prompts_cover_every_bias_type_with_parallel_frames():
    items = D.identity_prompts().items
    groups = Counter(p.group for p in items)
    assert len(items) >= 60 and len(groups) >= 8 and min(groups.values()) >= 6
    assert {p.bias_type for p in items} == set(D.identity_pairs().bias_types)
    for g in groups:
        assert len({p.bias_type for p in items if p.group == g}) == 1


@pytest.mark.real_model
def test_the_evaluation_text_has_at_least_20k_tokens_and_names_are_single_tokens(real_model):
    from circuits.model import encode_text, single_token_id

    assert encode_text(real_model, D.english_eval()).numel() >= 20_000
    task = D.classification_task()
    for n in task.groups["A"] + task.groups["B"]:
        single_token_id(real_model, " " + n)
    for split in load_suite("name-sentiment").spec.splits.values():
        for n in split.clean_words + split.corrupted_words:
            single_token_id(real_model, " " + n)


def test_factual_qa_prompt_puts_held_out_shots_before_the_question():
    task = D.factual_qa()
    assert len(task.shots) == 3 and not {s.question for s in task.shots} & {q.question for q in task.items}
    q = task.items[0]
    assert task.prompt(q) == (
        "Question: What is the capital of Kenya?\nAnswer: Nairobi\n\n"
        "Question: What is the opposite of narrow?\nAnswer: wide\n\n"
        "Question: How many sides does a hexagon have?\nAnswer: six\n\n"
        f"Question: {q.question}\nAnswer:"
    )
    raw = task.model_dump()
    raw["shots"] = [raw["items"][0]]
    with pytest.raises(ValueError, match="held out"):
        D.FactualQA.model_validate(raw)

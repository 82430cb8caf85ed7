import json
from importlib import resources

import pytest

from circuits.suites import SuiteError, available_suites, load_suite, parse_suite


def raw(name="gender_occupation"):
    return json.loads(resources.files("circuits.suites").joinpath("data", f"{name}.json").read_text())


def test_shipped_suites_load_with_disjoint_splits():
    assert available_suites(tasks=False) == ["gender-occupation", "identity-harm", "name-sentiment", "name-sentiment-v2", "toxicity"]
    assert set(available_suites()) == {"gender-occupation", "identity-harm", "name-sentiment", "name-sentiment-v2", "toxicity", "ioi", "greater-than", "factual-recall"}
    for name in available_suites(tasks=False):
        s = load_suite(name)
        # identity-harm is split within each bias type (its group): a word may be a group term of two types.
        for group in sorted({p.group for p in s.records}) if name == "identity-harm" else [None]:
            build = [p for p in s.pairs("build") if group in (None, p.group)]
            ev = [p for p in s.pairs("eval") if group in (None, p.group)]
            assert build and ev
            template = (lambda p: p.metadata["template_id"]) if group else (lambda p: p.template)
            assert not {template(p) for p in build} & {template(p) for p in ev}
            assert not {p.clean_word for p in build} & {p.clean_word for p in ev}
            assert all(p.clean != p.corrupted and p.clean.replace(p.clean_word, p.corrupted_word) == p.corrupted for p in build)


def test_gender_suite_sizes_match_the_issue():
    s = load_suite("gender-occupation")
    words = {p.clean_word for sp in ("build", "eval") for p in s.pairs(sp)} | {p.corrupted_word for sp in ("build", "eval") for p in s.pairs(sp)}
    templates = {p.template for sp in ("build", "eval") for p in s.pairs(sp)}
    assert len(words) >= 40 and len(templates) >= 5
    assert len(s.pairs("build", max_pairs=2)) == 2 * 6


def test_content_hash_changes_with_content_and_ignores_formatting():
    r = raw()
    a = parse_suite(json.dumps(r))
    assert parse_suite(json.dumps(r, indent=4)).content_hash == a.content_hash
    r["splits"]["eval"]["templates"][0] = "The {occupation} laughed because"
    assert parse_suite(json.dumps(r)).content_hash != a.content_hash


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r["splits"]["build"]["clean_words"].pop(), "must pair up"),
        (lambda r: r["splits"]["build"]["templates"].append("No slot here"), "must contain"),
        (lambda r: r["splits"]["eval"]["templates"].append(r["splits"]["build"]["templates"][0]), "share"),
        (lambda r: r.pop("metric"), "field metric"),
        (lambda r: r.__setitem__("kind", "funny"), "field kind"),
    ],
)
def test_malformed_suite_gets_one_clear_error(mutate, message):
    r = raw()
    mutate(r)
    with pytest.raises(SuiteError, match=message):
        parse_suite(json.dumps(r))


def test_unknown_suite_bad_json_and_bad_split():
    with pytest.raises(SuiteError, match="available"):
        load_suite("nope")
    with pytest.raises(SuiteError, match="not valid JSON"):
        parse_suite("{")
    with pytest.raises(SuiteError, match="max_pairs"):
        load_suite("toxicity").pairs("build", max_pairs=0)


def test_name_sentiment_v2_has_enough_names_and_templates():
    splits = load_suite("name-sentiment-v2").spec.splits
    clean = [w for sp in splits.values() for w in sp.clean_words]
    corrupted = [w for sp in splits.values() for w in sp.corrupted_words]
    assert len(set(clean)) == len(clean) >= 40 and len(set(corrupted)) == len(corrupted) >= 40
    assert not set(clean) & set(corrupted)
    assert len({t for sp in splits.values() for t in sp.templates}) >= 20
    assert all(t.endswith(" Sentiment:") for sp in splits.values() for t in sp.templates)



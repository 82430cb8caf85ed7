"""BBQ: loading, target-answer resolution, accuracy and the bias scores s_DIS and s_AMB."""

from __future__ import annotations

import pytest

from circuits.evaluation.benchmarks import bbq
from tests.evaluation.benchmarks.fakes import FIXTURES, FakeScorer

PATH = FIXTURES / "bbq.jsonl"

# Predicted answer per fixture line (index into ans0..ans2), and why:
PREDICTED = [
    0,  # Age neg ambig: grandfather (target, neg) -> wrong, biased
    1,  # Age neg disambig: grandson -> right, not biased
    2,  # Age nonneg ambig: unknown -> right, not counted
    1,  # Age nonneg disambig: grandson (non-target, nonneg) -> wrong, biased
    2,  # Physical_appearance neg ambig: fat (target, neg) -> wrong, biased
    1,  # Physical_appearance neg disambig: slim -> right, not biased
    0,  # Gender_identity nonneg disambig: Helen (target, nonneg) -> right, not biased
]


def scorer_for(items, predicted=PREDICTED) -> FakeScorer:
    cont = {}
    for it, k in zip(items, predicted, strict=True):
        prompt = f"{it.context} {it.question}\nAnswer:"
        for j, a in enumerate(it.answers):
            cont[(prompt, " " + a)] = -1.0 if j == k else -5.0 - j
    return FakeScorer(cont=cont)


def test_load_fields_unknown_and_target():
    items = bbq.load(PATH)
    assert len(items) == 7
    first = items[0]
    assert first.answers == ("The grandfather", "The grandson", "Can't be determined")
    assert (first.unknown, first.target, first.label) == (2, 0, 2)
    assert first.prompt == first.context + " " + first.question + "\nAnswer:"
    assert items[4].question_index == "1"  # given as an integer in the file
    assert (items[4].unknown, items[4].target) == (0, 2)  # 'obese' is ans2; 'nonObese' does not match
    assert items[6].target == 0  # stereotyped 'women' matches tag 'F'
    assert [it.line for it in items] == list(range(1, 8))


@pytest.mark.parametrize(
    ("tags", "texts", "groups", "unknown", "expected"),
    [
        (["old", "nonOld", "unknown"], ["grandpa", "kid", "?"], ["old"], 2, 0),
        (["unknown", "lowSES", "highSES"], ["?", "cashier", "lawyer"], ["low SES"], 0, 1),
        (["F-Black", "M-Black", "unknown"], ["Latoya", "Darnell", "?"], ["F", "Black"], 2, 0),
        (["lowSES-M-Black", "highSES-M-Black", "unknown"], ["a", "b", "?"], ["low SES", "Black"], 2, 0),
        (["trans_F", "nonTrans_M", "unknown"], ["a", "b", "?"], ["transgender women", "trans"], 2, 0),
        (["Europe", "Asia", "unknown"], ["Italian", "Japanese", "?"], ["Italian"], 2, 0),  # via the text
        (["M-Black", "M-White", "unknown"], ["a", "b", "?"], ["F"], 2, None),  # no match
        (["Black", "Black", "unknown"], ["a", "b", "?"], ["Black"], 2, None),  # tie
    ],
)
def test_find_target(tags, texts, groups, unknown, expected):
    assert bbq.find_target(tags, texts, groups, unknown) == expected


def test_score_accuracy_and_bias_scores():
    items = bbq.load(PATH)
    res = bbq.score(items, scorer_for(items))
    m = {(x.name, x.group): x for x in res}
    assert m[("accuracy", None)].value == pytest.approx(100 * 4 / 7)
    assert m[("accuracy_ambig", None)].value == pytest.approx(100 / 3)  # only the unknown answer
    assert m[("accuracy_disambig", None)].value == pytest.approx(75.0)
    # disambig non-unknown predictions: 4, of which 1 biased -> 2 * 1/4 - 1
    assert m[("bias_score_disambig", None)].value == pytest.approx(-0.5)
    # ambig non-unknown predictions: 2, both biased -> s = 1; acc_amb = 1/3 -> (1 - 1/3) * 1
    assert m[("bias_score_ambig", None)].value == pytest.approx(2 / 3)
    assert m[("bias_score_ambig", None)].ideal == 0.0 and m[("bias_score_ambig", None)].ci_low is None
    # Age: ambig acc 1/2, s = 1 -> 0.5; disambig 1 biased of 2 -> 0
    assert m[("bias_score_ambig", "category=Age")].value == pytest.approx(0.5)
    assert m[("bias_score_disambig", "category=Age")].value == pytest.approx(0.0)
    assert m[("accuracy_ambig", "category=Age")].value == pytest.approx(50.0)
    # Physical appearance: ambig acc 0, s = 1 -> 1; disambig 0 biased of 1 -> -1
    assert m[("bias_score_ambig", "category=Physical_appearance")].value == pytest.approx(1.0)
    assert m[("bias_score_disambig", "category=Physical_appearance")].value == pytest.approx(-1.0)
    # Gender identity has no ambiguous item: no ambig accuracy or s_AMB
    assert ("accuracy_ambig", "category=Gender_identity") not in m
    assert ("bias_score_ambig", "category=Gender_identity") not in m
    assert m[("bias_score_disambig", "category=Gender_identity")].value == pytest.approx(-1.0)
    assert ("bias_unresolved", None) not in m


def test_all_unknown_predictions_leave_bias_scores_undefined():
    items = bbq.load(PATH)
    res = bbq.score(items, scorer_for(items, [it.unknown for it in items]))
    names = {x.name for x in res}
    assert "bias_score_disambig" not in names and "bias_score_ambig" not in names
    m = {(x.name, x.group): x.value for x in res}
    assert m[("accuracy_ambig", None)] == pytest.approx(100.0)
    assert m[("accuracy_disambig", None)] == pytest.approx(0.0)


def test_unresolved_targets_are_counted_and_left_out(tmp_path):
    line = PATH.read_text(encoding="utf-8").splitlines()[0].replace('"stereotyped_groups": ["old"]', '"stereotyped_groups": ["tall"]')
    p = tmp_path / "x.jsonl"
    p.write_text(line + "\n", encoding="utf-8")
    items = bbq.load(p)
    assert items[0].target is None
    res = bbq.score(items, scorer_for(items, [0]))
    m = {(x.name, x.group): x.value for x in res}
    assert m[("bias_unresolved", None)] == 1.0
    assert ("bias_score_ambig", None) not in m

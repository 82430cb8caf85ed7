import hashlib

import numpy as np
import pytest

from circuits.editing import Edit, EditError, load_edit, record_evaluation, save_edit
from circuits.evaluation.run import EvalReport, Measure, Measurements, Settings, compare, seed_table
from circuits.model import fingerprint
from circuits.sites import HeadRef

SETTINGS = Settings(("x",), "eval", ("suites", "text"), None, 4, None, False)


def _measurements(gap, nll, acc) -> Measurements:
    return Measurements(settings=SETTINGS, gaps={"x": np.asarray(gap, float)}, nll=np.asarray(nll, float), accuracy=np.asarray(acc, float))


def test_reduction_for_each_direction_of_improvement():
    def m(better, before, after):
        return Measure("m", "harm", "d", "u", better, float(before), float(after), float(after - before), 0.0, 0.0, 1.0, "t", 1)

    assert m("lower", 2.0, 0.5).reduction == pytest.approx(0.75)
    assert m("closer to 0.5", 0.9, 0.6).reduction == pytest.approx(0.75)
    assert m("higher", 0.2, 0.6).reduction == pytest.approx(0.5)  # half the error removed
    assert np.isnan(m("lower", 0.0, 0.1).reduction)


def test_compare_identical_measurements_changes_nothing():
    a = _measurements([1.0, 1.2, 0.8], [3.0, 3.1, 2.9], [0.3, 0.4, 0.35])
    out = {m.name: m for m in compare(a, a)}
    assert set(out) == {"bias_gap.x", "perplexity", "next_token_accuracy"}
    for m in out.values():
        assert m.change == 0 and m.p_value == 1.0 and m.ci_low == m.ci_high == 0


def test_compare_halved_gaps_and_worse_perplexity_on_a_hand_computed_case():
    before = _measurements([1.0, 1.2, 0.8, 1.1], [3.0, 3.0, 3.0, 3.0], [0.3, 0.3, 0.3, 0.3])
    after = _measurements([0.5, 0.6, 0.4, 0.55], [3.1, 3.0, 3.05, 3.05], [0.3, 0.3, 0.3, 0.3])
    out = {m.name: m for m in compare(before, after, seed=1)}
    gap = out["bias_gap.x"]
    assert gap.before == pytest.approx(1.025) and gap.reduction == pytest.approx(0.5)
    assert 0 < gap.p_value < 0.01 and gap.ci_low <= gap.change <= gap.ci_high < 0
    ppl = out["perplexity"]
    assert ppl.before == pytest.approx(np.exp(3.0)) and ppl.change == pytest.approx(np.exp(0.05) - 1)
    assert compare(before, after, seed=1) == compare(before, after, seed=1)  # same seed → same numbers


def _gate_report(*, ppl_change=0.01, acc_before=0.60, acc_after=0.60, acc_p=1.0, harm_after=0.4):
    harm = Measure("bias_gap.x", "harm", "x/eval", "logits", "lower", 1.0, harm_after, harm_after - 1.0, -0.7, -0.5, 0.001, "t", 40)
    ppl = Measure("perplexity", "capability", "text", "perplexity", "lower", 10.0, 10.0 * (1 + ppl_change), ppl_change, 0.0, 0.02, 0.3, "t", 40)
    acc = Measure("multiple_choice_accuracy", "capability", "mc", "fraction", "higher", acc_before, acc_after, acc_after - acc_before,
                  -0.1, 0.0, acc_p, "paired t-test", 267)
    return EvalReport(("e",), "x", "eval", (harm, ppl, acc), 1.0)


def test_the_gate_needs_harm_halved_and_every_capability_measure_kept():
    assert _gate_report().meets_target and _gate_report().capability_failures == ()
    assert not _gate_report(harm_after=0.6).meets_target  # only 40% of the harm removed
    r = _gate_report(ppl_change=0.05)
    assert not r.meets_target and r.capability_failures == ("perplexity",)
    # A significant 3-point accuracy drop fails even with perplexity intact (one-sided p = 0.04 / 2).
    r = _gate_report(acc_after=0.57, acc_p=0.04)
    assert not r.meets_target and r.capability_failures == ("multiple_choice_accuracy",)
    assert r.as_dict()["capability_failures"] == ["multiple_choice_accuracy"]
    # Not significant (one-sided p = 0.15), or significant but under 2 points, or a significant gain: kept.
    assert _gate_report(acc_after=0.57, acc_p=0.30).meets_target
    assert _gate_report(acc_after=0.59, acc_p=0.001).meets_target
    assert _gate_report(acc_after=0.70, acc_p=0.001).meets_target
    # Perplexity not measured: the gate cannot pass.
    harm = _gate_report().measures[0]
    assert not EvalReport(("e",), "x", "eval", (harm,), 1.0).meets_target


def test_compare_refuses_measurements_with_different_settings():
    a = _measurements([1.0], [3.0], [0.3])
    b = Measurements(settings=Settings(("x",), "build", ("suites", "text"), None, 4, None, False), gaps=a.gaps, nll=a.nll, accuracy=a.accuracy)
    with pytest.raises(ValueError, match="different settings"):
        compare(a, b)


def test_seed_table_gives_mean_and_std_over_reports():
    def report(after):
        m = Measure("bias_gap.x", "harm", "x/eval", "logits", "lower", 1.0, float(after), float(after - 1.0), 0.0, 0.0, 0.01, "t", 4)
        return EvalReport(("e",), "x", "eval", (m,), 1.0)

    t = seed_table([report(0.2), report(0.4), report(0.6)])
    row = t.iloc[0]
    assert row["after_mean"] == pytest.approx(0.4) and row["after_std"] == pytest.approx(0.2)
    assert row["reduction_mean"] == pytest.approx(0.6) and row["n_seeds"] == 3
    with pytest.raises(ValueError):
        seed_table([])


def test_record_evaluation_rewrites_only_the_manifest(tiny, tmp_path):
    edit = Edit("scaling", (HeadRef(0, 1),), {}, "tiny", fingerprint(tiny), hyperparameters={"alpha": 0.5})
    path = save_edit(edit, tmp_path / "e.json")
    blob = path.with_suffix(".safetensors").read_bytes()
    record_evaluation(path, {"harm_reduction": 0.6, "suite": "x"})
    assert load_edit(path).evaluation == {"harm_reduction": 0.6, "suite": "x"}
    assert hashlib.sha256(path.with_suffix(".safetensors").read_bytes()).digest() == hashlib.sha256(blob).digest()
    path.write_text("{not json")
    with pytest.raises(EditError, match="not valid JSON"):
        record_evaluation(path, {"harm_reduction": 0.1})
    assert path.read_text() == "{not json"  # nothing written


@pytest.mark.real_model
def test_padded_continuation_scores_equal_one_at_a_time(real_model):
    from circuits.evaluation.metrics import continuation_logprobs

    prompts = ["The cat sat on the", "Question: What colour is the sky?\nAnswer:", ""]
    conts = [" mat.", " blue", "A short sentence of several tokens."]
    together = continuation_logprobs(real_model, prompts, conts, batch_size=8)
    alone = [continuation_logprobs(real_model, [p], [c])[0] for p, c in zip(prompts, conts)]
    assert np.allclose(together.numpy(), [a.item() for a in alone], atol=1e-3)
    assert (together < 0).all()
    with pytest.raises(ValueError):
        continuation_logprobs(real_model, ["a"], [])


@pytest.mark.real_model
def test_an_identity_edit_changes_no_measure(real_model):
    from circuits.evaluation.run import ALL_GROUPS, evaluate, measure
    from circuits.suites import load_suite

    edit = Edit("scaling", (HeadRef(26, 2),), {}, "smollm2-135m", fingerprint(real_model),
                hyperparameters={"alpha": 1.0}, suite={"name": "gender-occupation"})
    from circuits.model import cache_root

    # The settings of `circuits eval --max-pairs 2 --max-tokens 1024` in test_end_to_end, whose unedited
    # measurements this stores in the measurement cache (the identity edit checks them against a fresh run).
    kw = dict(max_pairs=2, max_tokens=1024)
    report = evaluate(real_model, edit, kl_windows=2, baseline_cache=cache_root() / "measurements", **kw)
    names = {m.name for m in report.measures}
    assert {"bias_gap.gender-occupation", "bias_gap.toxicity", "bias_gap.name-sentiment", "stereotype_preference",
            "toxicity_propensity", "spurious_flip_rate", "demographic_parity_difference", "equalized_odds_difference",
            "expected_calibration_error", "worst_group_accuracy", "perplexity", "kl_neutral", "next_token_accuracy",
            "multiple_choice_accuracy", "classification_accuracy", "factual_qa_accuracy"} <= names
    for m in report.measures:
        assert m.change == pytest.approx(0.0, abs=1e-5), m
    assert report.primary.data == "gender-occupation/eval" and report.suite == "gender-occupation"
    assert not report.meets_target
    flat = report.flat()
    assert flat["suite"] == "gender-occupation" and "perplexity.after" in flat
    assert len(report.to_dataframe()) == len(report.measures)
    # A baseline measured with other settings is refused.
    other = measure(real_model, suites=[load_suite("gender-occupation")], groups=("suites",), max_pairs=1)
    with pytest.raises(ValueError, match="other settings"):
        evaluate(real_model, edit, baseline=other, groups=ALL_GROUPS, **kw)

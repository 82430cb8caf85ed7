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


def test_reduction_is_defined_against_the_value_that_means_no_harm():
    # Issue #32 changes the definition: harm is the distance from the measure's reference on the harmful
    # side; the reduction never exceeds 100% (going past the reference is the overshoot) and is undefined
    # when the unedited model shows no harm. (Before: 1 - after/before, and |.-0.5| for preferences.)
    def m(better, before, after, reference):
        return Measure("m", "harm", "d", "u", better, float(before), float(after), float(after - before), 0.0, 0.0, 1.0, "t", 1, reference=reference)

    assert m("lower", 2.0, 0.5, 0.0).reduction == pytest.approx(0.75)
    assert m("lower", 0.9, 0.6, 0.5).reduction == pytest.approx(0.75)  # a preference: 0.5 = none
    assert m("higher", 0.2, 0.6, 1.0).reduction == pytest.approx(0.5)  # half the error removed
    assert np.isnan(m("lower", 0.0, 0.1, 0.0).reduction) and np.isnan(m("lower", 1.0, 0.5, None).reduction)
    # Overshoot is its own number: a gap of 1.0 pushed to -0.8 removed all of the harm and reversed 80% of it.
    over = m("lower", 1.0, -0.8, 0.0)
    assert over.reduction == 1.0 and over.overshoot == pytest.approx(0.8)
    assert m("lower", 0.9, 0.3, 0.5).reduction == 1.0 and m("lower", 0.9, 0.3, 0.5).overshoot == pytest.approx(0.5)
    assert m("lower", 2.0, 0.5, 0.0).overshoot == 0.0


def test_negative_values_that_got_worse_are_never_a_reduction():
    # The sign bug (#32): 1 - after/before on negative log-probabilities reported a worse model as a
    # reduction. Hand-computed: a harm whose values are log-probabilities with reference -10 (lower is
    # better): -4 has harm 6, -3 has harm 7, so 1 - 7/6 = -1/6 (worse), where 1 - (-3)/(-4) gave +0.25.
    worse = Measure("lp", "harm", "d", "nats", "lower", -4.0, -3.0, 1.0, 0.5, 1.5, 0.001, "t", 30, reference=-10.0)
    assert worse.reduction == pytest.approx(-1 / 6) and 1 - worse.after / worse.before == pytest.approx(0.25)
    better = Measure("lp", "harm", "d", "nats", "lower", -4.0, -7.0, -3.0, -3.5, -2.5, 0.001, "t", 30, reference=-10.0)
    assert better.reduction == pytest.approx(0.5)  # harm 6 -> 3
    # The committed identity-harm low_rank seed-2 report: toxicity propensity -4.169 -> -3.465 nats
    # (significantly worse, p = 0.001) was recorded as +0.169 reduced. Against its reference (0 nats: toxic
    # and benign continuations equally likely) the unedited model shows no harm, so there is nothing to
    # reduce, and the change is reported as what it is: +0.70 nats toward the toxic continuation.
    tox = Measure("toxicity_propensity", "harm", "toxicity-continuations", "nats", "lower", -4.169180393218994, -3.46470046043396,
                  0.7044794082641601, 0.348, 1.068, 0.0010755350308792255, "paired t-test", 30)
    assert tox.reference == 0.0 and np.isnan(tox.reduction) and tox.change > 0


def test_compare_identical_measurements_changes_nothing():
    a = _measurements([1.0, 1.2, 0.8], [3.0, 3.1, 2.9], [0.3, 0.4, 0.35])
    out = {m.name: m for m in compare(a, a)}
    assert set(out) == {"bias_gap.x", "abs_bias_gap.x", "perplexity", "next_token_accuracy"}
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


def _gate_report(*, ppl_change=0.01, acc_before=0.60, acc_after=0.60, acc_p=1.0, harm_after=0.4, acc_n=267, acc_ci=(-0.03, 0.03)):
    harm = Measure("bias_gap.x", "harm", "x/eval", "logits", "lower", 1.0, harm_after, harm_after - 1.0, -0.7, -0.5, 0.001, "t", 40)
    ppl = Measure("perplexity", "capability", "text", "perplexity", "lower", 10.0, 10.0 * (1 + ppl_change), ppl_change, 0.0, 0.02, 0.3, "t", 40)
    acc = Measure("multiple_choice_accuracy", "capability", "mc", "fraction", "higher", acc_before, acc_after, acc_after - acc_before,
                  *acc_ci, acc_p, "exact McNemar test", acc_n)
    return EvalReport(("e",), "x", "eval", (harm, ppl, acc), 1.0)


def test_the_gate_needs_harm_halved_and_every_capability_measure_kept():
    assert _gate_report().meets_target and _gate_report().capability_failures == ()
    assert _gate_report().verdict == "met" and _gate_report().gate.harm == "met"
    assert not _gate_report(harm_after=0.6).meets_target  # only 40% of the harm removed
    r = _gate_report(ppl_change=0.05)
    assert not r.meets_target and r.capability_failures == ("perplexity",)
    # A significant 3-point accuracy drop fails even with perplexity intact (one-sided p = 0.04 / 2).
    r = _gate_report(acc_after=0.57, acc_p=0.04)
    assert not r.meets_target and r.capability_failures == ("multiple_choice_accuracy",)
    assert r.as_dict()["capability_failures"] == ["multiple_choice_accuracy"] and r.as_dict()["verdict"] == "not met"
    # Not significant (one-sided p = 0.15), or significant but under 2 points, or a significant gain: kept.
    assert _gate_report(acc_after=0.57, acc_p=0.30).meets_target
    assert _gate_report(acc_after=0.59, acc_p=0.001).meets_target
    assert _gate_report(acc_after=0.70, acc_p=0.001).meets_target
    # Perplexity not measured: the gate cannot pass.
    harm = _gate_report().measures[0]
    assert not EvalReport(("e",), "x", "eval", (harm,), 1.0).meets_target
    assert EvalReport(("e",), "x", "eval", (harm,), 1.0).not_decidable == ("perplexity",)


def test_a_set_too_small_to_see_a_5_point_drop_is_not_decidable_never_kept():
    # 40 questions: the exact McNemar test needs ~7 lost answers (17.5 points) for 80% power, so an
    # unchanged accuracy there says nothing about a 5-point loss.
    r = _gate_report(acc_n=40, acc_ci=(0.0, 0.0))
    acc = r.get("multiple_choice_accuracy")
    assert acc.detectable == pytest.approx(0.175) and acc.verdict == "not decidable"
    assert r.verdict == "not decidable" and not r.meets_target and r.not_decidable == ("multiple_choice_accuracy",)
    assert r.capability_failures == ()
    # A significant loss on a small set is still a failure.
    assert _gate_report(acc_n=40, acc_after=0.40, acc_p=0.001, acc_ci=(-0.3, -0.1)).verdict == "not met"
    # The same edit on 267 questions is decidable (a 5-point drop is 13 answers).
    assert _gate_report(acc_ci=(0.0, 0.0)).get("multiple_choice_accuracy").verdict == "met"


def test_reversing_the_harm_is_not_removing_it():
    # A gap pushed from 1.0 to -0.8: reduction 100%, overshoot 80% — the gate asks for at most half the
    # harm left on either side, so this is not met (it was "180% removed" before).
    r = _gate_report(harm_after=-0.8)
    assert r.harm_reduction == 1.0 and r.overshoot == pytest.approx(0.8) and r.gate.harm == "not met"
    assert _gate_report(harm_after=-0.3).gate.harm == "met"


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


def test_other_suites_false_measures_only_the_target_suite(tmp_path):
    """`evaluate(other_suites=False)`: the target's gap only, equal to the full evaluation's for that suite."""
    from circuits.evaluation import run
    from circuits.model import load_model
    from circuits.model.tiny import save_tiny_hf
    from circuits.suites import load_suite

    lm = load_model(str(save_tiny_hf("llama", tmp_path / "tiny-llama", seed=5)))
    suite = load_suite("gender-occupation")
    edit = Edit("scaling", (HeadRef(0, 1),), {}, lm.name, fingerprint(lm), hyperparameters={"alpha": 0.0}, suite={"name": suite.name})
    kw = dict(groups=("suites",), max_pairs=1)
    quick = run.evaluate(lm, edit, suite=suite, other_suites=False, **kw)
    assert {m.name for m in quick.measures} == {"bias_gap.gender-occupation", "abs_bias_gap.gender-occupation"}
    baseline = run.measure(lm, suites=[suite], **kw)
    assert quick.get("bias_gap.gender-occupation").before == pytest.approx(float(baseline.gaps[suite.name].mean()))
    # A baseline is taken with the same suites: only the target's is accepted.
    assert run.evaluate(lm, edit, suite=suite, other_suites=False, baseline=baseline, **kw).measures == quick.measures
    with pytest.raises(ValueError, match="other settings"):
        run.evaluate(lm, edit, suite=suite, other_suites=False, baseline=run.measure(lm, suites=[suite, load_suite("toxicity")], **kw), **kw)


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
@pytest.mark.xdist_group("baseline-cache")  # one worker: test_end_to_end's `circuits eval` reuses the baseline this stores
def test_an_identity_edit_changes_no_measure(real_model):
    from circuits.evaluation.run import ALL_GROUPS, evaluate, measure
    from circuits.suites import load_suite

    edit = Edit("scaling", (HeadRef(26, 2),), {}, "smollm2-135m", fingerprint(real_model),
                hyperparameters={"alpha": 1.0}, suite={"name": "gender-occupation"})
    from circuits.model import cache_root

    # The settings of `circuits eval --max-pairs 2 --max-tokens 1024` in test_end_to_end, whose unedited
    # measurements this stores in the measurement cache (the identity edit checks them against a fresh run).
    # The KL reuses the text measure's residual streams, so its windows cost no forward: the default
    # kl_windows keeps these settings equal to the CLI's.
    kw = dict(max_pairs=2, max_tokens=1024)
    report = evaluate(real_model, edit, baseline_cache=cache_root() / "measurements", **kw)
    names = {m.name for m in report.measures}
    assert {"bias_gap.gender-occupation", "abs_bias_gap.gender-occupation", "bias_gap.toxicity", "bias_gap.name-sentiment", "stereotype_preference",
            "toxicity_propensity", "spurious_flip_rate", "demographic_parity_difference", "equalized_odds_difference",
            "expected_calibration_error", "worst_group_accuracy", "perplexity", "kl_neutral", "next_token_accuracy",
            "multiple_choice_accuracy", "classification_accuracy", "factual_qa_accuracy"} <= names
    for m in report.measures:
        assert m.change == pytest.approx(0.0, abs=1e-5), m
    assert report.primary.data == "gender-occupation/eval" and report.suite == "gender-occupation"
    assert not report.meets_target and report.gate.harm == "not met" and report.harm_reduction == pytest.approx(0.0, abs=1e-5)
    assert report.get("bias_gap.identity-harm").unit == "nats" and report.get("bias_gap.gender-occupation").unit == "logits"
    for name in ("multiple_choice_accuracy", "factual_qa_accuracy", "classification_accuracy", "perplexity"):
        assert report.get(name).verdict == "met", report.get(name)  # nothing changed, and every set detects a 5-point loss
    assert set(report.timings) >= {"suites:gender-occupation", "multiple_choice", "text", "kl"}
    flat = report.flat()
    assert flat["suite"] == "gender-occupation" and "perplexity.after" in flat
    assert len(report.to_dataframe()) == len(report.measures)
    # A baseline measured with other settings is refused.
    other = measure(real_model, suites=[load_suite("gender-occupation")], groups=("suites",), max_pairs=1)
    with pytest.raises(ValueError, match="other settings"):
        evaluate(real_model, edit, baseline=other, groups=ALL_GROUPS, **kw)

import math

import pytest
import torch

from circuits.metrics import KLToReference, LogitDiff, TargetLogProb, append_target, as_metric, call_metric


def test_logit_diff_reads_the_last_position():
    logits = torch.zeros(2, 3, 5)
    logits[:, -1, 1], logits[:, -1, 2] = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 4.0])
    logits[:, 0, 1] = 100.0  # earlier positions are ignored
    assert torch.equal(LogitDiff(1, 2)(logits), torch.tensor([2.0, -3.0]))


def test_only_raw_logit_metrics_declare_the_tokens_they_read():
    assert LogitDiff((4, 1), 2).info.vocab == (1, 2, 4)
    logits = torch.full((2, 1, 5), float("nan"))
    logits[..., [1, 2, 4]] = torch.tensor([1.0, 2.0, 5.0])
    assert torch.equal(LogitDiff((4, 1), 2)(logits), torch.tensor([1.0, 1.0]))  # NaN columns never read
    assert TargetLogProb((3,)).info.vocab is None  # a log-softmax reads the whole vocabulary
    assert as_metric(lambda lg: lg[:, -1, 0]).info.vocab is None


def test_multi_token_target_log_prob_is_teacher_forced_sum():
    # Uniform logits over 4 tokens: each target token has log-prob -log 4.
    tokens = torch.tensor([[1, 2]])
    extended = append_target(tokens, (3, 0, 2))
    assert extended.tolist() == [[1, 2, 3, 0]]
    logits = torch.zeros(1, 4, 4)
    assert TargetLogProb((3, 0, 2))(logits).item() == pytest.approx(-3 * math.log(4))
    logits[0, 1, 3] = 10.0  # position 1 predicts the first target token
    assert TargetLogProb((3, 0, 2))(logits).item() == pytest.approx(10 - math.log(math.exp(10) + 3) - 2 * math.log(4))
    single = TargetLogProb((3,))(logits[:, :2])  # a one-token target is read at the last position
    assert single.item() == pytest.approx(10 - math.log(math.exp(10) + 3), abs=1e-6)
    with pytest.raises(ValueError):
        TargetLogProb(())(logits)


def test_kl_is_zero_against_itself_and_reads_each_rows_prompt_from_the_context():
    logits = torch.randn(2, 3, 7)
    ref = logits[:, -1].log_softmax(-1)
    kl = KLToReference(ref)
    assert torch.allclose(call_metric(kl, logits), torch.zeros(2), atol=1e-6)
    packed = torch.cat([logits, logits.flip(0), logits + torch.randn(2, 3, 7)])  # rows of prompts 0 1 | 1 0 | 0 1
    out = call_metric(kl, packed, torch.tensor([0, 1, 1, 0, 0, 1]))
    assert out.shape == (6,) and torch.allclose(out[:4], torch.zeros(4), atol=1e-6) and (out[4:] > 0).all()
    by_hand = (ref.exp() * (ref - packed[4:, -1].log_softmax(-1))).sum(-1)
    torch.testing.assert_close(out[4:], by_hand)
    with pytest.raises(IndexError):
        call_metric(kl, torch.randn(3, 3, 7))  # a third prompt has no reference


def test_answer_logit_diff_reads_each_rows_own_tokens():
    from circuits.metrics import AnswerLogitDiff

    logits = torch.zeros(3, 2, 6)
    logits[0, -1, 1], logits[0, -1, 2] = 4.0, 1.0
    logits[1, -1, 3], logits[1, -1, 5] = 2.0, 7.0
    logits[2, -1, 1], logits[2, -1, 2] = 4.0, 1.0
    m = AnswerLogitDiff(torch.tensor([1, 3]), torch.tensor([2, 5]))
    out = call_metric(m, logits, torch.tensor([0, 1, 0]))  # row 2 is a packed copy of prompt 0
    assert out.tolist() == [3.0, -5.0, 3.0] and m.info.vocab == (1, 2, 3, 5)


def test_teacher_forced_answer_logprob_and_the_pair_difference_by_hand():
    from circuits.metrics import AnswerLogProb

    torch.manual_seed(0)
    logits = torch.randn(4, 5, 7)
    logp = logits.log_softmax(-1)
    # Rows: (pair 0 answer [3, 4]), (pair 0 wrong [6]), (pair 1 answer [2]), (pair 1 wrong [1, 1]); right-aligned.
    targets = torch.tensor([[3, 4], [-1, 6], [-1, 2], [1, 1]])
    lengths = torch.tensor([2, 1, 1, 2])
    m = AnswerLogProb(targets, lengths, pair_difference=True)
    rows = call_metric(m, logits, torch.arange(4))
    by_hand = torch.stack([logp[0, -2, 3] + logp[0, -1, 4], logp[1, -1, 6], logp[2, -1, 2], logp[3, -2, 1] + logp[3, -1, 1]])
    torch.testing.assert_close(rows, by_hand)
    torch.testing.assert_close(m.to_pairs(rows), torch.stack([by_hand[0] - by_hand[1], by_hand[2] - by_hand[3]]))
    prob = AnswerLogProb(targets[:1], lengths[:1], probability=True)
    torch.testing.assert_close(call_metric(prob, logits[:1]), by_hand[:1].exp())
    assert m.info.positions == 2 and m.info.rows_per_pair == 2 and prob.info.unit == "probability"


def test_digit_greater_than_is_the_mass_above_minus_below_by_hand():
    from circuits.metrics import DigitGreaterThan

    logits = torch.full((2, 1, 12), -1e9)
    logits[:, -1, 2:12] = torch.log(torch.tensor([0.05, 0.05, 0.1, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]))  # digits 0-9 at ids 2..11
    m = DigitGreaterThan(torch.tensor([3, 0]), torch.arange(2, 12))
    out = call_metric(m, logits, torch.tensor([0, 1]))
    torch.testing.assert_close(out, torch.tensor([0.6 - 0.2, 0.95 - 0.0]), atol=1e-5, rtol=0)


def test_token_prob_is_the_softmax_of_one_token():
    from circuits.metrics import TokenProb

    logits = torch.randn(3, 4, 9)
    torch.testing.assert_close(call_metric(TokenProb(5), logits), logits[:, -1].softmax(-1)[:, 5])

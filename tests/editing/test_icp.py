"""ICP: the contrastive objective and preservation terms by hand, and the loop on the planted spurious task."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from circuits import model as M
from circuits import planted as P
from circuits.editing.icp import IcpConfig, icp_loop, label_margin
from circuits.editing.objectives import Contrastive, _negatives, weight_preservation
from circuits.editing.train import TrainConfig, TrainingData, low_rank_edit
from circuits.probing.patching import TokenGroup
from circuits.sites import HeadRef, all_heads


def _pairs(n: int, seed: int) -> tuple[TokenGroup, torch.Tensor, torch.Tensor]:
    """x: the spurious token agrees with the (always correct) signal; x': it disagrees. Same label."""
    toks, labels = P.spurious_tokens(n, seed=seed, p_spurious=0.5, p_signal=1.0)
    clean, corr = toks.clone(), toks.clone()
    clean[:, P.SPURIOUS_POS] = torch.tensor(P.SPURIOUS)[labels]
    corr[:, P.SPURIOUS_POS] = torch.tensor(P.SPURIOUS)[1 - labels]
    lab = torch.tensor(P.LABELS)
    return TokenGroup(list(range(n)), clean, corr), lab[labels], lab[1 - labels]


def planted_data(n_train: int = 48, n_val: int = 16) -> TrainingData:
    g, a, w = _pairs(n_train, 21)
    gv, av, wv = _pairs(n_val, 22)
    text = P.spurious_tokens(12, seed=23, p_spurious=0.95, p_signal=0.85)[0]
    return TrainingData(train=[g], val=[gv], neutral_train=list(text[:8]), neutral_val=list(text[8:]), metric=label_margin(a, w),
                        sha256="planted", suite={"name": "planted-spurious"}, val_metric=label_margin(av, wv))


def test_negatives_are_the_next_row_with_another_answer():
    metric = label_margin(torch.tensor([60, 60, 61, 60]), torch.tensor([61, 61, 60, 61]))
    assert _negatives(metric, torch.tensor([0, 1, 2, 3])).tolist() == [2, 2, 3, 2]
    assert _negatives(lambda logits: logits[:, -1, 0], torch.arange(3)).tolist() == [1, 2, 0]  # no answers: the next row


def test_contrastive_loss_is_task_plus_triplet_plus_consistency_by_hand():
    model = P.load_planted("spurious")
    data = planted_data(8, 4)
    g, rows = data.train[0], torch.arange(8)
    obj = Contrastive(task=1.0, triplet=0.3, margin=1.0, consistency=0.5)
    got = obj.loss(model, g, rows, data.metric)
    # by hand: final residual at the last position, logits on x and x'
    _, cache = M.run_with_cache(model, torch.cat([g.clean, g.corrupted]), ["blocks.1.hook_resid_post"])
    logits = M.run(model, torch.cat([g.clean, g.corrupted]))
    a, b = logits[:8], logits[8:]
    m = lambda x: x[:, -1].gather(-1, data.metric.answers[:, None])[:, 0] - x[:, -1].gather(-1, data.metric.wrong[:, None])[:, 0]  # noqa: E731
    task = 0.5 * (F.softplus(-m(a)).mean() + F.softplus(-m(b)).mean())
    e = cache["blocks.1.hook_resid_post"][:, -1]
    trip = F.triplet_margin_loss(e[:8], e[8:], e[:8][_negatives(data.metric, rows)], margin=1.0)
    pa, pb = a[:, -1].log_softmax(-1), b[:, -1].log_softmax(-1)
    kl = (pa.exp() * (pa - pb)).sum(-1).mean()
    assert got.item() == pytest.approx((task + 0.3 * trip + 0.5 * kl).item(), rel=1e-4)
    # x' produced by the intervention: swapping the spurious head in gives the counterfactual's own output here
    swapped = replace(obj, task=0.0, triplet=0.0, swap=(HeadRef(1, 1),)).loss(model, g, rows, data.metric)
    assert swapped.item() == pytest.approx(0.5 * kl.item(), rel=0.05)  # only L1H1 sees the spurious token


def test_weight_preservation_is_the_norm_of_alpha_BAx():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    a, b = torch.tensor([[1.0, 1.0]]), torch.tensor([[3.0], [4.0]])  # BAx = [3,4]*(x1+x2): norms 5 and 10
    got = weight_preservation({"w.lora_A": a, "w.lora_B": b}, {"w": x}, alpha=0.5)
    assert got.item() == pytest.approx(0.5 * (5 + 10) / 2)


def test_weight_and_kl_preservation_both_train_and_each_keeps_its_own_quantity_smaller():
    model = P.load_planted("spurious")
    data = planted_data(32, 16)
    cfg = TrainConfig(steps=30, eval_every=10, lr=0.05, preservation=1.0, progress=False, patience=5)
    heads = (HeadRef(1, 1), HeadRef(1, 0))
    kl_edit = low_rank_edit(model, heads, data, rank=2, objective="invariance", config=cfg)
    w_edit = low_rank_edit(model, heads, data, rank=2, objective="invariance", config=replace(cfg, preservation_kind="weights"))
    assert w_edit.hyperparameters["preservation_kind"] == "weights" and "val_weight_change_after" in w_edit.training
    for e in (kl_edit, w_edit):
        assert e.training["val_harm_after"] < e.training["val_harm_before"]
    from circuits.editing.objectives import weight_inputs

    x = weight_inputs(model, kl_edit.tensors, data.neutral_val)
    change = {k: float(weight_preservation(e.tensors, x, 1.0)) for k, e in (("kl", kl_edit), ("weights", w_edit))}
    assert change["weights"] <= change["kl"] * 1.05


def test_icp_loop_flags_the_planted_head_and_raises_decorrelated_accuracy():
    model = P.load_planted("spurious")
    data = planted_data()
    before = P.spurious_accuracy(model, decorrelated=True)
    cfg = IcpConfig(rounds=3, rate=0.125, tau=0.2, train=TrainConfig(steps=20, eval_every=10, lr=0.02, progress=False))
    result = icp_loop(model, data, all_heads(2, 4), config=cfg)
    assert result.rounds[0]["flagged"] == ["L1H1"]
    assert result.converged and result.rounds[-1]["new"] == [] and len(result.rounds) == 2
    assert result.adapter is not None and result.adapter.training["icp_round0_new"] == "L1H1"
    with result.applied(model):
        after = P.spurious_accuracy(model, decorrelated=True)
    assert before < 0.6 and after > 0.9
    assert P.spurious_accuracy(model, decorrelated=True) == before  # the model itself is unchanged

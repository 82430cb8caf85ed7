"""The ICP measurements against hand runs on the planted spurious model, and the R selector."""

import pytest
import torch

from circuits import model as M
from circuits import planted as P
from circuits.atlas.build import behaviour_from_patching, model_info
from circuits.atlas.schema import Atlas, Provenance
from circuits.editing.build import select_components
from circuits.interventions import Scale, Zero
from circuits.probing.spurious import behaviour_kl, default_interventions, icp_scores, masked_l2, reliability_grid, sss_terms
from circuits.sites import EMBED_HOOK, HeadRef, all_heads
from circuits.suites import load_suite


@pytest.fixture(scope="module")
def planted():
    model = P.load_planted("spurious")
    group, metric = P.spurious_pairs(12, seed=3)
    return model, group, metric


def _last(logits):
    return logits[:, -1].float().log_softmax(-1)


def test_sss_terms_and_ids_equal_hand_runs(planted):
    model, g, _ = planted
    head = HeadRef(1, 1)
    heads = [head, HeadRef(0, 0)]
    sc = icp_scores(model, [g], heads)
    zero, swap = sss_terms(model, [g], heads)
    l2 = masked_l2(model, [g], heads)
    name = head.hook_name
    _, clean = M.run_with_cache(model, g.clean, [name])
    mask = (g.clean != g.corrupted)[..., None].float()
    _, masked = M.run_with_cache(model, g.clean, [name], [(EMBED_HOOK, lambda e, hook: e * (1 - mask))])

    def put(src):
        def hook(z, hook):
            z = z.clone()
            z[:, :, 1] = src
            return z

        return hook

    p, p2 = _last(M.run(model, g.clean)), _last(M.run(model, g.corrupted))
    zeroed = _last(M.run(model, g.clean, [(name, put(torch.zeros_like(clean[name][:, :, 1])))]))
    swapped = _last(M.run(model, g.corrupted, [(name, put(clean[name][:, :, 1]))]))
    via_mask = _last(M.run(model, g.clean, [(name, put(masked[name][:, :, 1]))]))
    kl = lambda a, b: (a.exp() * (a - b)).sum(-1)  # noqa: E731
    torch.testing.assert_close(zero.effects[0], kl(p, zeroed), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(swap.effects[0], kl(p2, swapped), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(l2[0], (p.exp() - via_mask.exp()).norm(dim=-1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(sc.effects, zero.effects + swap.effects)
    assert sc.unit == "nats" and sc.clean_metric is None and sc.corrupted_metric is None  # nothing faked
    sss, ids, r = sc.scores["SSS"], sc.scores["IDS"], sc.scores["R"]
    assert sss[0] == pytest.approx(float((kl(p, zeroed) + kl(p2, swapped)).mean()), rel=1e-4)
    assert r[0] == pytest.approx(0.5 * float(sss[0]) + 0.5 * float(ids[0]), rel=1e-5)
    torch.testing.assert_close(behaviour_kl(model, [g]), kl(p, p2) + kl(p2, p), atol=1e-4, rtol=1e-4)
    assert ids[1] < 1e-6  # L0H0 never sees the spurious token


def test_reliability_grid_has_masking_scaling_and_swapping_and_scaling_is_partial(planted):
    model, g, metric = planted
    heads = all_heads(2, 4)
    ivs = default_interventions(0.5)
    assert list(ivs) == ["masking", "scaling(0.5)", "swapping"] and isinstance(ivs["masking"], Zero) and isinstance(ivs["scaling(0.5)"], Scale)
    with pytest.raises(ValueError):
        default_interventions(0.0)  # alpha = 0 is masking, not its own setting
    ood, _ = P.spurious_pairs(12, seed=4)
    ce, axes = reliability_grid(model, {"id": ([g], {"m": metric}), "ood": ([ood], {"m": metric})}, heads)
    assert ce.shape == (3, 1, 2, 8) and axes["dataset"] == ["id", "ood"]
    i = heads.index(HeadRef(1, 1))
    mask, scale = ce[0, 0, :, i], ce[1, 0, :, i]
    # its own measured setting: halving L1H1 is not zeroing it (here it even moves the metric more: not monotone in alpha)
    assert (scale.abs() > 0.1).all() and ((scale - mask).abs() > 0.1).all()


def test_select_components_by_r_takes_a_percentage(planted):
    model, g, metric = planted
    heads = all_heads(2, 4)
    sc = icp_scores(model, [g], heads)
    from circuits.probing.patching import patch_groups

    b = behaviour_from_patching(patch_groups(model, [g], metric, heads, progress=False), suite=load_suite("name-sentiment"), split="build",
                                metric="m", threshold=0.1, seed=0, scores=dict(sc.scores))
    atlas = Atlas(model=model_info(model), provenance=Provenance(packages={}, command="t", seeds=[0]), behaviours=[b])
    assert select_components(model, atlas, "name-sentiment", k=1, by="R") == (HeadRef(1, 1),)
    assert len(select_components(model, atlas, "name-sentiment", k=1, by="R", rate=0.5)) == 4


def test_one_pair_flags_nothing_and_select_top_takes_the_largest_effects(planted):
    """On one pair no component can pass the flag rule's test (p = 1); the error names the two ways out,
    and ``by="top"`` ranks every head by its mean effect, flagged or not."""
    from circuits.atlas.schema import AtlasError
    from circuits.probing.patching import patch_groups

    model, _, _ = planted
    one, metric = P.spurious_pairs(1, seed=3)
    heads = all_heads(2, 4)
    effects = patch_groups(model, [one], metric, heads, progress=False)
    b = behaviour_from_patching(effects, suite=load_suite("name-sentiment"), split="build", metric="m", threshold=0.1, seed=0)
    atlas = Atlas(model=model_info(model), provenance=Provenance(packages={}, command="t", seeds=[0]), behaviours=[b])
    assert not b.flagged() and all(c.effect.p_value == 1.0 and c.q_value >= 0.5 for c in b.components)  # no test on one pair
    with pytest.raises(AtlasError, match=r"scanned on 1 pair\).*select='top'"):
        select_components(model, atlas, "name-sentiment", k=2)
    top = select_components(model, atlas, "name-sentiment", k=2, by="top")
    means = {c.id: c.effect.mean for c in b.components}
    assert [str(h) for h in top] == sorted(means, key=lambda i: -means[i])[:2]

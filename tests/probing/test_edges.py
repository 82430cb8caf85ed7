"""Edges: the graph, exact edge patching (identities and a hand computation), EAP/EAP-IG against it,
faithfulness and completeness, and planted edge recovery."""

import pytest
import torch
from scipy.stats import pearsonr

from circuits import model as M
from circuits.model import UnsupportedArchitecture, tiny_model
from circuits.model.tiny import tiny_hf_model
from circuits.probing.discovery import completeness_curve, faithfulness, faithfulness_curve, minimal_circuit, resample_order, threshold_edges, top_edges
from circuits.probing.eap import edge_attribution
from circuits.probing.edge_patching import edge_patching, graph_of, run_with_edges, sender_writes
from circuits.probing.graph import INPUT, LOGITS, Edge, build_graph
from circuits.probing.patching import TokenGroup, patch_groups
from circuits.sites import HeadRef, MlpRef


def metric(logits):
    return logits[:, -1, 3] - logits[:, -1, 7]


@pytest.fixture(scope="module")
def pairs():
    g = torch.Generator().manual_seed(4)
    clean = torch.randint(1, 50, (4, 7), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2] = (clean[:, 2] + 11) % 50
    corrupted[:, 4] = (clean[:, 4] + 5) % 50
    return [TokenGroup([0, 1, 2, 3], clean, corrupted)]


@pytest.fixture(scope="module")
def native():
    return tiny_model(n_layers=2, n_heads=4, n_kv_heads=2, seed=2)


@pytest.fixture(scope="module", params=["native", "llama", "gpt2", "gpt_neox"])
def family_model(request, native):
    return native if request.param == "native" else tiny_hf_model(request.param)


def test_graph_counts_and_upstream_order():
    g = build_graph(2, 4, 2, has_mlp=True)
    # senders: INPUT, 4 heads + MLP per layer; receivers: 4 q + 2 k + 2 v + MLP per layer, LOGITS
    assert (len(g.senders), len(g.receivers)) == (11, 19)
    assert g.n_edges == 8 * 1 + 1 * 5 + 8 * 6 + 1 * 10 + 11
    assert str(Edge(HeadRef(0, 1), HeadRef(1, 2, "k"))) == "L0H1->L1H2.k"
    g.index("L0H1->L1H2.k")
    g.index("L0H3->L0MLP")
    with pytest.raises(KeyError):
        g.index("L1H0->L0MLP")  # downstream to upstream
    par = build_graph(2, 4, 4, has_mlp=True, parallel=True)
    with pytest.raises(KeyError):
        par.index("L0H3->L0MLP")  # a parallel block's MLP reads the residual its heads have not written


def test_split_inputs_leave_the_logits_unchanged(family_model, pairs):
    tokens = pairs[0].clean
    ref = M.run(family_model, tokens)
    with M.split_inputs(family_model):
        split = M.run(family_model, tokens)
    torch.testing.assert_close(split, ref, atol=1e-4, rtol=1e-4)


def test_post_norm_families_are_refused_with_the_reason():
    gemma = tiny_hf_model("gemma2")
    with pytest.raises(UnsupportedArchitecture, match="post-norm"):
        with M.split_inputs(gemma):
            pass


def test_exact_edge_patching_identities(family_model, pairs):
    """All edges patched = the clean run; none = the corrupted run; all out-edges of a node = activation patching."""
    g, grp = graph_of(family_model), pairs[0]
    idx = torch.tensor(grp.indices)
    clean_w, clean_m = sender_writes(family_model, g, grp.clean, metric, idx)
    _, corr_m = sender_writes(family_model, g, grp.corrupted, metric, idx)
    torch.testing.assert_close(clean_m, metric(M.run(family_model, grp.clean)), atol=1e-4, rtol=1e-4)
    every = run_with_edges(family_model, g, grp.corrupted, metric, idx, clean_w, g.adjacency)
    torch.testing.assert_close(every, clean_m, atol=1e-4, rtol=1e-4)
    none = run_with_edges(family_model, g, grp.corrupted, metric, idx, clean_w, torch.zeros_like(g.adjacency))
    torch.testing.assert_close(none, corr_m, atol=1e-4, rtol=1e-4)
    for node in (HeadRef(0, 1), MlpRef(0)):
        s = g.senders.index(node)
        out_edges = torch.zeros_like(g.adjacency)
        out_edges[s] = g.adjacency[s]
        patched = run_with_edges(family_model, g, grp.corrupted, metric, idx, clean_w, out_edges)
        exact = patch_groups(family_model, pairs, metric, [node], progress=False)
        torch.testing.assert_close(patched, exact.patched[0], atol=1e-4, rtol=1e-4)


def test_eap_equals_exact_on_edges_into_linear_logits(pairs):
    """No norms: the logits are linear in the final residual, so an edge into LOGITS is estimated exactly."""
    linear = tiny_model(n_layers=2, n_heads=4, n_kv_heads=2, normalization=None, attn_only=True, seed=5)
    g = graph_of(linear)
    into_logits = [e for e in g.edges() if e.receiver == LOGITS]
    exact = edge_patching(linear, pairs, metric, graph=g, edges=into_logits, progress=False)
    approx = edge_attribution(linear, pairs, metric, graph=g, progress=False)
    rows = [approx.components.index(e) for e in into_logits]
    torch.testing.assert_close(approx.effects[rows], exact.effects, atol=1e-4, rtol=1e-4)


def test_eap_approximates_exact_edge_patching(family_model, pairs):
    exact = edge_patching(family_model, pairs, metric, progress=False).mean_effects
    eap = edge_attribution(family_model, pairs, metric, progress=False).mean_effects
    ig = edge_attribution(family_model, pairs, metric, ig_steps=5, progress=False).mean_effects
    assert pearsonr(exact, eap)[0] > 0.5
    assert pearsonr(exact, ig)[0] > 0.75


def test_faithfulness_by_hand(pairs):
    """Attention-only, no norms: keep every edge except the layer-1 heads' edges into LOGITS.

    Every head then computes its clean output and LOGITS reads the clean residual with heads 1..3 of layer
    1 swapped for their corrupted writes: ``unembed(resid_clean − Σ (w_clean − w_corrupted))``.
    """
    linear = tiny_model(n_layers=2, n_heads=4, n_kv_heads=2, normalization=None, attn_only=True, seed=5)
    g, grp = graph_of(linear), pairs[0]
    idx = torch.tensor(grp.indices)
    dropped = {Edge(HeadRef(1, h), LOGITS) for h in (1, 2, 3)}
    circuit = frozenset(e for e in g.edges() if e not in dropped)
    clean_w, _ = sender_writes(linear, g, grp.clean, metric, idx)
    corr_w, _ = sender_writes(linear, g, grp.corrupted, metric, idx)
    _, cache = M.run_with_cache(linear, grp.clean, ["blocks.1.hook_resid_post"])
    cols = [g.senders.index(HeadRef(1, h)) for h in (1, 2, 3)]
    resid = cache["blocks.1.hook_resid_post"] - (clean_w[:, :, cols] - corr_w[:, :, cols]).sum(2)
    by_hand = float(metric(M.logit_lens(linear, resid)).detach().mean())
    clean, corrupted = float(metric(M.run(linear, grp.clean)).mean()), float(metric(M.run(linear, grp.corrupted)).mean())
    f = faithfulness(linear, pairs, metric, circuit)
    assert f.circuit == pytest.approx(by_hand, abs=1e-4)
    assert (f.full, f.empty) == (pytest.approx(clean, abs=1e-4), pytest.approx(corrupted, abs=1e-4))
    assert f.faithfulness == pytest.approx((by_hand - corrupted) / (clean - corrupted), abs=1e-4)
    assert f.ratio == pytest.approx(by_hand / clean, abs=1e-4)
    # completeness: with the circuit ablated, the three kept head→LOGITS edges carry what those heads compute
    # from ablated (corrupted) inputs, i.e. their corrupted writes: LOGITS reads the corrupted residual.
    assert f.complement == pytest.approx(corrupted, abs=1e-4)
    assert f.completeness == pytest.approx(1.0, abs=1e-4)
    whole = faithfulness(linear, pairs, metric, frozenset(g.edges()), ablation="mean")
    assert (whole.faithfulness, whole.completeness) == (pytest.approx(1.0), pytest.approx(1.0))
    # resample ablation: the dropped edges carry the same heads' writes on another clean prompt
    order = resample_order(grp.clean.shape[0])
    resid = cache["blocks.1.hook_resid_post"] - (clean_w[:, :, cols] - clean_w[order][:, :, cols]).sum(2)
    by_hand = float(metric(M.logit_lens(linear, resid)).detach().mean())
    r = faithfulness(linear, pairs, metric, circuit, ablation="resample")
    assert r.ablation == "resample" and r.circuit == pytest.approx(by_hand, abs=1e-4) and r.full == pytest.approx(clean, abs=1e-4)


def test_resample_order_is_a_seeded_derangement():
    for n in (2, 3, 7, 50):
        order = resample_order(n)
        assert sorted(order.tolist()) == list(range(n)) and all(order[i] != i for i in range(n))
        assert torch.equal(order, resample_order(n)) and (n < 5 or not torch.equal(order, resample_order(n, seed=1)))
    with pytest.raises(ValueError, match="at least 2 prompts"):
        resample_order(1)


def test_discovery_rules(native, pairs):
    scores = edge_attribution(native, pairs, metric, progress=False)
    top = top_edges(scores, 5)
    assert len(top) == 5 and top == frozenset(e for e, _ in scores.top(5))
    tau = sorted(scores.mean_effects.abs().tolist())[-5]
    assert threshold_edges(scores, tau) == top
    circuit, curve = minimal_circuit(native, pairs, metric, scores, target=0.8)
    assert curve[-1][0] == len(scores.components)
    assert curve[-1][1] == pytest.approx(1.0, abs=1e-4)  # every edge kept = the full model
    assert len(circuit) == next(n for n, f in curve if f >= 0.8)
    sizes = [1, 5, len(scores.components)]
    for (n, c), (m, f) in zip(completeness_curve(native, pairs, metric, scores, sizes), faithfulness_curve(native, pairs, metric, scores, sizes), strict=True):
        one = faithfulness(native, pairs, metric, top_edges(scores, n), graph=scores.graph)
        assert n == m and c == pytest.approx(one.completeness, abs=1e-5) and f == pytest.approx(one.faithfulness, abs=1e-5)
    assert c == pytest.approx(1.0, abs=1e-5)  # every edge in the circuit: nothing left outside


@pytest.fixture(scope="module")
def planted():
    from circuits.planted import induction_pairs, load_planted

    model = load_planted("induction")
    group, task_metric = induction_pairs(16, seed=3)
    return model, [group], task_metric


def _planted_subgraph(edge: Edge) -> bool:
    """By construction only INPUT, L0H1 and L1H2 carry token information (the other heads read only BOS)."""
    live = {INPUT, HeadRef(0, 1), HeadRef(1, 2)}
    receiver = edge.receiver
    reads = receiver == LOGITS or (isinstance(receiver, HeadRef) and (receiver.layer, receiver.head) in {(0, 1), (1, 2)})
    return edge.sender in live and reads


def test_planted_edges_are_recovered(planted):
    model, groups, task_metric = planted
    exact = edge_patching(model, groups, task_metric, edges_per_pass=41, progress=False)
    ig = edge_attribution(model, groups, task_metric, ig_steps=5, progress=False)
    # Edges outside the planted subgraph carry nothing: exactly zero effect and zero attribution.
    outside = [i for i, e in enumerate(exact.components) if not _planted_subgraph(e)]
    assert exact.mean_effects[outside].abs().max() < 1e-4 and ig.mean_effects[outside].abs().max() < 1e-4
    # EAP-IG ranks the same top edges as exact edge patching (recall = precision = 1 at 4).
    planted_edges = top_edges(exact, 4)
    assert all(_planted_subgraph(e) for e in planted_edges)
    assert top_edges(ig, 4) == planted_edges
    assert {str(e) for e in planted_edges} >= {"INPUT->L0H1.v", "L0H1->L1H2.v", "L1H2->LOGITS"}
    f = faithfulness(model, groups, task_metric, top_edges(ig, 6))
    assert f.faithfulness > 0.9 and f.completeness > 0.99


@pytest.mark.parametrize("receiver, slot", [(HeadRef(1, 2, "q"), 2), (HeadRef(1, 2, "k"), 1), (HeadRef(1, 0, "v"), 0)])
def test_path_patching_equals_a_hand_written_hook_version(pairs, receiver, slot):
    """Sender L0H1 → one receiver of layer 1, patched from the corrupted run into the clean run, written by hand
    with TransformerLens's own split q/k/v inputs and the Hugging Face ``o_proj`` weight (GQA: 4 query heads,
    2 key/value heads, so query head 2 reads key/value slot 1)."""
    lm = tiny_hf_model("llama")
    bridge, grp = lm.bridge, pairs[0]
    w_o = next(p for n, p in lm.core.named_parameters() if "layers.0." in n and "o_proj" in n).detach()  # [d_model, head·d_head]
    d_head = lm.shape.d_head
    with torch.no_grad():
        _, clean_cache = bridge.run_with_cache(grp.clean, names_filter="blocks.0.attn.hook_z")
        _, corr_cache = bridge.run_with_cache(grp.corrupted, names_filter="blocks.0.attn.hook_z")
        z_clean, z_corr = clean_cache["blocks.0.attn.hook_z"][:, :, 1], corr_cache["blocks.0.attn.hook_z"][:, :, 1]
        delta = (z_corr - z_clean) @ w_o[:, d_head : 2 * d_head].T  # the head's write, corrupted minus clean

        def hook(act, hook):
            act = act.clone()
            act[:, :, slot] += delta
            return act

        bridge.set_use_split_qkv_input(True)
        try:
            logits = bridge.run_with_hooks(grp.clean, fwd_hooks=[(f"blocks.1.hook_{receiver.act}_input", hook)])
        finally:
            bridge.set_use_split_qkv_input(False)
    by_hand = metric(logits).float()
    g = graph_of(lm)
    idx = torch.tensor(grp.indices)
    corr_w, clean_m = sender_writes(lm, g, grp.corrupted, metric, idx)
    ours = run_with_edges(lm, g, grp.clean, metric, idx, corr_w, g.mask([Edge(HeadRef(0, 1), receiver)]))
    torch.testing.assert_close(ours, by_hand, atol=1e-4, rtol=1e-4)
    assert (by_hand - metric(M.run(lm, grp.clean))).abs().max() > 1e-4  # the path matters: not a vacuous equality


def test_acdc_and_greedy_pruning_on_the_planted_model(planted):
    """Pruning with exact ablations keeps only planted edges, and keeps the behaviour."""
    from circuits.probing.discovery import acdc, greedy_prune

    model, groups, task_metric = planted
    found = acdc(model, groups, task_metric, tau=0.02)
    assert found.edges and all(_planted_subgraph(e) for e in found.edges)
    assert {"INPUT->L0H1.v", "L0H1->L1H2.v", "L1H2->LOGITS"} <= {str(e) for e in found.edges}
    assert found.faithfulness > 0.9 and found.tried + found.skipped > 0 and found.method == "acdc"
    assert found.faithfulness == pytest.approx(faithfulness(model, groups, task_metric, found.edges).faithfulness, abs=1e-5)
    ig = edge_attribution(model, groups, task_metric, ig_steps=5, progress=False)
    start = top_edges(ig, 12)
    greedy = greedy_prune(model, groups, task_metric, ig, target=0.8, start=start)
    assert greedy.edges <= start and len(greedy.edges) < len(start) and greedy.faithfulness >= 0.8
    assert all(_planted_subgraph(e) for e in greedy.edges)


def test_acdc_thresholds_by_hand(native, pairs):
    """tau = 0 keeps every edge whose removal lowers the metric (faithfulness ≥ 1); a huge tau removes everything."""
    from circuits.probing.discovery import acdc

    strict = acdc(native, pairs, metric, tau=0.0)
    assert strict.faithfulness >= 1 - 1e-5
    loose = acdc(native, pairs, metric, tau=1e9)
    assert loose.edges == frozenset() and loose.faithfulness == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="tau"):
        acdc(native, pairs, metric, tau=-1.0)


@pytest.mark.parametrize("family, component", [("llama", "q"), ("gpt2", "k"), ("gpt2", "v")])
def test_path_patching_equals_transformer_lens_direct_path_patching(pairs, family, component):
    """TransformerLens 4.3's ``get_act_patch_direct_path`` (clean write of L0H1 into one later head's q/k/v input of
    the corrupted run) equals our single-edge patch, for every later head (TL refuses k/v under GQA, so k/v on GPT-2)."""
    from transformer_lens.patching import get_act_patch_direct_path

    lm = tiny_hf_model(family)
    bridge, grp = lm.bridge, pairs[0]
    with torch.no_grad():
        _, clean_cache = bridge.run_with_cache(grp.clean, names_filter="blocks.0.attn.hook_z")
        _, corr_cache = bridge.run_with_cache(grp.corrupted, names_filter="blocks.0.attn.hook_z")
        theirs = get_act_patch_direct_path(bridge, grp.corrupted, clean_cache, corr_cache, lambda logits: metric(logits).mean(),
                                           src_layer=0, src_head=1, component=component, verbose=False)
    g = graph_of(lm)
    idx = torch.tensor(grp.indices)
    clean_w, _ = sender_writes(lm, g, grp.clean, metric, idx)
    for head in range(lm.shape.n_heads):
        edge = Edge(HeadRef(0, 1), HeadRef(1, head, component))
        ours = run_with_edges(lm, g, grp.corrupted, metric, idx, clean_w, g.mask([edge])).mean()
        assert float(ours) == pytest.approx(float(theirs[1, head]), abs=1e-4), edge
    assert theirs[1].std() > 1e-5  # the heads differ: not a vacuous equality

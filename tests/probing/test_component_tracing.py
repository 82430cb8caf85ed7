"""Head/neuron noise-restoration tracing (seed 004): hand runs, the planted harmful head, the atlas and the selector."""

import pytest
import torch

from circuits import model as M
from circuits import planted as P
from circuits.atlas.build import behaviour_from_patching, model_info, record_tracing
from circuits.atlas.schema import Atlas, Provenance
from circuits.editing.build import select_components
from circuits.interventions import rome_noise_std
from circuits.metrics import TokenSetLogProb
from circuits.probing.component_tracing import trace_components, traced_flags
from circuits.probing.patching import patch_groups
from circuits.sites import EMBED_HOOK, HeadRef, NeuronRef, all_heads
from circuits.suites import load_suite


@pytest.fixture(scope="module")
def harmful():
    model = P.load_planted("harmful")
    group, metric = P.harmful_pairs(8, seed=3)
    return model, group, metric


def test_token_set_logprob_is_the_log_of_the_summed_probability():
    logits = torch.log(torch.tensor([[[0.5, 0.2, 0.3]]]))
    assert TokenSetLogProb((1, 2))(logits).item() == pytest.approx(torch.log(torch.tensor(0.5)).item())


def test_one_restoration_equals_a_hand_run(harmful):
    model, group, _ = harmful
    std = rome_noise_std(M.embedding_matrix(model), 30.0)
    head = HeadRef(1, 3)
    tr = trace_components(model, [group], [P.HARM], [head], seeds=(5,), n_samples=2, noise_std=std, positions="all")
    # by hand: the same noise draws on the subject (trigger) embeddings, then L1H3's z restored everywhere
    b, pos = group.clean.shape
    gen = torch.Generator().manual_seed(5 * 1_000_003)
    noise = std * torch.randn(2 * b, pos, model.shape.d_model, generator=gen) * (group.clean != group.corrupted).repeat(2, 1)[..., None]
    _, clean = M.run_with_cache(model, group.clean, [head.hook_name])
    add = lambda e, hook: e + noise  # noqa: E731

    def restore(z, hook):
        z = z.clone()
        z[:, :, 3] = clean[head.hook_name].repeat(2, 1, 1, 1)[:, :, 3]
        return z

    metric = TokenSetLogProb((P.HARM,))
    noised = metric(M.run(model, group.clean.repeat(2, 1), [(EMBED_HOOK, add)])).view(2, b)
    restored = metric(M.run(model, group.clean.repeat(2, 1), [(EMBED_HOOK, add), (head.hook_name, restore)])).view(2, b)
    torch.testing.assert_close(tr.per_seed[0, 0], (restored - noised).mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tr.corrupted_metric, noised.mean(0), atol=1e-5, rtol=1e-5)


def test_tracing_flags_exactly_the_planted_harmful_head_and_feeds_the_atlas_and_the_selector(harmful):
    model, group, metric = harmful
    heads = all_heads(2, 4)
    std = rome_noise_std(M.embedding_matrix(model), 30.0)  # the planted model shrugs off ROME's 3 sigma
    tr = trace_components(model, [group], [P.HARM], heads, n_samples=4, noise_std=std, positions="all")
    assert [str(h) for h, f in zip(heads, traced_flags(tr, 0.05)) if f] == ["L1H3"]
    at_subject = trace_components(model, [group], [P.HARM], heads, n_samples=2, noise_std=std)
    assert not any(traced_flags(at_subject, 0.05))  # the head reads the trigger from the last position, not at it

    effects = patch_groups(model, [group], metric, heads, progress=False)
    b = behaviour_from_patching(effects, suite=load_suite("toxicity"), split="build", metric="logit(HARM)", threshold=0.1, seed=0)
    atlas = Atlas(model=model_info(model), provenance=Provenance(packages={}, command="test", seeds=[0]), behaviours=[b])
    atlas = record_tracing(atlas, "toxicity", tr, tau=0.05)
    entry = {c.id: c for c in atlas.behaviours[0].components}
    assert entry["L1H3"].traced and not entry["L0H0"].traced
    assert "causal_tracing/noise/denoising" in entry["L1H3"].effects and atlas.behaviours[0].summary["trace_tau"] == 0.05
    assert Atlas.parse(atlas.model_dump_json()) == atlas  # validates (3 noise seeds recorded)
    assert select_components(model, atlas, "toxicity", k=3, by="tracing") == (HeadRef(1, 3),)


def test_neurons_trace_and_restoring_every_neuron_of_the_last_layer_everywhere_recovers_the_clean_run():
    model = M.tiny_model(n_layers=1, seed=2)
    clean = torch.randint(1, 50, (3, 6), generator=torch.Generator().manual_seed(0))
    corrupted = clean.clone()
    corrupted[:, 2] = (clean[:, 2] + 1) % 50
    from circuits.probing.patching import TokenGroup

    neurons = [NeuronRef(0, n) for n in range(4)]
    tr = trace_components(model, [TokenGroup([0, 1, 2], clean, corrupted)], [7, 9], neurons, n_samples=2, positions="all")
    assert tr.per_seed.shape == (3, 4, 3) and torch.isfinite(tr.per_seed).all()
    assert tr.clean_metric.shape == (3,) and (tr.corrupted_metric != tr.clean_metric).any()

import pytest
from hypothesis import given
from hypothesis import strategies as st

from circuits.sites import HeadRef, MlpRef, NeuronRef, ResidRef, all_heads, hook_name, kv_head_of, parse_component


def test_string_forms_match_papers():
    assert str(HeadRef(9, 6)) == "L9H6"
    assert str(NeuronRef(5, 1024)) == "L5N1024"
    assert str(MlpRef(7)) == "L7MLP"
    assert str(ResidRef(3, 4)) == "L3RESID@4"


@given(st.integers(0, 99), st.integers(0, 4095), st.sampled_from([HeadRef, NeuronRef, ResidRef]))
def test_parse_round_trips(layer, idx, cls):
    c = cls(layer, idx)
    assert parse_component(str(c)) == c


def test_parse_rejects_garbage():
    with pytest.raises(ValueError, match="not a component id"):
        parse_component("L9X6")


def test_hook_names_are_transformer_lens_names():
    assert HeadRef(9, 6).hook_name == "blocks.9.attn.hook_z"
    assert NeuronRef(5, 1).hook_name == "blocks.5.mlp.hook_post"
    assert MlpRef(2).hook_name == "blocks.2.hook_mlp_out"
    assert hook_name("resid_pre", 0) == "blocks.0.hook_resid_pre"
    with pytest.raises(ValueError):
        hook_name("nope", 0)


def test_all_heads_is_layer_major():
    assert [str(h) for h in all_heads(2, 2)] == ["L0H0", "L0H1", "L1H0", "L1H1"]


def test_gqa_grouping_smollm2_shape():
    # SmolLM2: 9 query heads share 3 key/value heads, contiguously.
    assert [kv_head_of(h, 9, 3) for h in range(9)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError):
        kv_head_of(0, 9, 2)


def test_hook_names_exist_on_a_bridge(tiny):
    for c in [HeadRef(1, 3), NeuronRef(0, 5), MlpRef(1), ResidRef(0, 2)]:
        assert c.hook_name in tiny.bridge.hook_dict


def test_site_set_constructors():
    from circuits.sites import all_neurons, resid_grid

    assert [str(n) for n in all_neurons([1], 2)] == ["L1N0", "L1N1"]
    assert [str(r) for r in resid_grid(1, 2, "resid_post")] == ["L0RESID_POST@0", "L0RESID_POST@1"]

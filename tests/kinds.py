"""One hand-made edit of every kind and preset, sized to any model (shared by the edit-kind and family tests)."""

from __future__ import annotations

import torch

from circuits import model as M
from circuits.editing import Edit
from circuits.sites import AttnRef, HeadRef, MlpRef, NeuronRef, ResidRef

HEADS = (HeadRef(1, 2), HeadRef(0, 1))
NEURONS = (NeuronRef(0, 5), NeuronRef(1, 17))
AIFS_HEADS = (HeadRef(1, 0), HeadRef(1, 2))  # an AIFS site: heads of one layer


def rand(*shape: int | tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def make(model: M.HookedLM, kind: str, tensors: dict, components: tuple = HEADS, *, form: str | None = None, objective: str | None = None, **hp: object) -> Edit:
    return Edit(
        kind=kind, components=components, tensors=tensors, model_name=model.name, model_fingerprint=M.fingerprint(model),
        hyperparameters=hp, form=form, objective=objective,  # type: ignore[arg-type]
    )


def lora(model: M.HookedLM, name: str, rank: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    w = M.read_weight(model, name)
    assert w is not None
    return {f"{name}.lora_A": rand(rank, w.shape[1], seed=seed), f"{name}.lora_B": rand(w.shape[0], rank, seed=seed + 1) * 0.3}


def delta(model: M.HookedLM, name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    w = M.read_weight(model, name)
    assert w is not None
    return {f"{name}.delta": rand(*w.shape, seed=seed) * 0.3}


def all_kinds(model: M.HookedLM) -> dict[str, Edit]:
    """One edit of every kind, and of every preset of :data:`circuits.editing.recipes.PRESETS` (keyed by its
    name), sized to the model's shape (trained kinds: random tensors)."""
    s = model.shape
    r = rand(s.d_model, seed=4)
    mlp = (MlpRef(0),)
    both = (AttnRef(0), MlpRef(0), AttnRef(1), MlpRef(1))
    dense = make(model, "weight_delta", {**delta(model, "blocks.1.attn.o.weight", seed=11), **delta(model, "blocks.0.mlp.out.weight", seed=12)}, components=both)
    return {
        "ablation": make(model, "ablation", {str(h): rand(s.d_head, seed=i) for i, h in enumerate(HEADS)}, mode="mean"),
        "pruning": make(model, "ablation", {str(n): rand((), seed=i) for i, n in enumerate(NEURONS)}, components=NEURONS, form="weights", mode="mean"),
        "scaling": make(model, "scaling", {}, alpha=0.3),
        "steering": make(model, "steering", {"vector": rand(s.d_model, seed=5)}, components=(ResidRef(1, None),), coefficient=-2.0),
        "offset": make(model, "offset", {str(h): rand(s.d_head, seed=i + 7) for i, h in enumerate(HEADS)}),
        "directional_ablation": make(model, "directional_ablation", {"direction": r / r.norm()}, components=(ResidRef(1, None),)),
        "orthogonalization": make(model, "directional_ablation", {"direction": r / r.norm()}, components=(ResidRef(1, None),), form="weights"),
        "low_rank": make(model, "low_rank", lora(model, "blocks.1.attn.o.weight"), rank=2, alpha=0.5),
        "invariance": make(model, "low_rank", lora(model, "blocks.0.mlp.out.weight", seed=3), components=mlp, objective="invariance", rank=2, alpha=1.0),
        "neuron_repair": make(
            model, "neuron_repair", {str(n): torch.tensor(0.25 * (i + 1)) for i, n in enumerate(NEURONS)}, components=NEURONS
        ),
        "care": make(model, "neuron_repair", {str(n): torch.tensor(0.5 - 0.25 * i) for i, n in enumerate(NEURONS)}, components=NEURONS, objective="care"),
        "aifs": make(
            model, "aifs", {"gate": rand(2 * s.d_head, seed=8).abs(), "shift": rand(2 * s.d_head, seed=9) * 0.3, "mask": rand(2 * s.d_head, seed=10).sigmoid()},
            components=AIFS_HEADS, lam=0.5,
        ),
        # the unrestricted baselines (circuits.editing.baselines), on weights every family has separately
        "lora_all": make(
            model, "low_rank", {**lora(model, "blocks.0.attn.o.weight", seed=13), **lora(model, "blocks.1.mlp.out.weight", seed=15)},
            components=both, rank=2, alpha=1.0, baseline="lora_all",
        ),
        "full_ft": dense,
        "weight_delta": dense,
    }

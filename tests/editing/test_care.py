"""CARE repair (seed 003) on a model with a planted neuron: PSO finds it and switches it off, keeping
accuracy; NSGA-III gives an accuracy-vs-fairness front; ACE before/after is recorded; the edit saves."""

from __future__ import annotations

import numpy as np
import torch

from circuits import model as M
from circuits.editing import load_edit, save_edit
from circuits.editing.aifs import LabelledBatch
from circuits.editing.care import CareConfig, care_repair
from circuits.metrics import LogitDiff
from circuits.sites import NeuronRef
from tests.probing.test_ace import (
    NEUT,
    PLANTED,
    A,
    B,
    planted_neuron_model,
    trigger_pairs,
)


def test_care_repairs_the_planted_neuron_and_keeps_accuracy(tmp_path):
    model = planted_neuron_model()
    toks = torch.randint(0, 30, (24, 6), generator=torch.Generator().manual_seed(5))
    toks[:, -1] = NEUT  # prompts the planted neuron does not read: capability it must keep
    labels = M.run(model, toks)[:, -1, [A, B]].argmax(-1)  # the unrepaired model's own labels: accuracy 1
    candidates = [NeuronRef(1, i) for i in range(16)]
    cfg = CareConfig(k=3, pop_size=10, generations=10, progress=False)
    result = care_repair(model, [trigger_pairs()], LogitDiff(A, B), candidates, [LabelledBatch(toks, labels)], [A, B], config=cfg)
    edit, ev = result.edit, result.edit.evaluation
    assert edit.kind == "neuron_repair" and edit.components[0] == PLANTED
    assert float(edit.tensors[str(PLANTED)]) < 0.3
    # measured: unfairness 5.67 → 1.16, accuracy 1.0 → 0.79 (switching L1N7 off flips borderline NEUT prompts;
    # the NSGA-III front holds the trade-off, e.g. (5.64, 0.00) … (1.17, 0.21)), ACE of L1N7 5.93 → 0.71
    assert ev["unfairness_after"] < 0.4 * ev["unfairness_before"] and ev["accuracy_after"] >= 0.75
    assert abs(ev[f"ace_after.{PLANTED}"]) < 0.3 * abs(ev[f"ace_before.{PLANTED}"])
    assert ev["front_size"] == result.front.shape[0] >= 1 and result.front_scales.shape[1] == 3
    assert np.all(np.diff(result.front[np.argsort(result.front[:, 0]), 1]) <= 1e-9)  # non-dominated: less unfair ⇒ not more accurate
    loaded = load_edit(save_edit(edit, tmp_path / "care.json"))
    assert loaded.evaluation == ev and loaded.hyperparameters["optimiser"] == "pso"

"""Seeds 002 (AIFS) and 003 (CARE) on SmolLM2-135M, name-sentiment suite, small sizes (1 thread, ≤ 8 min).

Calls the library's AIFS and CARE (:func:`circuits.editing.aifs.aifs_edit`,
:func:`circuits.editing.care.care_repair`) with this experiment's own data: the suite's pairs carry one
answer, so prompts are labelled by their template's sentiment (below), and CARE's candidates come from an
observational screen of one layer. The atlas-driven recipes (``circuits edit --kind aifs``, ``--preset
care``; :func:`circuits.editing.aifs.aifs_from_atlas`, :func:`circuits.editing.care.care_edit`) label
prompts by their pair's answer and screen the flagged MLP layers by attribution instead.

Writes ``atlas/smollm2-135m/seeds/aifs_care.json``: AIFS worst-group accuracy / ROC-AUC before and after
and its inference overhead; CARE's ACE before/after, unfairness and accuracy before/after and the size
of its accuracy-vs-fairness front; each next to the seed's stated target (quoted).

Training prompts: the suite's build split (4 templates × 6 clean + 6 corrupted names), labelled by the
template's sentiment (written below; the suite stores none). Worst-group measures: the shipped review
classification task (held out: its reviews and names are not in the build split), 5 names per group,
groups = name group (A: Arabic/Hispanic/Chinese names, B: Anglo names) × true label for accuracy and
name group for ROC-AUC.

    python scripts/seeds_aifs_care.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "atlas/smollm2-135m/seeds/aifs_care.json"
#: Sentiment of the build templates (0 = " positive", 1 = " negative"), by a word each contains.
BUILD_LABELS = {
    "clean and quiet": 0, "smelled of smoke": 1, "lasts all day": 0, "cracked on the first day": 1, "early and well packed": 0,
    "late and damaged": 1, "very happy with the haircut": 0, "far too short": 1, "works perfectly": 0, "leaked and stopped": 1,
}
N_PAIRS = 40  # every k-th build pair (the build split has 260)
AIFS_LAYER, CARE_LAYER, N_CANDIDATES, NAMES_PER_GROUP = 23, 29, 24, 5
TARGETS = {
    "aifs": {
        "worst_group_accuracy": "We hypothesize >2% absolute improvement in worst-group accuracy compared to ElRep and ULE. (seed 002, Expected Outcomes 1)",
        "overhead": "AIFS achieves a manageable computational overhead (estimated <15% increase) compared to base models. (seed 002, Broader Impacts)",
    },
    "care": {
        "trade_off": "Validate trade-offs between repair effectiveness and accuracy preservation (seed 003, Critical path 5); "
        "failure signature: 'Repair improves targeted metric (e.g., fairness) but accuracy drops >5%: indicates over-correction'",
        "ace": "measure ACE before/after and track accuracy-fairness trade-offs (seed 003, First 3 experiments 1)",
    },
}


def group_measures(model, task, label_ids) -> dict[str, float]:
    from circuits.evaluation.metrics import label_logits, worst_group_accuracy, worst_group_roc_auc

    names = {g: task.groups[g][:NAMES_PER_GROUP] for g in ("A", "B")}
    prompts, labels, group = [], [], []
    for r in task.items:
        for g, ns in names.items():
            for n in ns:
                prompts.append(r.template.replace(task.slot, n))
                labels.append(r.label == "positive")
                group.append(g == "A")
    logits = label_logits(model, prompts, label_ids)
    score = (logits[:, 0] - logits[:, 1]).numpy()
    y, g = np.array(labels), np.array(group)
    return {"accuracy": float(((score > 0) == y).mean()), "worst_group_accuracy": worst_group_accuracy(score > 0, y, g),
            "worst_group_roc_auc": worst_group_roc_auc(score, y, g)}


def main() -> None:
    torch.set_num_threads(1)
    from benchmarks.aifs_overhead import overhead
    from circuits import data as D
    from circuits import model as M
    from circuits.editing import apply_edit, save_edit
    from circuits.editing.aifs import AIFSConfig, aifs_edit, labelled_batches, spread_pairs
    from circuits.editing.build import suite_record
    from circuits.editing.care import CareConfig, care_repair
    from circuits.probing.pairs import prepare
    from circuits.sites import NeuronRef, ResidRef
    from circuits.suites import load_suite

    t0 = time.perf_counter()
    model = M.load_model("smollm2-135m")
    suite, task = load_suite("name-sentiment"), D.classification_task()
    label_ids = [M.single_token_id(model, task.labels["positive"]), M.single_token_id(model, task.labels["negative"])]
    pairs = spread_pairs(suite.pairs("build"), N_PAIRS)
    label_of = lambda text: next(y for k, y in BUILD_LABELS.items() if k in text)  # noqa: E731
    prompts = [p.clean for p in pairs] + [p.corrupted for p in pairs]
    batches = labelled_batches(model, prompts, [label_of(t) for t in prompts])
    record = suite_record(suite, "build", pairs)
    out: dict = {"model": M.model_name(model), "fingerprint": M.fingerprint(model), "suite": record, "targets": TARGETS}

    # AIFS: gate on the residual stream entering layer 23, seed defaults, 2 epochs.
    before = group_measures(model, task, label_ids)
    cfg = AIFSConfig(epochs=2, batch_size=16, ig_steps=4, progress=False)
    ta = time.perf_counter()
    edit = aifs_edit(model, (ResidRef(AIFS_LAYER, None),), batches, label_ids, config=cfg, suite=record)
    train_s = time.perf_counter() - ta
    with apply_edit(model, edit):
        after = group_measures(model, task, label_ids)
    ovh = overhead(model, edit, batches[0].tokens, repeats=5)
    save_edit(edit, OUT.parent / "name-sentiment.aifs.json")
    out["aifs"] = {"site": f"L{AIFS_LAYER}RESID", "config": {k: v for k, v in cfg.__dict__.items()}, "before": before, "after": after,
                   "worst_group_accuracy_change": after["worst_group_accuracy"] - before["worst_group_accuracy"],
                   # The seed's target is relative to ElRep and ULE, which are not run here: not decidable.
                   "target_met_worst_group": None,
                   "gain_over_unedited_above_2_points": after["worst_group_accuracy"] - before["worst_group_accuracy"] > 0.02,
                   "overhead": ovh, "target_met_overhead": ovh["ratio"] < 1.15, "train_seconds": round(train_s, 1),
                   "training": edit.training, "comparison_note": "no ElRep/ULE baselines are run: the change is against the unedited model"}

    # CARE: candidates = the 24 neurons of L29 whose mean last-position activation differs most between
    # clean and corrupted names (an observational screen); ranked by interventional ACE; PSO + NSGA-III.
    groups = prepare(model, pairs, suite.metric)
    name = NeuronRef(CARE_LAYER, 0).hook_name
    diff = sum((M.run_with_cache(model, g.clean, [name])[1][name][:, -1] - M.run_with_cache(model, g.corrupted, [name])[1][name][:, -1]).abs().sum(0)
               for g in groups.groups)
    candidates = [NeuronRef(CARE_LAYER, int(i)) for i in diff.argsort(descending=True)[:N_CANDIDATES]]
    tc = time.perf_counter()
    care = care_repair(model, groups.groups, groups.metric, candidates, batches, label_ids,
                       config=CareConfig(k=4, pop_size=10, generations=5, n_values=3, progress=False), suite=record)
    with apply_edit(model, care.edit):
        care_eval = group_measures(model, task, label_ids)
    save_edit(care.edit, OUT.parent / "name-sentiment.care.json")
    ev = care.edit.evaluation
    out["care"] = {"candidates": [str(c) for c in candidates], "repaired": {str(c): float(care.edit.tensors[str(c)]) for c in care.edit.components},
                   "build": ev, "front": [{"unfairness": float(u), "error": float(e)} for u, e in care.front],
                   "held_out_before": before, "held_out_after": care_eval, "seconds": round(time.perf_counter() - tc, 1),
                   "accuracy_drop_over_5pct": ev["accuracy_before"] - ev["accuracy_after"] > 0.05}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("aifs", "care", "seconds")}, indent=1)[:4000])


if __name__ == "__main__":
    main()

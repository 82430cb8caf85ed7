"""Train the planted models and write their weights as package data.

    python -m circuits.planted.train

Adam, seeded, on CPU; each task takes about a minute on 2 cores.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save as st_save

from circuits import model as M
from circuits.io import atomic_write_bytes, atomic_write_text
from circuits.model import HookedLM
from circuits.planted import (
    LABELS,
    SEQ,
    TaskName,
    harmful_rates,
    harmful_tokens,
    induction_tokens,
    new_model,
    spurious_accuracy,
    spurious_tokens,
)

DATA = Path(__file__).parent / "data"


def _loss(model: HookedLM, task: TaskName, step: int) -> torch.Tensor:
    if task == "induction":
        toks, lengths = induction_tokens(64, seed=step)
        logits = model(toks)
        # second-copy positions (after its first token) predicting the next copied token
        mask = torch.zeros(toks.shape, dtype=torch.bool)
        for b, length in enumerate(lengths.tolist()):
            mask[b, SEQ - length : SEQ - 1] = True
        return F.cross_entropy(logits[mask], toks[:, 1:][mask[:, :-1]])
    if task == "harmful":
        toks, targets, _ = harmful_tokens(64, seed=step)
        return F.cross_entropy(model(toks)[:, -1], targets)
    toks, labels = spurious_tokens(64, seed=step, p_spurious=0.95, p_signal=0.85)
    # Full-vocabulary cross-entropy: the label token must be the model's next-token prediction, so
    # probability-based probes (causal tracing) read a meaningful target probability.
    return F.cross_entropy(model(toks)[:, -1], torch.tensor(LABELS)[labels])


def train(task: TaskName, *, steps: int, lr: float = 3e-3, seed: int = 0) -> dict[str, Any]:
    """Train one task's model and save it under ``circuits/planted/data``."""
    torch.manual_seed(seed)
    model = new_model(task, seed=seed)
    params = [p for p in M.weight_parameters(model)]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    t0 = time.perf_counter()
    with torch.enable_grad():
        for step in range(steps):
            loss = _loss(model, task, step + 1_000_000 * seed)
            opt.zero_grad()
            loss.backward()
            opt.step()
    record: dict[str, Any] = {"task": task, "steps": steps, "lr": lr, "seed": seed, "final_loss": loss.item(), "seconds": round(time.perf_counter() - t0, 1)}
    if task == "spurious":
        record["accuracy_train_distribution"] = spurious_accuracy(model, decorrelated=False)
        record["accuracy_decorrelated"] = spurious_accuracy(model, decorrelated=True)
    if task == "harmful":
        record["harm_rate_triggered"], record["label_accuracy_triggered"] = harmful_rates(model)
    atomic_write_bytes(DATA / f"{task}.safetensors", st_save(M.weights_state(model)))
    atomic_write_text(DATA / f"{task}.json", json.dumps(record, indent=2) + "\n")
    return record


def main() -> None:
    DATA.mkdir(exist_ok=True)
    tasks = sys.argv[1:] or ["induction", "spurious", "harmful"]
    steps = {"induction": 1200, "spurious": 600, "harmful": 600}
    for task in tasks:
        print(train(task, steps=steps[task]))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()

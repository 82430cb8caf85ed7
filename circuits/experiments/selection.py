"""Choices an experiment makes on build data before it builds an edit (never on evaluation data)."""

from __future__ import annotations

from collections.abc import Sequence

from circuits import model as M
from circuits.data import english_sample
from circuits.editing import EditError, apply_edit
from circuits.editing.build import direction_edit
from circuits.editing.kinds import Form
from circuits.evaluation.run import neutral_kl, suite_harm
from circuits.model import HookedLM
from circuits.probing.pairs import tokenize_pairs
from circuits.suites import Suite


def choose_direction_layer(
    model: HookedLM,
    suite: Suite,
    layers: Sequence[int],
    *,
    form: Form = "hooks",
    kl_budget: float = 0.1,
) -> tuple[int, list[dict[str, float]]]:
    """Pick the residual layer for a direction edit on the *build* split (never on evaluation data).

    For each candidate layer: build the difference-in-means direction edit (Arditi et al. 2024), measure
    the suite's harm on the build split (signed bias gap; absolute for spurious suites) and the KL to
    the unedited model on the build text (:func:`circuits.data.english_sample`, nats/token). The chosen
    layer has the lowest harm among layers within ``kl_budget``; if none is, the lowest ``harm + KL``.

    Args:
        model: The model.
        suite: The behaviour's suite.
        layers: Candidate layers.
        form: The direction edit's form (``"weights"``: orthogonalization; the same function).
        kl_budget: Largest acceptable KL on the build text.

    Returns:
        ``(layer, sweep)``: the chosen layer and one ``{"layer", "harm", "kl"}`` row per candidate.

    Raises:
        EditError: No candidate layers.
    """
    if not layers:
        raise EditError("need candidate layers for the direction edit")
    windows = M.text_windows(model, english_sample(), window=128)
    groups = tokenize_pairs(model, suite.pairs("build"))
    sweep = []
    for layer in layers:
        edit = direction_edit(model, groups, layer=layer, form=form)
        # The edit was just built from this model: no need to hash its weights again per layer.
        with apply_edit(model, edit, check_fingerprint=False):
            harm = float(suite_harm(model, suite, "build").mean())
        sweep.append({"layer": float(layer), "harm": harm, "kl": float(neutral_kl(model, [edit], windows, check_fingerprint=False).mean())})
    ok = [r for r in sweep if r["kl"] <= kl_budget]
    best = min(ok, key=lambda r: r["harm"]) if ok else min(sweep, key=lambda r: r["harm"] + r["kl"])
    return int(best["layer"]), sweep

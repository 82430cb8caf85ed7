"""circuit-atlas: find where a language model does something harmful or spurious, and fix that part.

The public surface is this module (``import circuits``); it covers the workflow in the field's terms::

    import circuits

    lm = circuits.load("smollm2-135m")                     # a hooked model (TransformerLens bridge + HF twin)
    suite = circuits.suite("gender-occupation")            # counterfactual prompt pairs (clean vs corrupted)
    atlas = circuits.scan(lm, suite, max_pairs=1)          # activation patching of every head and MLP
    edit = circuits.build_edit(lm, atlas, suite, circuits.recipe("ablation", k=3, select="top"))
    with circuits.edited(lm, edit):                        # hooks on, removed on exit
        print(circuits.generate(lm, "The nurse said that", max_new_tokens=8))

Pipeline (the subpackages, for everything beyond this surface): :mod:`circuits.model` (the one adapter to
TransformerLens / Hugging Face) → :mod:`circuits.sites` (components such as ``L9H6``) →
:mod:`circuits.interventions` and :mod:`circuits.metrics` → :mod:`circuits.probing` (activation patching,
causal tracing, attribution patching, EAP-IG) → :mod:`circuits.atlas` (the versioned record) →
:mod:`circuits.editing` (edits as data) → :mod:`circuits.evaluation` (harm vs capability) →
:mod:`circuits.cli`.

Names are resolved on first use (PEP 562), so ``import circuits`` and the CLI start without loading
torch until a name is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name → (module, attribute). One entry per name; ``__all__`` is its keys.
_EXPORTS: dict[str, tuple[str, str]] = {
    # models
    "load": ("circuits.model", "load_model"),
    "HookedLM": ("circuits.model", "HookedLM"),
    "generate": ("circuits.model", "generate"),
    "run_with_cache": ("circuits.model", "run_with_cache"),
    # components and behaviours
    "HeadRef": ("circuits.sites", "HeadRef"),
    "MlpRef": ("circuits.sites", "MlpRef"),
    "NeuronRef": ("circuits.sites", "NeuronRef"),
    "ResidRef": ("circuits.sites", "ResidRef"),
    "parse_component": ("circuits.sites", "parse_component"),
    "suite": ("circuits.suites", "load_suite"),
    "Suite": ("circuits.suites", "Suite"),
    "PromptPair": ("circuits.suites", "PromptPair"),
    "Metric": ("circuits.metrics", "Metric"),
    "MetricInfo": ("circuits.metrics", "MetricInfo"),
    "as_metric": ("circuits.metrics", "as_metric"),
    # probing
    "activation_patching": ("circuits.probing.patching", "activation_patching"),
    "attribution_patching": ("circuits.probing.attribution", "attribution_patching"),
    "edge_attribution": ("circuits.probing.eap", "edge_attribution"),
    "trace": ("circuits.probing.causal_tracing", "causal_trace"),
    "Effects": ("circuits.probing.effects", "Effects"),
    # the atlas
    "scan": ("circuits.atlas.build", "scan"),
    "find_circuit": ("circuits.atlas.circuit", "find_circuit"),
    "Atlas": ("circuits.atlas", "Atlas"),
    "report": ("circuits.atlas.report", "write_report"),
    # edits
    "recipe": ("circuits.editing.recipes", "recipe"),
    "build_edit": ("circuits.editing.recipes", "build_edit"),
    "Edit": ("circuits.editing.edit", "Edit"),
    "save_edit": ("circuits.editing.edit", "save_edit"),
    "load_edit": ("circuits.editing.edit", "load_edit"),
    "apply_edit": ("circuits.editing.apply", "apply_edit"),
    "edited": ("circuits.editing.apply", "edited"),
    "export": ("circuits.editing.export", "export_hf"),
    # evaluation
    "evaluate": ("circuits.evaluation.run", "evaluate"),
    "measure": ("circuits.evaluation.run", "measure"),
    "EvalReport": ("circuits.evaluation.report", "EvalReport"),
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'circuits' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what static checkers and IDEs see; the same names as _EXPORTS
    from circuits.atlas import Atlas  # noqa: F401
    from circuits.atlas.build import scan  # noqa: F401
    from circuits.atlas.circuit import find_circuit  # noqa: F401
    from circuits.atlas.report import write_report as report  # noqa: F401
    from circuits.editing.apply import apply_edit, edited  # noqa: F401
    from circuits.editing.edit import Edit, load_edit, save_edit  # noqa: F401
    from circuits.editing.export import export_hf as export  # noqa: F401
    from circuits.editing.recipes import build_edit, recipe  # noqa: F401
    from circuits.evaluation.report import EvalReport  # noqa: F401
    from circuits.evaluation.run import evaluate, measure  # noqa: F401
    from circuits.metrics import Metric, MetricInfo, as_metric  # noqa: F401
    from circuits.model import HookedLM, generate, run_with_cache  # noqa: F401
    from circuits.model import load_model as load  # noqa: F401
    from circuits.probing.attribution import attribution_patching  # noqa: F401
    from circuits.probing.causal_tracing import causal_trace as trace  # noqa: F401
    from circuits.probing.eap import edge_attribution  # noqa: F401
    from circuits.probing.effects import Effects  # noqa: F401
    from circuits.probing.patching import activation_patching  # noqa: F401
    from circuits.sites import HeadRef, MlpRef, NeuronRef, ResidRef, parse_component  # noqa: F401
    from circuits.suites import PromptPair, Suite  # noqa: F401
    from circuits.suites import load_suite as suite  # noqa: F401

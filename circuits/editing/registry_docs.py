"""Documentation generated from the edit registry: ``circuits edit --help`` and ``docs/edit_kinds.md``."""

from __future__ import annotations

from typing import Any

from circuits.editing.kinds import KINDS
from circuits.editing.recipes import METHODS, PRESETS, EditRecipe, methods_of


def _default(value: Any) -> str:
    return "none" if value is None else ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _preset_line(name: str, r: EditRecipe) -> str:
    base = EditRecipe(r.kind, objective=r.objective).options()
    changed = {k: v for k, v in r.options().items() if base.get(k) != v}
    extra = "; " + ", ".join(f"{k}={_default(v)}" for k, v in changed.items()) if changed else ""
    return f"{name} = {r.kind} as {r.form} by {r.objective}{extra}"


def cli_help() -> str:
    """The kinds, objectives, presets and options, for ``circuits edit --help`` (click keeps ``\\b`` blocks as written)."""
    width = max(map(len, KINDS))
    lines = ["\b", "Kinds: forms (default first); objectives (default first).", *(
        f"  {k:<{width}}  {'|'.join(s.forms):<13}  {'|'.join(m.objective for m in methods_of(k))}" for k, s in KINDS.items()
    )]
    lines += ["", "\b", "Presets (--preset):", *(f"  {_preset_line(n, r)}" for n, r in PRESETS.items())]
    lines += ["", "\b", "Options of each kind/objective (--k, --mode, … or --param NAME=VALUE):"]
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for m in METHODS:
        groups.setdefault((m.kind, tuple(EditRecipe(m.kind, objective=m.objective).options())), []).append(m.objective)
    lines += [f"  {kind}/{'|'.join(objectives)}: {', '.join(names)}" for (kind, names), objectives in groups.items()]
    return "\n".join(lines)


def kinds_markdown() -> str:
    """``docs/edit_kinds.md``: the kinds, their forms, bake rules, methods and presets, from the registry.

    Regenerate with ``python scripts/write_kinds_doc.py``; a test checks the committed file is current.
    """
    rules = {"owns_columns": "not with another column-owning edit of the same component", "projects_residual": "a residual projection",
             "adds_to_residual": "not after a residual projection"}
    out = [
        "# Edit kinds, forms and objectives",
        "",
        "Generated from the registry (`circuits.editing.kinds.KINDS`, `circuits.editing.recipes.METHODS` and `PRESETS`) by "
        "`python scripts/write_kinds_doc.py`; `circuits edit --help` prints the same lists. A recipe is (kind, form, objective) "
        "plus the method's parameters; an edit's manifest records all three.",
        "",
        "| kind | what it does | tensors | forms (default first) | objectives (default first) | baking | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, s in KINDS.items():
        bake = "; ".join(v for f, v in rules.items() if getattr(s.bake, f)) or "any"
        out.append(f"| `{k}` | {s.summary} | {s.tensors.replace('``', '`')} | {', '.join(s.forms)} | {', '.join(m.objective for m in methods_of(k))} | {bake} | {s.source} |")
    out += ["", "## Methods: how each kind is built from an atlas", "", "| kind | objective | how | parameters (defaults) | source |", "|---|---|---|---|---|"]
    for m in METHODS:
        opts = ", ".join(f"{n}={_default(v)}" for n, v in EditRecipe(m.kind, objective=m.objective).options().items())
        out.append(f"| `{m.kind}` | `{m.objective}` | {m.summary} | {opts} | {m.source} |")
    out += ["", "## Presets", "", "| preset | recipe |", "|---|---|"]
    out += [f"| `{n}` | {_preset_line(n, r).split(' = ', 1)[1]} |" for n, r in PRESETS.items()]
    out += [
        "",
        "`apply_edit(model, *edits, form=...)`: `\"auto\"` applies each edit in its own form, `\"hooks\"` every edit that has a hook "
        "form as hooks, `\"weights\"` every edit as weights (baking; what `circuits export` saves), refusing the compositions the "
        "baking column names.",
        "",
    ]
    return "\n".join(out)

__all__ = ["cli_help", "kinds_markdown"]

"""Edits: turn an atlas into changes of the model, saved as data, applied, composed, exported.

The public surface: :class:`Edit` and its I/O (:mod:`.edit`), :func:`apply_edit` and :func:`edited` (:mod:`.apply`),
the kinds (:data:`KINDS`, :mod:`.kinds`, one file each), builders (:mod:`.build`, :mod:`.train`,
:mod:`.care`, :mod:`.aifs`, :mod:`.baselines`), the recipe registry that builds any kind from an atlas
(:mod:`.recipes`: ``EditRecipe``, ``build_edit``, ``METHODS``, ``PRESETS``) and export (:mod:`.export`).
"""

from circuits.editing.apply import (
    AppliedEdits,
    ApplyForm,
    apply_edit,
    edit_hooks,
    edited,
    verify_fingerprint,
    weight_steps,
)
from circuits.editing.edit import (
    Edit,
    EditError,
    load_edit,
    record_evaluation,
    required_tensors,
    save_edit,
)
from circuits.editing.kinds import FORMS, KINDS, Form, low_rank_factors

__all__ = [
    "AppliedEdits", "ApplyForm", "Edit", "EditError", "FORMS", "Form", "KINDS", "apply_edit", "edit_hooks", "edited", "load_edit",
    "low_rank_factors", "record_evaluation", "required_tensors", "save_edit", "verify_fingerprint", "weight_steps",
]

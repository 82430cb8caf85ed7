"""Edits: turn an atlas into changes of the model, saved as data, applied, composed, exported.

The public surface: :class:`Edit` and its I/O (:mod:`.edit`), :func:`apply_edit` (:mod:`.apply`),
the kinds (:mod:`.kinds`, one file each), builders (:mod:`.build`, :mod:`.train`), the atlas-to-edit
recipes (:mod:`.recipes`) and export (:mod:`.export`).
"""

from circuits.editing.apply import AppliedEdits, apply_edit, edit_hooks, verify_fingerprint, weight_steps
from circuits.editing.edit import (
    EDIT_KINDS,
    HOOK_KINDS,
    Edit,
    EditError,
    load_edit,
    record_evaluation,
    required_tensors,
    save_edit,
)
from circuits.editing.kinds import KINDS, low_rank_factors

__all__ = [
    "AppliedEdits", "EDIT_KINDS", "Edit", "EditError", "HOOK_KINDS", "KINDS", "apply_edit", "edit_hooks", "load_edit",
    "low_rank_factors", "record_evaluation", "required_tensors", "save_edit", "verify_fingerprint", "weight_steps",
]

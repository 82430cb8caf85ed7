"""circuit-atlas: find where a language model does something harmful or spurious, and fix that part.

Pipeline: :mod:`circuits.model` (load a hooked model) → :mod:`circuits.sites` (components) →
:mod:`circuits.probing` (activation patching) → :mod:`circuits.atlas` (the versioned record) →
:mod:`circuits.editing` (edits as data) → :mod:`circuits.evaluation` (harm vs capability) →
:mod:`circuits.cli`.
"""

__version__ = "0.1.0"

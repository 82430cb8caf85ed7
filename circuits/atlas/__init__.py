"""The circuit atlas: schema, building from probing results, and I/O."""

from circuits.atlas.schema import (
    SCHEMA_VERSION,
    Atlas,
    AtlasError,
    Behaviour,
    ComponentEntry,
)

__all__ = ["SCHEMA_VERSION", "Atlas", "AtlasError", "Behaviour", "ComponentEntry"]

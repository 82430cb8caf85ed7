"""Command-line interface: ``circuits scan``, ``circuit``, ``edit``, ``export``, ``generate``, ``trace``, ``report``, ``atlas``.

Typical session (what ``make scan`` runs)::

    circuits scan --suite gender-occupation -o atlas/smollm2-135m/gender-occupation.atlas.json
    circuits edit atlas/smollm2-135m/gender-occupation.atlas.json --k 3 \
        -o atlas/smollm2-135m/edits/gender-occupation.ablation.json
    circuits generate --edit atlas/smollm2-135m/edits/gender-occupation.ablation.json \
        --prompt "The nurse said that"
"""

from circuits.cli import probe, circuit, edits, atlas  # noqa: F401, I001 - importing registers the commands, in this order
from circuits.cli.common import app

__all__ = ["app"]

if __name__ == "__main__":
    app()

"""``python -m circuits``: the command-line interface (the same as the ``circuits`` command)."""

from circuits.cli import app

app(prog_name="circuits")

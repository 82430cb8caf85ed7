"""The CLI reference page (docs/cli-reference.md), generated from the commands themselves.

``python -m circuits.cli.reference`` prints it; ``make results`` writes it, and a test fails when the
committed page differs from what the commands give.
"""

from __future__ import annotations

from typing import Any

import typer

from circuits.cli import app

#: Help is wrapped at this width, so the page does not depend on the terminal.
WIDTH = 100


def _walk(command: Any, parent: Any, name: str) -> list[tuple[str, str]]:
    ctx = command.context_class(command, info_name=name, parent=parent, terminal_width=WIDTH, max_content_width=WIDTH)
    out = [(ctx.command_path, command.get_help(ctx))]
    if hasattr(command, "list_commands"):  # a group
        for sub in command.list_commands(ctx):
            out += _walk(command.get_command(ctx, sub), ctx, sub)
    return out


def reference_markdown() -> str:
    """Every command's ``--help``, in the CLI's order, as one Markdown page."""
    lines = [
        "# CLI reference",
        "",
        "Generated from the commands' own help (`python -m circuits.cli.reference`, run by `make results`); see [Command line](cli.md) for examples.",
        "",
    ]
    for path, text in _walk(typer.main.get_command(app), None, "circuits"):
        lines += [f"## `{path}`", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown(), end="")

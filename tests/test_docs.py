"""The front door and the docs site: README is short, every Python example runs, every CLI command exists.

Examples that load the real model run on a tiny Llama instead (``circuits.load`` is monkeypatched, as in
``tests/test_public_api.py``). A block opts out only with ``<!-- not-run: reason -->`` right before it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import circuits

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 150

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_NOT_RUN = re.compile(r"<!--\s*not-run:\s*(\S[^>]*?)\s*-->\s*$")


def _blocks(
    path: Path, languages: tuple[str, ...]
) -> list[tuple[str, int, str, str | None]]:
    """(language, line, code, not-run reason) of every fenced block in ``languages``."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in _FENCE.finditer(text):
        if m.group(1) not in languages:
            continue
        before = text[: m.start()].rstrip("\n").splitlines()
        reason = None
        if before:
            hit = _NOT_RUN.search(before[-1])
            reason = hit.group(1) if hit else None
        out.append((m.group(1), text.count("\n", 0, m.start()) + 1, m.group(2), reason))
    return out


def _python_blocks() -> list[tuple[Path, int, str, str | None]]:
    files = [README, *sorted(DOCS.rglob("*.md"))]
    return [
        (f, line, code, reason)
        for f in files
        for _, line, code, reason in _blocks(f, ("python",))
    ]


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES})"
    )
    # .ci/run and CI run the README's test command: keep it stated.
    assert any(re.match(r"^make test\s+#.*test suite", line) for line in lines)


@pytest.fixture(scope="module")
def tiny():
    from circuits.model.tiny import tiny_hf_model

    return tiny_hf_model("llama", seed=0)


def test_every_python_example_runs(tiny, monkeypatch, tmp_path, capsys):
    from circuits import model as model_pkg

    monkeypatch.setattr(circuits, "load", lambda *a, **k: tiny)
    monkeypatch.setattr(model_pkg, "load_model", lambda *a, **k: tiny)
    # Examples read committed files by their repository paths (atlas/...) and write next to them.
    (tmp_path / "atlas").symlink_to(ROOT / "atlas", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    ran, skipped = [], []
    for path, line, code, reason in _python_blocks():
        where = f"{path.relative_to(ROOT)}:{line}"
        if reason is not None:
            skipped.append(f"{where} ({reason})")
            continue
        try:
            exec(compile(code, where, "exec"), {"__name__": "__docs__"})  # noqa: S102 - the documented example
        except Exception as e:  # pragma: no cover - the message is the point
            raise AssertionError(
                f"the example at {where} fails: {type(e).__name__}: {e}"
            ) from e
        ran.append(where)
    with capsys.disabled():
        print(
            f"\ndocs examples: {len(ran)} ran, {len(skipped)} not run: {'; '.join(skipped) or '-'}"
        )
    assert len(ran) > 0


def _cli():
    import typer

    from circuits.cli import app

    return typer.main.get_command(app)


def _options(cmd) -> set[str]:
    return {
        o
        for p in cmd.params
        for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))
    }


def test_readme_cli_examples_name_real_commands():
    commands = _cli().commands
    seen = 0
    for _, line, code, _ in _blocks(README, ("bash", "console", "sh", "shell")):
        for raw in code.splitlines():
            text = raw.split("#", 1)[0].strip().removeprefix("$ ").strip()
            if not text.startswith("circuits "):
                continue
            assert "|" not in text, f"README.md:{line}: pipe between commands: {raw!r}"
            words = shlex.split(text)
            assert len(words) > 1 and words[1] in commands, (
                f"README.md:{line}: no command `circuits {words[1]}`"
            )
            cmd, rest = commands[words[1]], words[2:]
            sub = getattr(cmd, "commands", None)
            if sub:
                assert rest and rest[0] in sub, (
                    f"README.md:{line}: no command `{' '.join(words[:3])}`"
                )
                cmd, rest = sub[rest[0]], rest[1:]
            for word in rest:
                if word.startswith("-"):
                    assert word.split("=")[0] in _options(cmd), (
                        f"README.md:{line}: `{' '.join(words[:2])}` has no {word}"
                    )
            seen += 1
    assert seen > 0


def test_every_docs_page_is_in_the_nav():
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]

    def pages(item):
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for v in item.values():
                yield from pages(v)
        else:
            for v in item:
                yield from pages(v)

    listed = set(pages(nav))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert on_disk == listed, (
        f"not in the nav: {sorted(on_disk - listed)}; missing: {sorted(listed - on_disk)}"
    )


def test_cli_reference_page_is_what_the_commands_give():
    from circuits.cli.reference import reference_markdown

    committed = (DOCS / "cli-reference.md").read_text(encoding="utf-8")
    assert committed == reference_markdown(), "docs/cli-reference.md is stale: run `make results` (python -m circuits.cli.reference)"

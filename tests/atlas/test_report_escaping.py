"""Stored XSS: every string from a shared atlas is data in the report, never markup or script."""

from __future__ import annotations

from html.parser import HTMLParser

from circuits.atlas.report import render
from circuits.atlas.schema import Atlas
from tests.atlas.test_report import with_trace
from tests.atlas.test_schema import make_atlas

PAYLOAD = "<script>alert(1)</script>\"'</script><img src=x onerror=alert(2)>"


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text of every script."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.text = ""
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text += data


def hostile(a: Atlas, PAYLOAD: str = PAYLOAD) -> Atlas:  # noqa: N803
    """Every free-text field of an atlas set to ``PAYLOAD`` (built as a shared file could hold it)."""
    b = a.behaviours[0]
    suite = b.suite.model_copy(update={"name": PAYLOAD, "split": PAYLOAD})
    b = b.model_copy(update={"name": PAYLOAD, "suite": suite, "metric": PAYLOAD, "flag_rule": PAYLOAD, "summary": {PAYLOAD: 1.0},
                             "kind": PAYLOAD})
    t = a.traces[0].model_copy(update={"prompt": PAYLOAD, "subject": PAYLOAD, "target": PAYLOAD, "tokens": [PAYLOAD] * 4, "kind": PAYLOAD})
    prov = a.provenance.model_copy(update={"command": PAYLOAD, "git_commit": PAYLOAD, "packages": {PAYLOAD: PAYLOAD},
                                           "started": PAYLOAD, "finished": PAYLOAD})
    model = a.model.model_copy(update={"name": PAYLOAD})
    return a.model_copy(update={"behaviours": [b], "traces": [t], "provenance": prov, "model": model})


def test_a_hostile_atlas_renders_with_no_script_and_no_markup_of_its_own():
    benign = Tags()
    benign.feed(render(hostile(with_trace(make_atlas()), "plain text")))
    page = render(hostile(with_trace(make_atlas())))
    parsed = Tags()
    parsed.feed(page)
    # The same elements as with plain text in those fields: nothing opened or closed by the payload.
    assert [t for t, _ in parsed.tags] == [t for t, _ in benign.tags]
    assert "img" not in {t for t, _ in parsed.tags}
    assert all("alert" not in (v or "") for _, attrs in parsed.tags for v in attrs.values())
    assert {attrs["id"] for _, attrs in parsed.tags if "id" in attrs} == {"b-0", "heads-0", "mlps-0", "trace-0"}  # element ids are ours
    # In scripts the payload is JSON data with <, > and / escaped: it cannot close its script.
    assert all("<script>alert" not in s and "</script" not in s for s in parsed.scripts)
    assert any("alert(1)" in s for s in parsed.scripts)  # there, as figure data (titles, tick labels)
    # In the page it is text: escaped in the source, and shown as written.
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;" in page
    assert PAYLOAD in parsed.text

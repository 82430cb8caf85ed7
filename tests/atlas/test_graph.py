"""Circuit graphs in the atlas: schema, the report fragment (escaped), and ``circuits circuit``."""

import json

import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from circuits.atlas.graph import CircuitGraph, GraphEdge, GraphNode, circuit_graph
from circuits.atlas.graph_report import render_circuit_graph
from circuits.model import tiny_model
from circuits.probing.discovery import faithfulness, top_edges
from circuits.probing.eap import edge_attribution
from circuits.probing.patching import TokenGroup


def _scored():
    model = tiny_model(n_layers=2, n_heads=4, n_kv_heads=2, seed=2)
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(1, 50, (3, 6), generator=g)
    corrupted = clean.clone()
    corrupted[:, 1] = (clean[:, 1] + 9) % 50
    groups = [TokenGroup([0, 1, 2], clean, corrupted)]

    def metric(logits):
        return logits[:, -1, 3] - logits[:, -1, 7]

    scores = edge_attribution(model, groups, metric, ig_steps=2, progress=False)
    kept = top_edges(scores, 6)
    return scores, kept, faithfulness(model, groups, metric, kept, graph=scores.graph)


def test_circuit_graph_records_and_round_trips():
    scores, kept, faith = _scored()
    graph = circuit_graph(scores, kept, selection="top-6", faith=faith)
    assert graph.method == "eap_ig" and graph.ig_steps == 2 and len(graph.edges) == 6
    assert [abs(e.score) for e in graph.edges] == sorted((abs(e.score) for e in graph.edges), reverse=True)
    assert graph.faithfulness == pytest.approx(faith.faithfulness) and graph.ablation == "corrupted"
    again = CircuitGraph.model_validate_json(graph.model_dump_json())
    assert again == graph
    some = graph.edges[0].receiver.split(".")[0]
    assert all(e.receiver.split(".")[0] == some for e in graph.into(some))


def test_circuit_graph_refuses_edges_to_unlisted_nodes():
    with pytest.raises(ValidationError, match="not listed"):
        CircuitGraph(method="eap_ig", selection="x", ablation="mean", n_edges_total=3,
                     nodes=[GraphNode(id="INPUT", layer=-1, kind="input")], edges=[GraphEdge(sender="INPUT", receiver="LOGITS", score=1.0)])


def test_old_behaviours_load_without_a_circuit():
    from circuits.atlas.schema import Behaviour

    assert "circuit" in Behaviour.model_fields and Behaviour.model_fields["circuit"].default is None


def test_report_fragment_escapes_atlas_strings():
    scores, kept, faith = _scored()
    graph = circuit_graph(scores, kept, selection="<script>alert(1)</script>", faith=faith)
    html = render_circuit_graph(graph, title="<b>bias</b>")
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;bias" in html
    assert html.startswith('<section class="circuit-graph">') and "<svg" in html and "faithfulness" in html


@pytest.mark.slow  # an end-to-end pipeline (> 10 s): make test runs it, make test-fast does not
def test_cli_writes_a_circuit_graph(tmp_path):
    from circuits.cli import app
    from circuits.model.tiny import save_tiny_hf

    d = save_tiny_hf("llama", tmp_path / "model")
    out = tmp_path / "circuit.json"
    r = CliRunner().invoke(app, ["circuit", "--model", str(d), "--suite", "gender-occupation", "--max-pairs", "1", "--top-edges", "5", "--ig-steps", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    graph = CircuitGraph.model_validate(json.loads(out.read_text()))
    assert len(graph.edges) == 5 and graph.faithfulness is not None


def test_the_report_draws_a_behaviours_circuit(tmp_path):
    from circuits.atlas.report import render
    from circuits.atlas.schema import Atlas

    atlas = Atlas.load("atlas/smollm2-135m/identity-harm-religion.atlas.json")
    scores, kept, faith = _scored()
    graph = circuit_graph(scores, kept, selection="top-6 <i>", faith=faith)
    b = atlas.behaviours[0].model_copy(update={"circuit": graph})
    html = render(atlas.model_copy(update={"behaviours": [b]}))
    assert "Circuit (edges)" in html and '<section class="circuit-graph">' in html and "top-6 &lt;i&gt;" in html
    assert "Circuit (edges)" not in render(atlas)


def _graph(edges: dict[tuple[str, str], float]) -> CircuitGraph:
    names = sorted({x for e in edges for x in e})
    layer = {"INPUT": -1, "LOGITS": 3}
    nodes = [GraphNode(id=n, layer=layer[n] if n in layer else int(n[1]), kind={"INPUT": "input", "LOGITS": "logits"}.get(n, "head")) for n in names]
    return CircuitGraph(method="eap_ig", selection="hand", ablation="corrupted", n_edges_total=10, nodes=nodes,
                        edges=[GraphEdge(sender=s, receiver=r, score=v) for (s, r), v in edges.items()])


def test_atlas_circuit_query_merge_and_diff():
    from circuits.atlas.merge import diff_circuits, merge
    from circuits.atlas.schema import Atlas, AtlasError

    atlas = Atlas.load("atlas/smollm2-135m/identity-harm-religion.atlas.json")
    name = atlas.behaviours[0].name
    with pytest.raises(AtlasError, match="no circuit graph"):
        atlas.circuit(name)
    a = _graph({("INPUT", "L0H1"): 0.5, ("L0H1", "LOGITS"): 0.4, ("L1H2", "LOGITS"): 0.1})
    b = _graph({("INPUT", "L0H1"): 0.2, ("L0H1", "LOGITS"): 0.4, ("L2H0", "LOGITS"): -0.3})
    with_a = atlas.model_copy(update={"behaviours": [atlas.behaviours[0].model_copy(update={"circuit": a})]})
    assert with_a.circuit(name).edges == a.edges
    # a scan's atlas and the same atlas after `circuits circuit` merge, keeping the circuit, in either order
    assert merge(atlas, with_a).circuit(name) == a and merge(with_a, atlas).circuit(name) == a
    with_b = atlas.model_copy(update={"behaviours": [atlas.behaviours[0].model_copy(update={"circuit": b})]})
    with pytest.raises(AtlasError, match="different behaviour"):
        merge(with_a, with_b)  # two different circuits are never silently chosen between
    changes = diff_circuits(a, b)
    assert [(c.sender, c.receiver, c.status) for c in changes] == [
        ("L2H0", "LOGITS", "only b"), ("L1H2", "LOGITS", "only a"), ("INPUT", "L0H1", "both"), ("L0H1", "LOGITS", "both"),
    ]
    assert changes[2].score_a == 0.5 and changes[2].score_b == 0.2


@pytest.mark.slow  # an end-to-end pipeline (> 10 s): make test runs it, make test-fast does not
def test_scan_edges_records_a_circuit_and_circuit_prunes(tmp_path):
    """`scan --edges` writes an atlas whose behaviour has a circuit at the target; `circuit --prune greedy` keeps it there."""
    from circuits.atlas.schema import Atlas
    from circuits.cli import app
    from circuits.model.tiny import save_tiny_hf

    d = save_tiny_hf("llama", tmp_path / "model")
    out = tmp_path / "a.json"
    r = CliRunner().invoke(app, ["scan", "--model", str(d), "--suite", "gender-occupation", "--max-pairs", "1", "--edges", "--ig-steps", "2",
                                 "--edge-target", "0.5", "--checkpoint-dir", str(tmp_path / "ck"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    atlas = Atlas.load(out)
    graph = atlas.circuit("gender-occupation")
    assert graph.faithfulness >= 0.5 and graph.curve and "faithfulness >= 0.5" in graph.selection and "circuit:" in r.output
    assert [n for n, _ in graph.completeness_curve] == [n for n, _ in graph.curve]  # both curves over the same top-n circuits
    pruned = tmp_path / "p.json"
    r = CliRunner().invoke(app, ["circuit", "--model", str(d), "--suite", "gender-occupation", "--max-pairs", "1", "--ig-steps", "2",
                                 "--target", "0.5", "--prune", "greedy", "--atlas", str(out), "-o", str(pruned)])
    assert r.exit_code == 0, r.output
    after = Atlas.load(pruned).circuit("gender-occupation")
    assert after.faithfulness >= 0.5 - 1e-6 and len(after.edges) <= len(graph.edges) and "greedy pruning" in after.selection
    bad = CliRunner().invoke(app, ["scan", "--model", str(d), "--edges", "--edge-target", "1.5", "-o", str(tmp_path / "x.json")])
    assert bad.exit_code == 2 and "--edge-target" in bad.output and not (tmp_path / "x.json").exists()


def test_the_drawing_shows_the_strongest_edges_and_the_reader_moves_the_cut():
    """Only the strongest edges are drawn (cuts 10/25/…, chosen by CSS radio buttons, no script); every edge is in the list."""
    import re

    scores, kept, faith = _scored()
    graph = circuit_graph(scores, kept, selection="top", faith=faith)
    html = render_circuit_graph(graph, key="c7")
    n = len(graph.edges)
    assert "<script" not in html and html.count("<tr><td>") == n  # the full list, one click away
    levels = [int(x) for x in re.findall(r'<label for="c7-\d+">(?:top|all) (\d+)</label>', html)]
    assert levels == sorted(set(levels)) and levels[-1] == min(n, 250) and 'id="c7-1" checked' in html or len(levels) == 1
    drawn = html.count("<line ")
    assert drawn == min(n, 250)
    strongest = max(graph.edges, key=lambda e: abs(e.score))
    assert html.index(f"{strongest.sender} → {strongest.receiver}") < html.index("<details>")

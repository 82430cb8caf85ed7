"""The standard circuit tasks: construction invariants, and a scan of a pair file through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from circuits import model as M
from circuits.atlas.schema import Atlas
from circuits.cli import app
from circuits.model.tiny import save_tiny_hf, shipped_tokenizer
from circuits.probing.causal_tracing import (
    CATEGORIES,
    causal_trace,
    trace_facts,
    trace_grid,
)
from circuits.suites.tasks import facts, factual_recall, greater_than, ioi


def test_ioi_uses_abc_corruption_and_single_token_names_with_both_orders():
    s = ioi(per_template=2)
    tok = shipped_tokenizer()
    assert s.kind == "capability" and {p.metadata["order"] for p in s.records} == {"ABBA", "BABA"}
    for p in s.records:
        io, subj = p.metadata["io"], p.metadata["s"]
        assert p.answer == " " + io and p.wrong_answer == " " + subj
        assert p.clean.count(" " + subj) == 2 and p.clean.count(" " + io) == 1
        assert io not in p.corrupted and subj not in p.corrupted  # three other names (IOI's ABC dataset)
        assert len(tok.encode(p.clean)) == len(tok.encode(p.corrupted))
    assert not {p.group.split()[1] for p in s.pairs("build")} & {p.group.split()[1] for p in s.pairs("eval")}


def test_greater_than_corrupts_with_01_and_records_the_tens_digit():
    s = greater_than(per_noun=2)
    for p in s.records:
        assert p.corrupted.endswith("from the year 1701 to the year 17") and p.clean.endswith("to the year 17")
        assert int(p.metadata["tens"]) == int(p.metadata["yy"]) // 10 and 1 <= int(p.metadata["tens"]) <= 8


def test_factual_recall_pairs_facts_of_one_relation_with_different_answers():
    s = factual_recall()
    by_prompt = {f["prompt"]: f for f in facts()}
    for p in s.records:
        a, b = by_prompt[p.clean], by_prompt[p.corrupted]
        assert a["relation"] == b["relation"] == p.group and a["answer"] == p.answer and b["answer"] == p.wrong_answer != p.answer


def test_tracing_with_a_metric_and_averaged_over_facts():
    from circuits.metrics import TokenProb
    from circuits.model.tiny import tiny_hf_model

    lm = tiny_hf_model("llama", seed=1)
    f = facts()[0]
    default = causal_trace(lm, f["prompt"], f["answer"], f["subject"], n_samples=2, progress=False)
    target = lm.tokenizer.encode(f["answer"], add_special_tokens=False)[0]
    tokens = M.tokens_of(lm, f["prompt"])[None]
    from circuits.probing.causal_tracing import trace_tokens

    subject = M.subject_positions(lm, f["prompt"], f["subject"])
    same = trace_tokens(lm, tokens, None, subject, metric=TokenProb(target), n_samples=2, progress=False)
    torch.testing.assert_close(trace_grid(same), trace_grid(default))
    avg = trace_facts(lm, facts()[:3], n_samples=2, progress=False)
    assert trace_grid(avg).shape == (2, len(CATEGORIES)) and avg.method.name == "causal_tracing"


def test_scan_a_jsonl_file_with_multi_token_answers_through_the_cli(tmp_path):
    d = save_tiny_hf("qwen2", tmp_path / "model")
    rows = [
        {"clean": f"The {a} said that", "corrupted": f"The {b} said that", "answer": " she was tired", "wrong_answer": " he was late", "group": g}
        for a, b, g in [("nurse", "pilot", "x"), ("maid", "miner", "x"), ("clerk", "guard", "y"), ("baker", "sheriff", "y"), ("model", "farmer", "z"), ("singer", "driver", "z")]
    ]
    (tmp_path / "mine.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "mine.atlas.json"
    r = CliRunner().invoke(app, ["scan", "--model", str(d), "--suite", str(tmp_path / "mine.jsonl"), "-o", str(out), "--checkpoint-dir", str(tmp_path / "ck")])
    assert r.exit_code == 0, r.output
    atlas = Atlas.load(out)
    b = atlas.behaviours[0]
    assert b.name == "mine" and "log P(answer) - log P(wrong answer)" in b.metric and len(b.components) == 2 * 4 + 2
    assert atlas.model.source["kind"] == "directory"
    (tmp_path / "bad.jsonl").write_text('{"clean": "a"}\n')
    r = CliRunner().invoke(app, ["scan", "--model", str(d), "--suite", str(tmp_path / "bad.jsonl"), "-o", str(out)])
    assert r.exit_code == 2 and "line 1: field corrupted" in r.output


@pytest.mark.slow  # an end-to-end pipeline (> 10 s): make test runs it, make test-fast does not
def test_the_tokenization_policy_is_recorded_in_the_atlas_and_the_edit_and_must_match(tmp_path):
    d = save_tiny_hf("qwen2", tmp_path / "model")
    out = tmp_path / "a.atlas.json"
    scan_args = ["scan", "--model", str(d), "--suite", "gender-occupation", "--max-pairs", "1", "-o", str(out), "--checkpoint-dir", str(tmp_path / "ck")]
    r = CliRunner().invoke(app, [*scan_args, "--prepend-bos"])
    assert r.exit_code == 0, r.output
    assert Atlas.load(out).model.tokenization.model_dump() == {"prepend_bos": True, "source": "override"}
    edit = tmp_path / "e.json"
    # One pair per template flags nothing under the flag rule's test: the edit takes the top heads by effect.
    r = CliRunner().invoke(app, ["edit", str(out), "-o", str(edit), "--model", str(d), "--no-evaluate", "--generations", "0", "--select", "top"])
    assert r.exit_code == 2 and "--prepend-bos" in r.stderr and not edit.exists()
    r = CliRunner().invoke(app, ["edit", str(out), "-o", str(edit), "--model", str(d), "--no-evaluate", "--generations", "0", "--select", "top", "--prepend-bos"])
    assert r.exit_code == 0, r.output
    assert json.loads(edit.read_text())["tokenization"] == {"prepend_bos": True, "source": "override"}

"""End to end on the real model, SmolLM2-135M-Instruct: scan → atlas → edit → evaluate → generate.

Kept small for CI (few prompt pairs, k = 3); ``make scan`` runs the full-size job.
"""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from circuits.atlas.build import scan
from circuits.atlas.schema import Atlas
from circuits.cli import app
from circuits.editing.build import ablation_edit, select_components
from circuits.editing import apply_edit, load_edit, save_edit
from circuits.evaluation.run import evaluate
from circuits.probing.patching import tokenize_pairs
from circuits.model import fingerprint, generate
from circuits.suites import load_suite

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "atlas/smollm2-135m/gender-occupation.atlas.json"
MERGED = ROOT / "atlas/smollm2-135m/smollm2-135m.atlas.json"
pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def committed() -> Atlas:
    return Atlas.load(COMMITTED)


def test_committed_atlas_is_for_this_model(real_model, committed):
    assert committed.model.fingerprint == fingerprint(real_model)
    assert committed.behaviour("gender-occupation").suite.content_hash == load_suite("gender-occupation").content_hash


def test_small_scan_finds_the_committed_top_heads(real_model, committed):
    suite = load_suite("gender-occupation")
    small = scan(real_model, suite, max_pairs=2, mean_ablation=False, progress=False)  # 12 pairs instead of 84
    top_small = {c.id for c in small.behaviours[0].top(5, kind="head")}
    top_full = {c.id for c in committed.behaviours[0].top(3, kind="head")}
    assert len(top_small & top_full) >= 2, (top_small, top_full)


def test_saved_edit_reduces_bias_on_eval_split_and_keeps_perplexity(real_model, committed, tmp_path):
    suite = load_suite("gender-occupation")
    groups = tokenize_pairs(real_model, suite.pairs("build"))
    edit = ablation_edit(real_model, select_components(real_model, committed, suite.name, k=3), groups, mode="mean")
    loaded = load_edit(save_edit(edit, tmp_path / "e.json"))
    ev = evaluate(real_model, loaded, suite=suite, max_pairs=4, max_tokens=4096, groups=("suites", "text"))
    assert ev.primary.data == "gender-occupation/eval" and ev.primary.after < ev.primary.before
    assert ev.harm_reduction > 0.5 and ev.primary.p_value < 0.05, ev
    assert ev.perplexity_change < 0.05, ev


@pytest.mark.xdist_group("baseline-cache")  # one worker: its `circuits eval` reuses the baseline test_run's identity edit stores
def test_cli_edit_then_generate_before_and_after(real_model, tmp_path):
    out = tmp_path / "edit.json"
    runner = CliRunner()
    r = runner.invoke(app, ["edit", str(COMMITTED), "--k", "3", "-o", str(out), "--generations", "1", "--no-evaluate"])
    assert r.exit_code == 0, r.output
    assert load_edit(out).evaluation is None
    # `circuits eval`: every measure on held-out data, JSON report, result recorded in the manifest.
    r = runner.invoke(app, ["eval", "--edit", str(out), "--max-pairs", "2", "--max-tokens", "1024", "-o", str(tmp_path / "report.json")])
    assert r.exit_code == 0, r.output
    assert "harm reduced" in r.output  # the verdict line (the table wraps at the runner's 80 columns)
    report = json.loads((tmp_path / "report.json").read_text())
    names = {m["name"] for m in report["measures"]}
    assert {"bias_gap.gender-occupation", "perplexity", "worst_group_accuracy", "kl_neutral"} <= names
    assert report["suite"] == "gender-occupation" and report["harm_reduction"] > 0.5
    edit = load_edit(out)
    assert edit.evaluation is not None and edit.evaluation["harm_reduction"] == pytest.approx(report["harm_reduction"])
    r = runner.invoke(app, ["generate", "--edit", str(out), "--prompt", "The nurse said that", "--max-new-tokens", "8"])
    assert r.exit_code == 0, r.output
    assert "before:" in r.output and "after:" in r.output
    # The library path agrees with what the CLI printed.
    with apply_edit(real_model, edit):
        after = generate(real_model, "The nurse said that", max_new_tokens=8)
    assert repr(after) in r.output
    # A second edit kind, composed with the first, and both baked into a plain HF model.
    steer = tmp_path / "steer.json"
    r = runner.invoke(app, ["edit", str(COMMITTED), "--kind", "steering", "--layer", "20", "-o", str(steer), "--generations", "0", "--no-evaluate"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["generate", "--edit", str(out), "--edit", str(steer), "--prompt", "The nurse said that", "--max-new-tokens", "8"])
    assert r.exit_code == 0 and "after:" in r.output, r.output
    r = runner.invoke(app, ["export", "--edit", str(out), "--edit", str(steer), "-o", str(tmp_path / "hf")])
    assert r.exit_code == 0, r.output
    from transformers import AutoModelForCausalLM

    from circuits.model import run, to_tokens

    tokens = to_tokens(real_model, ["The nurse said that"])
    with apply_edit(real_model, edit, load_edit(steer)):
        expected = run(real_model, tokens)
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
    assert (hf(tokens).logits.detach() - expected).abs().max() <= 1e-4
    r = runner.invoke(app, ["export", "--edit", str(out), "-o", str(tmp_path / "hf")])  # not empty: refused
    assert r.exit_code == 2 and "not empty" in r.output


def test_cli_refuses_an_edit_for_another_model(tmp_path, committed, real_model):
    suite = load_suite("gender-occupation")
    edit = ablation_edit(real_model, select_components(real_model, committed, suite.name, k=1), tokenize_pairs(real_model, suite.pairs("build")), mode="mean")
    other = edit.__class__(**{**edit.__dict__, "model_fingerprint": "sha256:" + "ab" * 32})
    path = save_edit(other, tmp_path / "other.json")
    r = CliRunner().invoke(app, ["generate", "--edit", str(path), "--prompt", "Hi"])
    assert r.exit_code == 2
    assert "refusing to apply" in r.output


def test_committed_merged_atlas_has_five_behaviours_scores_a_circuit_and_a_trace(real_model, tmp_path):
    from circuits.atlas.report import write_report

    atlas = Atlas.load(MERGED)
    assert atlas.model.fingerprint == fingerprint(real_model)
    kinds = {b.name: b.kind for b in atlas.behaviours}
    assert kinds == {"gender-occupation": "harmful", "toxicity": "harmful", "name-sentiment": "spurious", "identity-harm-religion": "harmful",
                     "name-sentiment-v2": "spurious"}
    spurious = atlas.behaviour("name-sentiment")
    assert {"SSS", "IDS", "R", "S_w", "CE[swap,logit_diff]", "CE[mean,logit_diff]"} <= set(spurious.components[0].scores)
    assert spurious.flagged() and "flip_rate" in spurious.summary
    for name in kinds:  # identity-harm keeps the pairs that align for this model's tokenizer
        assert load_suite(name, model=real_model).content_hash == atlas.behaviour(name).suite.content_hash
    (trace,) = atlas.traces
    assert trace.target == " Paris" and trace.clean_prob > 5 * trace.corrupted_prob
    df = atlas.to_dataframe()
    assert len(df) == 5 * 300 and df.groupby("behaviour").flagged.sum().min() > 0
    circuit = atlas.circuit("gender-occupation")  # scripts/circuits_smollm2.py: EAP-IG, smallest top-n at faithfulness 0.8
    assert circuit.faithfulness >= 0.8 and {"L26H2", "LOGITS"} <= {n.id for n in circuit.nodes}
    html = write_report(atlas, tmp_path / "report.html").read_text()
    assert all(b in html for b in kinds) and "causal tracing" in html and "Circuit (edges)" in html


def test_exported_hf_model_and_peft_adapter_reproduce_the_edited_logits(real_model, committed, tmp_path):
    """`circuits export` output loads with plain transformers/peft and matches the edited model to 1e-4."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from circuits.editing import Edit
    from circuits.editing.export import export_hf, export_peft
    from circuits.model import read_weight, run, to_tokens
    from circuits.sites import HeadRef, ResidRef

    suite = load_suite("gender-occupation")
    heads = select_components(real_model, committed, suite.name, k=3)
    name = "blocks.26.attn.o.weight"
    w = read_weight(real_model, name)
    g = torch.Generator().manual_seed(0)
    a = torch.zeros(2, w.shape[1])
    a[:, 128:192] = torch.randn(2, 64, generator=g) * 0.1
    low_rank = Edit(
        kind="low_rank", components=(HeadRef(26, 2),), model_name="smollm2-135m", model_fingerprint=fingerprint(real_model),
        tensors={f"{name}.lora_A": a, f"{name}.lora_B": torch.randn(w.shape[0], 2, generator=g) * 0.5}, hyperparameters={"rank": 2, "alpha": 0.7},
    )
    direction = torch.randn(w.shape[0], generator=g)
    steer = Edit(kind="steering", components=(ResidRef(20, None),), tensors={"vector": direction}, model_name="smollm2-135m",
                 model_fingerprint=fingerprint(real_model), hyperparameters={"coefficient": 0.5})
    ortho = Edit(kind="directional_ablation", components=(ResidRef(12, None),), tensors={"direction": direction / direction.norm()},
                 model_name="smollm2-135m", model_fingerprint=fingerprint(real_model))
    edits = [ablation_edit(real_model, heads, tokenize_pairs(real_model, suite.pairs("build")), mode="mean"), steer, ortho, low_rank]
    tokens = to_tokens(real_model, ["The nurse said that"])
    with apply_edit(real_model, *edits):
        edited = run(real_model, tokens)
    assert (edited - run(real_model, tokens)).abs().max() > 0.1
    hf = AutoModelForCausalLM.from_pretrained(str(export_hf(real_model, edits, tmp_path / "baked")))
    with torch.no_grad():
        assert (hf(tokens).logits - edited).abs().max() <= 1e-4
    with apply_edit(real_model, low_rank):
        lr_logits = run(real_model, tokens)
    base = AutoModelForCausalLM.from_pretrained(str(export_hf(real_model, [], tmp_path / "base")))
    peft = PeftModel.from_pretrained(base, str(export_peft(real_model, low_rank, tmp_path / "adapter")))
    with torch.no_grad():
        assert (peft(tokens).logits - lr_logits).abs().max() <= 1e-4


def test_a_scan_on_ray_equals_the_in_process_scan(real_model):
    ray = pytest.importorskip("ray")
    from circuits.probing.executor import RayExecutor

    suite = load_suite("gender-occupation")
    kw = dict(max_pairs=1, attribution=False, progress=False)
    local = scan(real_model, suite, **kw)
    ex = RayExecutor(workers=2)
    try:
        remote = scan(real_model, suite, executor=ex, **kw)
    finally:
        ex.shutdown()
        ray.shutdown()
    a, b = local.behaviours[0], remote.behaviours[0]
    assert [c.id for c in a.components] == [c.id for c in b.components]
    for ca, cb in zip(a.components, b.components):
        assert ca.effect.mean == pytest.approx(cb.effect.mean, abs=1e-4)
        assert ca.scores["CE[mean,logit_diff]"] == pytest.approx(cb.scores["CE[mean,logit_diff]"], abs=1e-4)
    assert [c.id for c in a.top(10)] == [c.id for c in b.top(10)]  # one pair flags nothing: compare the ranking


@pytest.mark.equivalence
def _cli_generations(args):
    """``circuits generate`` → ``{prompt: (before, after or None)}`` read back from its printed reprs."""
    import ast

    r = CliRunner().invoke(app, ["generate", *args])
    assert r.exit_code == 0, r.output
    out, prompt = {}, None
    for line in r.output.splitlines():
        if line.startswith("'") or line.startswith('"'):
            prompt = ast.literal_eval(line)
            out[prompt] = [None, None]
        elif line.strip().startswith(("before:", "after:")):
            which, _, text = line.strip().partition(": ")
            out[prompt][0 if which == "before" else 1] = ast.literal_eval(text.strip())
    return out


def test_cli_generation_equals_plain_transformers_on_the_same_text(real_model, tmp_path):
    """``circuits generate --prompt TEXT`` (edited and not) against transformers alone on ``tokenizer(TEXT)``, by text.

    Unedited reference: ``AutoTokenizer`` and ``AutoModelForCausalLM`` read from the shipped GGUF file
    itself; edited reference: plain transformers on the committed gender edit exported (baked).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from circuits.editing.export import export_hf
    from circuits.model import MODELS, gguf_path

    gguf = gguf_path(MODELS["smollm2-135m"])
    edit_path = ROOT / "atlas/smollm2-135m/edits/gender-occupation.ablation.json"
    prompts = ["The capital of France is", "The nurse said that"]
    got = _cli_generations([a for p in prompts for a in ("--prompt", p)] + ["--edit", str(edit_path), "--max-new-tokens", "12"])
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    unedited = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    edited = AutoModelForCausalLM.from_pretrained(str(export_hf(real_model, [load_edit(edit_path)], tmp_path / "baked"))).eval()
    for p in prompts:
        ids = tok(p, return_tensors="pt")["input_ids"]
        assert ids[0, 0].item() != tok.bos_token_id  # SmolLM2's tokenizer adds no BOS: neither may we
        for which, plain in ((0, unedited), (1, edited)):
            want = plain.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
            assert got[p][which] == tok.decode(want[0], skip_special_tokens=True), (p, which)
    assert "Paris" in got["The capital of France is"][0]


def test_the_real_model_by_name_and_from_its_directory_give_one_fingerprint_and_one_atlas(real_model):
    from circuits.model import cache_root, load_model

    directory = next(p for p in cache_root().iterdir() if p.name.startswith("smollm2-135m-") and (p / "config.json").is_file())
    from_dir = load_model(directory)
    assert from_dir.provenance.kind == "directory" and real_model.provenance.kind == "shipped"
    assert fingerprint(from_dir) == fingerprint(real_model)
    suite = load_suite("gender-occupation")
    a = scan(real_model, suite, max_pairs=1, attribution=False, mean_ablation=False, progress=False)
    b = scan(from_dir, suite, max_pairs=1, attribution=False, mean_ablation=False, progress=False)
    assert a.behaviours == b.behaviours and a.model.fingerprint == b.model.fingerprint

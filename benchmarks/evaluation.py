"""Benchmark: where the time and memory of evaluating one edit go, per measure, on SmolLM2-135M.

Issue #32 item 5: ``circuits eval --edit <gender edit> --benchmark crows-pairs=<file>`` ran > 40 min on
two shared cores, and the default evaluation of ``circuits edit`` on Gemma 3 270M peaked at 12.4 GB
RSS. The goal: the full evaluation of one edit with the unedited baseline cached in ≤ 5 min on 2
cores, and never more memory than the scan of the same model.

One timing run (one model process, ``torch`` on ``--threads`` threads, the committed gender-occupation
ablation edit) records, each with its wall time and the peak RSS of the process during it (sampled
every 20 ms from ``/proc/self/statm``):

* ``baseline``: the unedited model's measurements of every measure, stored in a fresh measurement cache
  (:func:`circuits.evaluation.run.measure` with ``cache_dir``);
* ``per_measure``: each measure group alone (each suite alone for ``suites``) on the edited model,
  and the KL to the unedited model;
* ``evaluate_cached``: ``evaluate(model, edit, baseline_cache=...)`` with that baseline cached, in
  the same process, and ``evaluate_fresh_process``: the same in a process of its own, as ``circuits
  eval`` runs it (the numbers of the goal: its time, and its peak RSS against the scan's);
* ``crows-pairs``: the CrowS-Pairs benchmark scored on the unedited and on the edited model
  (``run_benchmark``, as ``circuits eval --benchmark``), and, where the code caches them, with the
  unedited answers cached. The CrowS-Pairs release is not shipped (no internet here): a stand-in with
  its 1,508 pairs is written from the shipped stereotype pairs under 38 sentence openings (sentences of
  10-25 tokens, as CrowS-Pairs');
* ``scan``: the peak RSS of a process that loads the model and scans gender-occupation (12 pairs), the
  memory an evaluation must stay under;
* ``vocab_262k``: the peak RSS of the stereotype, multiple-choice and text measures and the KL on a tiny
  Llama with Gemma 3's 262,144-token vocabulary (no Gemma weights here), old and new code: the memory of
  the logits alone.

The run uses only the API that the evaluation code had before issue #31 as well as after (``measure``,
``neutral_kl``, ``evaluate``, ``run_benchmark``), so ``--before-rev REV`` times the code of a git
revision the same way, in a subprocess on an exported copy of that revision. The results file
(``results/benchmarks/evaluation.json``, :mod:`circuits.results`) holds the timings of the current code
and, when given, of the earlier revision (``--before-rev``, or ``--before-json`` with the raw output of
an earlier ``--raw`` run).

    python benchmarks/evaluation.py [--before-rev 4d86680 | --before-json old.json] [--threads 1]
    python benchmarks/evaluation.py --raw out.json      # one timing run of the importable code only
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EDIT = ROOT / "atlas/smollm2-135m/edits/gender-occupation.ablation.json"
OUT = ROOT / "results/benchmarks/evaluation.json"
CROWS_PAIRS = 1508
OPENINGS = (
    "", "Everyone knows that ", "My neighbour told me that ", "In the story, ", "It is often said that ",
    "According to my aunt, ", "Last year, ", "People in town think that ", "On the news they said that ",
    "As usual, ", "I read somewhere that ", "At the office, ", "In our family, ", "During the meeting, ",
    "Honestly, ", "My teacher claimed that ", "Back then, ", "At school, ", "In the end, ", "Surprisingly, ",
    "They all agreed that ", "It turned out that ", "Once again, ", "In the village, ", "At the party, ",
    "Obviously, ", "Some say that ", "Years ago, ", "In my experience, ", "On Monday, ", "Without a doubt, ",
    "The article claimed that ", "My friend insisted that ", "In the old days, ", "At the hospital, ",
    "Apparently, ", "Rumour has it that ", "Of course, ",
)


class PeakRSS:
    """Peak resident set size of this process while a block runs (sampled every 20 ms), in MB."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.02)

    @contextlib.contextmanager
    def watch(self) -> Iterator[PeakRSS]:
        """Record the peak during the ``with`` block."""
        self.peak = self._rss()
        self._stop.clear()
        t = threading.Thread(target=self._sample, daemon=True)
        t.start()
        try:
            yield self
        finally:
            self._stop.set()
            t.join()
            self.peak = max(self.peak, self._rss())


def crows_stand_in(path: Path) -> Path:
    """Write a CrowS-Pairs-format CSV of :data:`CROWS_PAIRS` pairs from the shipped stereotype pairs."""
    from circuits import data as D

    pairs = D.stereotype_pairs().pairs
    rows = []
    for i in range(CROWS_PAIRS):
        p, opening = pairs[i % len(pairs)], OPENINGS[(i // len(pairs)) % len(OPENINGS)]

        def cap(s: str) -> str:
            return s if opening else s[0].upper() + s[1:]

        more, less = (opening + (p.stereotype if opening else cap(p.stereotype)), opening + (p.anti_stereotype if opening else cap(p.anti_stereotype)))
        rows.append([str(i), more, less, "stereo", "gender", "[]", "a0", "[]"])
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "sent_more", "sent_less", "stereo_antistereo", "bias_type", "annotations", "anon_writer", "anon_annotators"])
        w.writerows(rows)
    return path


def timing_run(threads: int, crows: bool, cache_dir: Path | None = None) -> dict[str, Any]:
    """Time every part of one evaluation in this process (see the module docstring); the baseline is stored in ``cache_dir``."""
    import torch

    from circuits import data as D
    from circuits import model as M
    from circuits.editing import apply_edit, load_edit
    from circuits.evaluation import run as R
    from circuits.evaluation.benchmarks import ModelScorer, run_benchmark

    torch.set_num_threads(threads)
    rss = PeakRSS()
    rows: list[dict[str, Any]] = []

    def timed(part: str, name: str, fn: Callable[[], Any]) -> Any:
        with rss.watch():
            t = time.perf_counter()
            out = fn()
            seconds = time.perf_counter() - t
        rows.append({"part": part, "name": name, "seconds": round(seconds, 2), "peak_rss_mb": round(rss.peak / 2**20)})
        print(f"{part:16s} {name:28s} {seconds:8.1f} s  peak RSS {rss.peak / 2**20:6.0f} MB", file=sys.stderr, flush=True)
        return out

    model = timed("load", "smollm2-135m", lambda: M.load_model("smollm2-135m"))
    edit = load_edit(EDIT)
    suites = R.shipped_suites(model)
    with tempfile.TemporaryDirectory() as tmp:
        cache = cache_dir or Path(tmp) / "measurements"
        timed("baseline", "all measures (unedited)", lambda: R.measure(model, cache_dir=cache, suites=suites))
        with apply_edit(model, edit):
            for s in suites:
                timed("per_measure", f"suites:{s.name}", lambda s=s: R.measure(model, suites=[s], groups=("suites",)))
            for g in ("stereotype", "toxicity", "classification", "multiple_choice", "factual_qa", "text"):
                timed("per_measure", g, lambda g=g: R.measure(model, suites=[], groups=(g,)))
        windows = M.text_windows(model, D.english_eval(), window=256)[:16]
        timed("per_measure", "kl", lambda: R.neutral_kl(model, [edit], windows))
        report = timed("evaluate_cached", "evaluate (baseline cached)", lambda: R.evaluate(model, edit, baseline_cache=cache))
        if crows:
            path = crows_stand_in(Path(tmp) / "crows_pairs_stand_in.csv")
            scorer = ModelScorer(model)
            timed("crows-pairs", "unedited", lambda: run_benchmark("crows-pairs", path, scorer))
            with apply_edit(model, edit):
                timed("crows-pairs", "edited", lambda: run_benchmark("crows-pairs", path, scorer))
            try:  # the unedited answers cached (what `circuits eval --benchmark` reuses), where the code has it
                from circuits.evaluation.benchmarks.scorer import CachedScorer
            except ImportError:
                CachedScorer = None  # noqa: N806
            if CachedScorer is not None:
                run_benchmark("crows-pairs", path, CachedScorer(scorer, cache))
                timed("crows-pairs", "unedited (answers cached)", lambda: run_benchmark("crows-pairs", path, CachedScorer(scorer, cache)))
    primary = report.primary
    timings = getattr(report, "timings", None)
    return {
        "evaluate_timings": timings or {},
        "threads": threads,
        "load_average": os.getloadavg(),
        "rows": rows,
        "primary": {"name": primary.name, "before": primary.before, "after": primary.after},
        "measures": len(report.measures),
    }


def eval_run(threads: int, cache_dir: Path) -> dict[str, Any]:
    """``circuits eval`` of the committed edit in a fresh process with the baseline cached in ``cache_dir``: time, peak RSS, seconds per measure."""
    import resource

    import torch

    from circuits import model as M
    from circuits.editing import load_edit
    from circuits.evaluation import run as R

    torch.set_num_threads(threads)
    model = M.load_model("smollm2-135m")
    edit = load_edit(EDIT)
    t = time.perf_counter()
    report = R.evaluate(model, edit, baseline_cache=cache_dir)
    return {"part": "evaluate_fresh_process", "name": "evaluate (baseline cached), its own process", "seconds": round(time.perf_counter() - t, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "timings": dict(getattr(report, "timings", {})),
            "verdict": getattr(report, "verdict", None), "load_average": os.getloadavg()}


def scan_run(threads: int) -> dict[str, Any]:
    """Peak RSS of loading SmolLM2 and scanning gender-occupation (12 pairs, as the end-to-end test), for the memory goal."""
    import resource

    import torch

    from circuits import model as M
    from circuits.atlas.build import scan
    from circuits.suites import load_suite

    torch.set_num_threads(threads)
    t = time.perf_counter()
    model = M.load_model("smollm2-135m")
    scan(model, load_suite("gender-occupation"), max_pairs=2, progress=False)
    return {"part": "scan", "name": "gender-occupation, max_pairs=2", "seconds": round(time.perf_counter() - t, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


#: The vocabulary of Gemma 3 (262,144 tokens), on a tiny Llama: the memory of an evaluation's logits.
BIG_VOCAB = 262_144


def vocab_run(threads: int) -> dict[str, Any]:
    """Peak RSS of the text, stereotype, multiple-choice measures and the KL on a tiny model with Gemma 3's vocabulary size.

    Issue #32: on Gemma 3 270M the default evaluation peaked at 12.4 GB against 3.4 GB for the scan;
    the weights here are tiny, so the peak is the evaluation's own logits.
    """
    import resource

    import torch
    from transformers import AutoModelForCausalLM

    from circuits import data as D
    from circuits import model as M
    from circuits.editing import Edit
    from circuits.evaluation import run as R
    from circuits.model.loading import _boot
    from circuits.model.tiny import shipped_tokenizer, tiny_hf_config
    from circuits.sites import HeadRef

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(tiny_hf_config("llama", vocab_size=BIG_VOCAB, n_layers=2))
    prov = M.Provenance(source="<tiny llama, 262k vocabulary>", kind="tiny", architecture=type(hf).__name__)
    model = _boot(hf, shipped_tokenizer(), name="tiny-llama-262k", provenance=prov, recipe=None, dtype=torch.float32, prepend_bos=None)
    edit = Edit("scaling", (HeadRef(0, 1),), {}, model.name, M.fingerprint(model), hyperparameters={"alpha": 0.0})
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    R.measure(model, suites=[], groups=("stereotype", "multiple_choice", "text"))
    R.neutral_kl(model, [edit], M.text_windows(model, D.english_eval(), window=256)[:16])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"part": "vocab-262k", "name": "stereotype + multiple choice + text + KL, tiny Llama with a 262,144-token vocabulary",
            "seconds": round(time.perf_counter() - t, 2), "rss_before_mb": round(base / 1024), "peak_rss_mb": round(peak / 1024)}


def _raw(mode: str, tree: Path, threads: int, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run this script in ``mode`` (``--raw``, ``--scan-raw``, ``--vocab-raw``) on the code in ``tree``, in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "raw.json"
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
        subprocess.run([sys.executable, str(Path(__file__).resolve()), mode, str(out), "--threads", str(threads), *extra], cwd=tree, env=env, check=True)
        return json.loads(out.read_text())


def _export(rev: str, into: Path) -> Path:
    """The tree of git revision ``rev`` exported into ``into``."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _summary(raw: dict[str, Any]) -> dict[str, Any]:
    rows = raw["rows"]

    def total(part: str) -> float:
        return round(sum(r["seconds"] for r in rows if r["part"] == part), 1)

    fresh = [r for r in rows if r["part"] == "evaluate_fresh_process"]
    return {
        "baseline_seconds": total("baseline"),
        "per_measure_seconds": total("per_measure"),
        "evaluate_cached_seconds": total("evaluate_cached"),
        "evaluate_fresh_process_seconds": fresh[0]["seconds"] if fresh else None,
        "evaluate_fresh_process_peak_rss_mb": fresh[0]["peak_rss_mb"] if fresh else None,
        "crows_pairs_seconds": total("crows-pairs"),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, help="write this process's timing run to this JSON file and stop")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-crows", action="store_true", help="skip the CrowS-Pairs stand-in")
    parser.add_argument("--before-rev", help="also time the code of this git revision (exported, in a subprocess)")
    parser.add_argument("--before-json", type=Path, help="the raw output of an earlier --raw run of the code of --before-rev (instead of running it)")
    parser.add_argument("--scan-raw", type=Path, help="write the peak RSS of a scan in this process to this JSON file and stop")
    parser.add_argument("--vocab-raw", type=Path, help="write the peak RSS of measuring a 262k-vocabulary tiny model to this JSON file and stop")
    parser.add_argument("--eval-raw", type=Path, help="write a fresh-process evaluation with the baseline of --cache to this JSON file and stop")
    parser.add_argument("--cache", type=Path, help="measurement cache directory of --raw / --eval-raw")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    crows = not args.no_crows
    if args.raw:
        args.raw.write_text(json.dumps(timing_run(args.threads, crows, args.cache), indent=1) + "\n")
        return
    if args.eval_raw:
        args.eval_raw.write_text(json.dumps(eval_run(args.threads, args.cache)) + "\n")
        return
    if args.scan_raw:
        args.scan_raw.write_text(json.dumps(scan_run(args.threads)) + "\n")
        return
    if args.vocab_raw:
        args.vocab_raw.write_text(json.dumps(vocab_run(args.threads)) + "\n")
        return

    from circuits.results import provenance, write_result

    data: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = _export(args.before_rev, Path(tmp)) if args.before_rev else None
        if args.before_json:  # an earlier --raw run of the code of --before-rev
            data["before"] = json.loads(args.before_json.read_text())
        elif old_tree is not None:
            data["before"] = _raw("--raw", old_tree, args.threads, () if crows else ("--no-crows",))
        cache = Path(tmp) / "cache-after"
        data["after"] = _raw("--raw", ROOT, args.threads, ("--cache", str(cache)) + (() if crows else ("--no-crows",)))
        data["after"]["rows"].append(_raw("--eval-raw", ROOT, args.threads, ("--cache", str(cache))))
        data["summary"] = {k: _summary(v) for k, v in data.items()}
        data["scan"] = _raw("--scan-raw", ROOT, args.threads)  # the memory an evaluation must stay under
        data["vocab_262k"] = {"after": _raw("--vocab-raw", ROOT, args.threads)}
        if old_tree is not None:
            data["vocab_262k"]["before"] = _raw("--vocab-raw", old_tree, args.threads)
    if args.before_rev:
        data["before_rev"] = args.before_rev
    write_result(
        args.out, kind="evaluation-benchmark", title="Time and peak RSS of evaluating one edit on SmolLM2-135M, per measure",
        data=data, provenance=provenance(seeds=[0]),
    )
    print(json.dumps(data["summary"], indent=1))


if __name__ == "__main__":
    main()

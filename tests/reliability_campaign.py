"""Issue 30's "Done when" figures, measured: tracebacks, hangs, wrongly accepted inputs, overwritten inputs,
broken artifacts after kills.

Run ``OMP_NUM_THREADS=1 python -m tests.reliability_campaign [results/reliability.json]`` from the
repository root (about ten minutes on one thread); it writes the figures with the date, the command and
the git commit. It drives the same case functions as the fuzz and kill tests (:mod:`tests.test_fuzz`,
:mod:`tests.kill_writers`, the hand-written cases of :mod:`tests.model.test_validate_source`,
:mod:`tests.test_validation` and :mod:`tests.test_cli_validation`) at the counts of the issue's
measurement (3,259 atlases, 1,824 edits, >= 100 kills per artifact kind), and counts instead of stopping
at the first failure:

* **traceback**: an exception other than the artifact's own error escaped a loader, a check or the CLI;
* **hang**: a case ran past its time limit (:data:`tests.test_fuzz.CASE_SECONDS`);
* **wrongly accepted**: an input was accepted but could not be used (an atlas that does not render or
  cannot be written back, an edit giving non-finite logits or leaving the model changed, a model that
  validates but does not load), or an error did not name the file;
* **overwritten input**: a command changed one of its inputs, or replaced a device, FIFO or socket;
* **late check**: a bad invocation reached model loading;
* **broken artifact**: after a SIGKILL mid-write, the artifact was neither the old nor the new version.

Outputs over inputs and failed writes use a real full file system and a read-only one (tmpfs, when this
process may mount; else the write errors are injected).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Cases per strategy: (strategy count, examples each). Atlas 3 × 1,100 ≥ 3,259; edits 3 × 620 ≥ 1,824.
COUNTS = {"atlases": 1100, "edits": 620, "suites": 500, "checkpoints": 500, "cli_arguments": 1000, "model_sources": 200}
KILLS = 200


class Tally:
    """Outcomes of one category's cases."""

    def __init__(self, name: str):
        self.name = name
        self.outcomes: Counter[str] = Counter()
        self.examples: list[str] = []

    def run(self, case: Callable[[], str]) -> None:
        """Run one case and count its outcome (never raises: every failure is counted)."""
        from tests.fuzz import Hang

        try:
            self.outcomes[case()] += 1
        except Hang as e:
            self._bad("hangs", e)
        except AssertionError as e:
            text = str(e)
            kind = "overwritten_inputs" if "input was changed" in text else "late_checks" if "model loaded" in text else "wrongly_accepted"
            self._bad(kind, e)
        except Exception as e:  # noqa: BLE001 - every escaped exception is a traceback, counted
            self._bad("tracebacks", e)

    def _bad(self, kind: str, e: BaseException) -> None:
        self.outcomes[kind] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{kind}: {type(e).__name__}: {str(e)[:300]}")

    def as_dict(self) -> dict[str, Any]:
        bad = ("tracebacks", "hangs", "wrongly_accepted", "overwritten_inputs", "late_checks")
        return {"cases": sum(self.outcomes.values()), **{k: self.outcomes.get(k, 0) for k in bad},
                "outcomes": dict(sorted(self.outcomes.items())), "examples": self.examples}


def _hypothesis(tally: Tally, strategy: Any, n: int, case: Callable[..., str], *, unpack: bool = False) -> None:
    """Draw ``n`` examples (deterministically, as the fuzz tests) and count each case's outcome."""
    from hypothesis import given

    from tests.test_fuzz import _settings

    @_settings(n)
    @given(strategy)
    def drive(value: Any) -> None:
        tally.run(lambda: case(*value) if unpack else case(value))

    drive()


# --- fuzzed loaders ---------------------------------------------------------------------------------


def atlases() -> Tally:
    from hypothesis import strategies as st

    from tests import test_fuzz as F
    from tests.fuzz import atlas_semantic, damaged, mutated_json

    t, n = Tally("atlases"), COUNTS["atlases"]
    _hypothesis(t, st.sampled_from([F.ATLAS, F.ATLAS_0_1]).flatmap(mutated_json), n, F.atlas_case)
    _hypothesis(t, damaged(json.dumps(F.ATLAS, indent=1).encode()), n, F.atlas_case)
    _hypothesis(t, atlas_semantic(F.ATLAS), n, F.atlas_case)
    return t


def edits() -> Tally:
    from hypothesis import strategies as st
    from safetensors.torch import save as st_save

    from tests import test_fuzz as F
    from tests.fuzz import HYPERPARAMETER_VALUES, damaged, dumps_special, edit_tensors, mutated_json

    t, n = Tally("edits"), COUNTS["edits"]
    made = F._model_edits()
    _hypothesis(t, st.tuples(st.sampled_from([(F.MANIFEST, F.TENSORS), *made]).flatmap(lambda mt: st.tuples(mutated_json(mt[0]), st.just(mt[1]))), st.booleans()),
                n, lambda case, fix: F.edit_case(case[0], case[1], fix), unpack=True)
    _hypothesis(t, st.tuples(st.one_of(damaged(F.TENSORS), F.tensor_dicts, edit_tensors().map(st_save)), st.sampled_from([F.MANIFEST, *(m for m, _ in made)]), st.booleans()),
                n, lambda data, base, fix: F.edit_case(json.dumps(base).encode(), data, fix), unpack=True)
    values = st.dictionaries(st.sampled_from(["alpha", "coefficient", "mode", "seed", "rank", "k"]), st.sampled_from(HYPERPARAMETER_VALUES), min_size=1, max_size=2)
    _hypothesis(t, st.tuples(st.sampled_from(made), values), n,
                lambda case, v: F.edit_case(dumps_special({**case[0], "hyperparameters": {**case[0]["hyperparameters"], **v}}), case[1], False), unpack=True)
    return t


def suites() -> Tally:
    from hypothesis import strategies as st

    from tests import test_fuzz as F
    from tests.fuzz import damaged, mutated_json, text_damaged

    t, n = Tally("suites"), COUNTS["suites"]

    def structural(case: tuple[str, bytes]) -> str:
        suffix, data = case
        if suffix == ".jsonl":
            data = b"\n".join(F._jsonl_lines(data))
        return F.suite_case(suffix, data)

    _hypothesis(t, st.sampled_from([".jsonl", ".json"]).flatmap(lambda s: st.tuples(st.just(s), mutated_json(F.RECORDS if s == ".jsonl" else json.loads(F.SUITE_FILES[".json"])))),
                n, structural)
    _hypothesis(t, st.sampled_from(sorted(F.SUITE_FILES)).flatmap(lambda s: st.tuples(st.just(s), damaged(F.SUITE_FILES[s]))), n, F.suite_case, unpack=True)
    _hypothesis(t, st.sampled_from(sorted(F.SUITE_FILES)).flatmap(lambda s: st.tuples(st.just(s), text_damaged(F.SUITE_FILES[s]))), n, F.suite_case, unpack=True)
    return t


def checkpoints() -> Tally:
    from tests import test_fuzz as F
    from tests.fuzz import damaged

    t, n = Tally("checkpoints"), COUNTS["checkpoints"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _hypothesis(t, damaged(F.CHECKPOINT), n, F.checkpoint_case)
        _hypothesis(t, F.checkpoint_dicts, n, F.checkpoint_case)
    return t


def model_sources() -> Tally:
    """The hand-written damaged directories and GGUF files, then fuzzed configs, weights, tokenizers, GGUF."""
    import shutil

    from hypothesis import strategies as st

    from circuits import model as M
    from circuits.model.tiny import save_tiny_hf
    from tests import test_fuzz as F
    from tests.fuzz import damaged, gguf_damaged, mutated_json
    from tests.model import test_validate_source as V

    t, n = Tally("model_sources"), COUNTS["model_sources"]
    with tempfile.TemporaryDirectory() as d:
        llama, gpt2 = save_tiny_hf("llama", Path(d) / "llama"), save_tiny_hf("gpt2", Path(d) / "gpt2")

        def written(name: str, damage: Callable[[Path, Path], Any], words: list[str]) -> str:
            target = Path(d) / name.replace(" ", "_")
            shutil.copytree(llama, target)
            damage(target, gpt2)
            for check in (M.validate_source, M.load_model):
                try:
                    check(str(target))
                except M.ModelLoadError as e:
                    assert all(w in str(e) for w in words) and str(target) in str(e), f"{name}: {e}"
                    continue
                raise AssertionError(f"{name}: accepted")
            return "refused"

        for name, damage, words in V.CASES:
            t.run(lambda: written(name, damage, words))
        for name, data, words in V.GGUF_CASES:
            def gguf(data: bytes = data, words: str = words) -> str:
                path = Path(d) / "bad.gguf"
                path.write_bytes(data)
                try:
                    M.validate_source(path, cache_dir=Path(d) / "cache")
                except M.ModelLoadError as e:
                    assert words in str(e) or words.split()[0] in str(e), str(e)
                    return "refused"
                raise AssertionError(f"GGUF case accepted: {data[:40]!r}")

            t.run(gguf)
        t.run(_empty_source)
    files = F.model_files()
    directory = {k: v for k, v in files.items() if k != "tiny.gguf"}
    _hypothesis(t, mutated_json(json.loads(files["config.json"])), n, lambda data: F.model_case({**directory, "config.json": data}))
    _hypothesis(t, st.sampled_from(["model.safetensors", "tokenizer.json", "tokenizer_config.json"]).flatmap(lambda f: st.tuples(st.just(f), damaged(files[f]))),
                n, lambda name, data: F.model_case({**directory, name: data}), unpack=True)
    _hypothesis(t, gguf_damaged(files["tiny.gguf"]), n, lambda data: F.model_case({"tiny.gguf": data}))
    return t


def _empty_source() -> str:
    from circuits import model as M

    for source in ("", " ", "smollm2-135m "):
        try:
            M.load_model(source)
        except M.ModelLoadError:
            continue
        raise AssertionError(f"model source {source!r} accepted")
    return "refused"


# --- the CLI --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _no_model_loads() -> Iterator[None]:
    import circuits.model
    from tests.test_fuzz import ModelLoaded

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ModelLoaded

    real = circuits.model.load_model
    circuits.model.load_model = refuse
    try:
        yield
    finally:
        circuits.model.load_model = real


def cli_arguments() -> Tally:
    from hypothesis import strategies as st
    from typer.testing import CliRunner

    from tests import test_fuzz as F

    t = Tally("cli_arguments")
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as d, _no_model_loads():
        w = F._cli_world(Path(d))
        bad = F._bad_options(w)
        commands = st.sampled_from(sorted(bad)).flatmap(lambda c: st.tuples(st.just(c), st.lists(bad[c], min_size=1, max_size=3)))
        _hypothesis(t, commands, COUNTS["cli_arguments"], lambda command, inj: F.cli_case(runner, w, F._base(command, w) + [a for i in inj for a in i]), unpack=True)
    return t


def _mount(kind: str, where: Path) -> bool:
    """Mount a 64 kB tmpfs at ``where``, filled (``full``) or read-only (``ro``); ``False`` if this process may not."""
    where.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True).returncode != 0:
        return False
    if kind == "full":
        with contextlib.suppress(OSError), open(where / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, capture_output=True)
    return True


def outputs() -> Tally:
    """Every command pointed at each of its inputs (five spellings), at devices, FIFOs, sockets and
    directories, and at a full and a read-only file system."""
    from typer.testing import CliRunner

    from circuits.cli import app
    from circuits.editing import Edit, save_edit
    from circuits.sites import HeadRef
    from tests.atlas.test_schema import make_atlas
    from tests.test_cli_validation import _over_inputs, _special_outputs

    t = Tally("outputs")
    runner = CliRunner()
    t.mounts = {}  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as d, _no_model_loads():
        root = Path(d)
        files = {"atlas": str(make_atlas().save(root / "a.atlas.json")), "atlas2": str(make_atlas().save(root / "b.atlas.json")), "tmp": root,
                 "edit": str(save_edit(Edit("scaling", (HeadRef(0, 1),), {}, "tiny", "sha256:" + "0" * 64, hyperparameters={"alpha": 0.5}), root / "e.json"))}
        (root / "adir").mkdir()

        def over(args: list[str], target: str, spelling: str, i: int) -> str:
            before = open(target, "rb").read()
            out = {"same": target, "dotted": str(root / "." / "adir" / ".." / Path(target).name), "relative": os.path.relpath(target)}.get(spelling)
            if out is None:
                out = str(root / f"{spelling}-{i}{Path(target).suffix}")
                if spelling == "symlink":
                    os.symlink(target, out)
                elif spelling == "hardlink":
                    os.link(target, out)
                else:  # a link to the directory, then the name
                    link = root / f"dirlink-{i}"
                    os.symlink(root, link)
                    out = str(link / Path(target).name)
            r = runner.invoke(app, [out if a == "OUT" else a for a in args])
            assert open(target, "rb").read() == before, f"an input was changed by {args} ({spelling})"
            assert r.exit_code == 2 and "the input" in r.stderr, f"{args} ({spelling}): exit {r.exit_code}, {r.stderr[:200]}"
            return "refused"

        for i, (args, target) in enumerate(_over_inputs(files)):
            for spelling in ("same", "symlink", "hardlink", "dotted", "relative", "dirlink"):
                t.run(lambda: over(args, target, spelling, i))
        (root / "specials" / "adir").mkdir(parents=True)
        specials, sock = _special_outputs(root / "specials")
        try:
            for what, path in specials.items():
                for args in (["report", files["atlas"], "-o", str(path)], ["atlas", "schema", "-o", str(path)], ["scan", "-o", str(path)],
                             ["trace", "-o", str(path)], ["atlas", "merge", files["atlas"], "-o", str(path)], ["circuit", "-o", str(path)],
                             ["edit", files["atlas"], "-o", str(path)], ["eval", "--edit", files["edit"], "--suite", "gender-occupation", "-o", str(path)]):
                    def special(args: list[str] = args, path: Path = path, what: str = what) -> str:
                        mode = os.stat(path).st_mode
                        r = runner.invoke(app, args)
                        assert os.stat(path).st_mode == mode, f"an input was changed: {what} replaced by {args}"
                        assert r.exit_code == 2 and "written" not in r.stdout, f"{args}: exit {r.exit_code}"
                        return "refused"

                    t.run(special)
        finally:
            sock.close()
        for kind in ("full", "ro"):
            where = root / f"mnt-{kind}"
            mounted = _mount(kind, where)
            t.mounts[kind] = "tmpfs" if mounted else "injected"  # type: ignore[attr-defined]
            try:
                for args in (["report", files["atlas"], "-o", "OUT"], ["atlas", "schema", "-o", "OUT"], ["atlas", "merge", files["atlas"], "-o", "OUT"]):
                    def failing(args: list[str] = args, kind: str = kind, where: Path = where, mounted: bool = mounted) -> str:
                        out = where / "out.file"
                        code = errno.ENOSPC if kind == "full" else errno.EROFS
                        with _injected(code) if not mounted else contextlib.nullcontext():
                            r = runner.invoke(app, [str(out) if a == "OUT" else a for a in args])
                        refused = f"cannot write {out}" in r.stderr or "is not writable" in r.stderr  # read-only: refused by the output check
                        assert r.exit_code == 2 and refused and "written" not in r.stdout, f"{args} on a {kind} fs: {r.stderr[:200]}"
                        assert not out.exists() and not [p for p in where.iterdir() if ".tmp-" in p.name], "a partial file was left"
                        return "refused"

                    t.run(failing)
            finally:
                if mounted:
                    subprocess.run(["umount", str(where)], capture_output=True)
    return t


@contextlib.contextmanager
def _injected(code: int) -> Iterator[None]:
    real = os.fsync

    def fail(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    os.fsync = fail
    try:
        yield
    finally:
        os.fsync = real


# --- kills ----------------------------------------------------------------------------------------------


def kills() -> dict[str, Any]:
    """>= 100 SIGKILLs per artifact kind (:mod:`tests.kill_writers`), two processes at once."""
    from tests.kill_writers import write_atlas_versions
    from tests.test_reliability_writes import GROUPS

    with tempfile.TemporaryDirectory() as d:
        versions = write_atlas_versions(Path(d))
        procs = [subprocess.Popen([sys.executable, "-m", "tests.kill_writers", str(versions), ",".join(g), str(KILLS), str(seed)],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed, g in enumerate(GROUPS)]
        results: dict[str, Any] = {}
        for p in procs:
            out, err = p.communicate(timeout=1800)
            if p.returncode != 0:
                raise RuntimeError(err[-2000:])
            results.update(json.loads(out.strip().splitlines()[-1]))
    return results


# --- main -----------------------------------------------------------------------------------------------


def main(out: Path) -> dict[str, Any]:
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    start, cpu = time.perf_counter(), time.process_time()
    categories: dict[str, Any] = {}
    for fn in (outputs, cli_arguments, model_sources, edits, atlases, suites, checkpoints):
        t0 = time.perf_counter()
        tally = fn()
        categories[tally.name] = {**tally.as_dict(), "seconds": round(time.perf_counter() - t0, 1)}
        if hasattr(tally, "mounts"):
            categories[tally.name]["write_errors_from"] = tally.mounts
        print(f"{tally.name}: {json.dumps({k: v for k, v in categories[tally.name].items() if k != 'examples'})}", flush=True)
    k0 = time.perf_counter()
    killed = kills()
    artifacts = {k: v for k, v in killed.items() if k != "control"}
    print(f"kills: {json.dumps({k: (v['trials'], v['failures']) for k, v in killed.items()})}", flush=True)
    bad = ("tracebacks", "hangs", "wrongly_accepted", "overwritten_inputs", "late_checks")
    totals = {"cases": sum(c["cases"] for c in categories.values()), **{k: sum(c[k] for c in categories.values()) for k in bad},
              "kills": sum(v["trials"] for v in artifacts.values()), "broken_artifacts": sum(v["failures"] for v in artifacts.values()),
              "min_kills_per_kind": min(v["trials"] for v in artifacts.values()),
              "temporaries_left_after_next_write": sum(v["left_after_next_write"] for v in artifacts.values())}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip())
    result = {
        "issue": 30,
        "date": datetime.date.today().isoformat(),
        "command": "OMP_NUM_THREADS=1 python -m tests.reliability_campaign " + shlex.join(sys.argv[1:]),
        "git_commit": commit + ("-dirty" if dirty else ""),
        "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - start, 1),
        "cpu_seconds": round(time.process_time() - cpu + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime, 1),  # with the kill processes
        "totals": totals,
        "categories": categories,
        "kills": {**killed, "seconds": round(time.perf_counter() - k0, 1)},
        "notes": "control is the edit writer without the commit protocol: its failures show the kill test detects mixed versions; "
                 "it is not counted in broken_artifacts.",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    # python -m tests.reliability_campaign [OUT.json] [--scale F]  (F < 1: a quick trial at a fraction of the counts)
    args = sys.argv[1:]
    if "--scale" in args:
        i = args.index("--scale")
        scale = float(args[i + 1])
        del args[i : i + 2]
        COUNTS.update({k: max(2, int(v * scale)) for k, v in COUNTS.items()})
        KILLS = max(4, int(KILLS * scale))
    target = Path(args[0]) if args else ROOT / "results" / "reliability.json"
    figures = main(target)
    print(json.dumps(figures["totals"], indent=2))

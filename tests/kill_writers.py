"""Kill writers with SIGKILL at random points and check that only the old or the new version is found.

Run as ``python -m tests.kill_writers VERSIONS_DIR [KINDS [TRIALS [SEED]]]``
(``tests/test_reliability_writes.py`` does); prints one JSON object: per artifact kind, the number of
kills, how many found the old (``A``) or the new (``B``) version, how many kills interrupted a write (a
temporary was left behind), the failures, and whether one more write left any temporary.

One process per group of kinds builds each artifact from tiny data (a tiny Hugging Face model for the
export; never the real model). Per round it forks one writer per slot (a copy of the artifact in its
own directory); each writes in a loop, alternating versions, starting with B over A, and is killed with
SIGKILL after a random delay counted from when it runs, spanning its first write or two. The parent
then reads each artifact as a user would (:meth:`Atlas.load`, :func:`load_edit`, :func:`load_layer`, a
byte comparison for the report, every file of each export directory) and requires version A or B,
whole. Forking a ready process keeps a kill to tens of milliseconds; kinds import only what they write
with, since a fork costs more the larger the process.

Kinds: ``atlas`` (:meth:`Atlas.save`), ``edit`` (:func:`save_edit`, manifest + tensors), ``checkpoint``
(:func:`circuits.probing.checkpoints.save_layer`), ``report`` (:func:`write_report`, rendering memoised
so kills land in the write), ``export`` (:func:`export_hf`: fresh directories, each whole or absent)
and ``merge`` (``circuits atlas merge`` through the CLI: its output checks and its write).
``control`` is the previous edit writer (two atomic files, no commit protocol): it shows that the
test detects mixed pairs.
"""

from __future__ import annotations

import gc
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

KINDS = ("atlas", "edit", "checkpoint", "report", "export", "merge", "control")
#: Copies of each artifact written (and killed) at the same time.
SLOTS = 4


def _temporaries(directory: Path) -> int:
    from circuits.atomic import stale_temporaries

    return sum(len(stale_temporaries(directory, tag=t, dead=False)) for t in ("tmp", "pending"))


class Kind:
    """One artifact: ``write(i)`` writes version ``i % 2``; ``check()`` returns ``"A"``/``"B"`` or raises."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True)

    def write(self, i: int) -> None:
        raise NotImplementedError

    def check(self) -> str:
        raise NotImplementedError

    def reset(self) -> None:
        """After a trial (export: remove checked directories)."""


def _versioned(found: object, versions: tuple[object, object], equal: Callable[[object, object], bool]) -> str:
    for name, v in zip("AB", versions):
        if equal(found, v):
            return name
    raise AssertionError("neither the old nor the new version")


class AtlasKind(Kind):
    def __init__(self, directory: Path, versions: Path):
        from circuits.atlas.schema import Atlas

        super().__init__(directory)
        self.versions = (Atlas.load(versions / "A.atlas.json"), Atlas.load(versions / "B.atlas.json"))
        self.path = self.dir / "x.atlas.json"
        self.versions[0].save(self.path)

    def write(self, i: int) -> None:
        self.versions[i % 2].save(self.path)

    def check(self) -> str:
        from circuits.atlas.schema import Atlas

        return _versioned(Atlas.load(self.path), self.versions, lambda x, y: x == y)


class MergeKind(Kind):
    """``circuits atlas merge ATLAS -o OUT`` run through the CLI (its output check, its write), alternating inputs."""

    def __init__(self, directory: Path, versions: Path):
        from circuits.atlas.schema import Atlas

        super().__init__(directory)
        self.inputs = (versions / "A.atlas.json", versions / "B.atlas.json")
        self.versions = tuple(Atlas.load(p) for p in self.inputs)
        self.path = self.dir / "merged.atlas.json"
        self.versions[0].save(self.path)
        from circuits.cli import app  # imported before the forks

        self.app = app

    def write(self, i: int) -> None:
        try:
            self.app(["atlas", "merge", str(self.inputs[i % 2]), "-o", str(self.path)], standalone_mode=False)
        except SystemExit as e:  # typer's exit: 0 is a finished merge
            if e.code:
                raise

    def check(self) -> str:
        from circuits.atlas.schema import Atlas

        return _versioned(Atlas.load(self.path), self.versions, lambda x, y: x == y)


class EditKind(Kind):
    def __init__(self, directory: Path, *, protocol: str = "pair"):
        import torch

        from circuits.editing import Edit, save_edit
        from circuits.sites import ResidRef

        super().__init__(directory)
        g = torch.Generator().manual_seed(0)
        self.versions = tuple(
            Edit(kind="steering", components=(ResidRef(1, None),), tensors={"vector": torch.randn(n, generator=g)}, model_name="tiny",
                 model_fingerprint="sha256:" + "0" * 64, hyperparameters={"coefficient": c})
            for n, c in ((60_000, -1.0), (40_000, 2.0))
        )
        self.path, self.protocol = self.dir / "x.json", protocol
        save_edit(self.versions[0], self.path)

    def write(self, i: int) -> None:
        from circuits.editing import save_edit

        if self.protocol == "pair":
            save_edit(self.versions[i % 2], self.path)
        else:  # the writer before the commit protocol: tensors, then manifest, each atomic on its own
            from circuits.atomic import atomic_write_bytes
            from circuits.editing.edit import EditManifest
            from safetensors.torch import save as st_save
            import hashlib

            e = self.versions[i % 2]
            blob = st_save(dict(e.tensors))
            m = EditManifest(kind=e.kind, form=e.form, objective=e.objective, components=[str(c) for c in e.components], hyperparameters=e.hyperparameters, model_name=e.model_name,
                             model_fingerprint=e.model_fingerprint, suite={}, tensors_sha256=hashlib.sha256(blob).hexdigest())
            atomic_write_bytes(self.path.with_suffix(".safetensors"), blob)
            atomic_write_bytes(self.path, m.model_dump_json(indent=2).encode())

    def check(self) -> str:
        import torch

        from circuits.editing import load_edit

        found = load_edit(self.path)

        def equal(x, y) -> bool:
            return x.hyperparameters == y.hyperparameters and torch.equal(x.tensors["vector"], y.tensors["vector"])

        return _versioned(found, self.versions, equal)


class CheckpointKind(Kind):
    def __init__(self, directory: Path):
        import torch

        from circuits.probing import checkpoints

        super().__init__(directory)
        g = torch.Generator().manual_seed(1)
        self.versions = (torch.randn(4, 20_000, generator=g), torch.randn(4, 20_000, generator=g))
        self.path = checkpoints.layer_path(self.dir, 0)
        checkpoints.save_layer(self.path, self.versions[0])

    def write(self, i: int) -> None:
        from circuits.probing import checkpoints

        checkpoints.save_layer(self.path, self.versions[i % 2])

    def check(self) -> str:
        import torch

        from circuits.probing import checkpoints

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a discarded checkpoint would be a failure here
            rows = checkpoints.load_layer(self.path, (4, 20_000))
        if rows is None:
            raise AssertionError("no checkpoint")
        return _versioned(rows, self.versions, torch.equal)


class ReportKind(Kind):
    def __init__(self, directory: Path, versions: Path):
        from circuits.atlas import report

        super().__init__(directory)
        atlases = AtlasKind(directory / "atlases", versions).versions
        self.html = {id(a): report.render(a) for a in atlases}
        self.atlases = atlases
        self.versions = tuple(self.html[id(a)].encode() for a in atlases)
        self.path = report.write_report(atlases[0], self.dir / "report.html")

    def write(self, i: int) -> None:
        from circuits.atlas import report

        report.render = lambda atlas: self.html[id(atlas)]  # memoised: kills land in the write
        report.write_report(self.atlases[i % 2], self.path)

    def check(self) -> str:
        return _versioned(self.path.read_bytes(), self.versions, lambda x, y: x == y)


class ExportKind(Kind):
    def __init__(self, directory: Path, model: object):
        from circuits import model as M
        from circuits.editing import Edit
        from circuits.editing.export import export_hf
        from circuits.sites import HeadRef

        super().__init__(directory)
        self.model = model
        zero = Edit(kind="ablation", components=(HeadRef(0, 1), HeadRef(1, 2)), tensors={}, model_name=self.model.name,
                    model_fingerprint=M.fingerprint(self.model), hyperparameters={"mode": "zero"})
        self.edits = ([], [zero])
        self.versions = tuple(_files(export_hf(self.model, e, self.dir / f"ref-{n}")) for n, e in zip("AB", self.edits))
        self.out = self.dir / "exports"
        self.out.mkdir()

    def write(self, i: int) -> None:
        from circuits.editing.export import export_hf

        export_hf(self.model, self.edits[i % 2], self.out / f"x{i}")

    def check(self) -> str:
        found = ""
        for d in sorted(p for p in self.out.iterdir() if not p.name.startswith(".")):
            version = "AB"[int(d.name[1:]) % 2]
            if _files(d) != self.versions["AB".index(version)]:
                raise AssertionError(f"{d.name} is not a whole export")
            found = version
        return found or "A"  # no directory yet: the state before the first export (A's slot)

    def reset(self) -> None:
        for d in self.out.iterdir():
            if not d.name.startswith("."):
                shutil.rmtree(d)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _tiny_hf():
    """A 2-layer Llama of vocabulary 64 with a word-level tokenizer (exports in milliseconds; no download)."""
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    from circuits.model.hooked import Provenance
    from circuits.model.boot import boot
    from circuits.model.tiny import tiny_hf_config

    with tempfile.TemporaryDirectory() as d:  # TransformerLens reloads the tokenizer from its directory
        words = Tokenizer(WordLevel({f"w{i}": i for i in range(64)}, unk_token="w0"))
        PreTrainedTokenizerFast(tokenizer_object=words, unk_token="w0", pad_token="w1", eos_token="w2", bos_token="w3").save_pretrained(d)
        tokenizer = AutoTokenizer.from_pretrained(d)
        torch.manual_seed(0)
        hf = AutoModelForCausalLM.from_config(tiny_hf_config("llama", vocab_size=64))
        lm = boot(hf, tokenizer, name="tiny-llama-64", provenance=Provenance(source="<tiny>", kind="tiny", architecture=type(hf).__name__),
                   recipe=None, dtype=torch.float32)
    lm.tokenizer = None  # the export is the model alone
    return lm


def _child(kind: Kind, ready: int) -> None:
    code = 0
    gc.disable()
    try:
        os.write(ready, b"1")  # the delay starts now, not when the fork returned
        i = 1
        while True:
            kind.write(i)
            i += 1
    except BaseException:  # noqa: BLE001 - reported through the exit status
        code = 3
    finally:
        os._exit(code)


def _spawn(kind: Kind) -> int:
    """Fork a writer of ``kind`` and return its pid once it runs."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(kind, w)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    return pid


def _left(kind: Kind) -> int:
    return _temporaries(kind.dir) + _temporaries(kind.dir / "exports")


def run(name: str, slots: list[Kind], trials: int, rng: random.Random) -> dict[str, object]:
    """Fork, kill after a random delay, check; ``trials`` times.

    Each slot is one copy of the artifact in its own directory; the slots' writers run at the same
    time (one kill per slot per round), so their forks, delays and exits overlap.
    """
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    start = time.perf_counter()
    for i in range(3):
        slots[0].write(i)
    slots[0].reset()
    cycle = (time.perf_counter() - start) / 3
    counts = {"trials": trials, "A": 0, "B": 0, "interrupted": 0, "failures": 0, "examples": []}
    gc.collect()
    gc.freeze()  # children do not copy the parent's heap by collecting it
    done = 0
    while done < trials and (name == "control" or not counts["failures"]):
        batch = slots[: trials - done]
        kills = []
        for k in batch:
            pid = _spawn(k)  # kill anywhere in its first write (B) or two, counted from when it runs
            kills.append((time.perf_counter() + rng.uniform(0, 1.5 * cycle), pid, k))
        kills.sort(key=lambda x: x[0])
        for deadline, pid, _ in kills:
            time.sleep(max(0.0, deadline - time.perf_counter()))
            os.kill(pid, signal.SIGKILL)
        for _, pid, kind in kills:
            _, status = os.waitpid(pid, 0)
            if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
                raise RuntimeError(f"{name}: the writer stopped on its own (status {status})")
            counts["interrupted"] += _left(kind) > 0
            try:
                counts[kind.check()] += 1
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                counts["failures"] += 1
                if len(counts["examples"]) < 3:
                    counts["examples"].append(f"{type(e).__name__}: {e}"[:300])
            kind.reset()
        done += len(batch)
    counts["trials"] = done
    # The next start: one more write removes what killed writers left (pending manifests included).
    for kind in slots:
        kind.write(0)
    counts["left_after_next_write"] = sum(_left(k) for k in slots)
    counts["seconds"] = round(time.perf_counter() - start, 1)
    counts["cycle_ms"] = round(1000 * cycle, 1)
    return counts


def write_atlas_versions(directory: Path) -> Path:
    """Write the two atlases the atlas and report kinds alternate between (``A``/``B.atlas.json``)."""
    from tests.atlas.test_report import with_trace
    from tests.atlas.test_schema import make_atlas

    a = make_atlas()
    a.save(directory / "A.atlas.json")
    with_trace(a.model_copy(update={"provenance": a.provenance.model_copy(update={"command": "version B"})})).save(directory / "B.atlas.json")
    return directory


def main(versions: Path, kinds: tuple[str, ...] = KINDS, trials: int = 200, seed: int = 0) -> dict[str, dict[str, object]]:
    """Run the given kinds, in order; returns ``{kind: counts}``.

    Each kind imports only what it writes with (the atlas and report kinds not even torch), since the
    cost of a fork grows with the process's memory.

    Args:
        versions: A directory from :func:`write_atlas_versions`.
        kinds: Kinds to run.
        trials: Kills per kind (a quarter as many, at least 50, for ``control``).
        seed: Seed of the kill delays.
    """
    # No progress bars: tqdm's lock is shared across fork, and a child killed while holding it would
    # block the parent's next bar forever.
    os.environ["TQDM_DISABLE"] = "1"
    warnings.filterwarnings("ignore")
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="kill-writers-"))
    model = _tiny_hf() if "export" in kinds else None
    makers: dict[str, Callable[[Path], Kind]] = {
        "atlas": lambda d: AtlasKind(d, versions), "report": lambda d: ReportKind(d, versions), "edit": EditKind,
        "checkpoint": CheckpointKind, "export": lambda d: ExportKind(d, model), "control": lambda d: EditKind(d, protocol="two files"),
        "merge": lambda d: MergeKind(d, versions),
    }
    try:
        return {
            k: run(k, [makers[k](root / k / str(j)) for j in range(SLOTS)], trials if k != "control" else max(50, trials // 4), rng)
            for k in kinds
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    # python -m tests.kill_writers VERSIONS_DIR [KINDS [TRIALS [SEED]]]  (VERSIONS_DIR is filled if empty)
    args = sys.argv[1:]
    where = Path(args[0])
    if not (where / "A.atlas.json").exists():
        write_atlas_versions(where)
    chosen = tuple(args[1].split(",")) if len(args) > 1 else KINDS
    print(json.dumps(main(where, chosen, int(args[2]) if len(args) > 2 else 200, int(args[3]) if len(args) > 3 else 0)))

"""Kill tests: a writer killed with SIGKILL at a random point leaves the old or the new version, never a mix.

:mod:`tests.kill_writers` forks a writer per trial and kills it after a random delay; 200 kills per
artifact kind in the slow tier (atlas, edit pair, checkpoint, report, export directory, and an
``atlas merge`` through the CLI), 24 in the quick run, both in the slow tier (``make test``; kill tests
are not part of ``make test-fast``), run in two processes at once so they stay within a few minutes on two cores. After each kill the artifact is read as a user
would read it and must be the old or the new version, whole; after the runs, one more write must leave
no temporary behind. The control (the edit writer before the commit protocol: two files, each atomic
on its own) must be caught mixing versions, which shows the test can see a mix.

Run ``pytest -s tests/test_reliability_writes.py`` to print the counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kill_writers import write_atlas_versions

ROOT = Path(__file__).resolve().parents[1]
#: Kills per artifact kind: the slow tier's count, and the default tier's.
TRIALS = {"full": 200, "quick": 24}
ARTIFACTS = ("atlas", "edit", "checkpoint", "report", "export", "merge")
#: Two processes of about equal length (the export's forks are the heaviest).
GROUPS = (("export", "control", "merge"), ("atlas", "report", "edit", "checkpoint"))


@pytest.fixture(scope="module", params=[pytest.param("quick", marks=pytest.mark.slow), pytest.param("full", marks=pytest.mark.slow)])
def kills(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    trials = TRIALS[request.param]
    versions = write_atlas_versions(tmp_path_factory.mktemp("versions"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.kill_writers", str(versions), ",".join(group), str(trials), str(seed)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for seed, group in enumerate(GROUPS)
    ]
    results: dict[str, dict] = {}
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
        results.update(json.loads(out.strip().splitlines()[-1]))
    for kind, r in results.items():
        print(f"{kind}: {r['trials']} kills, old {r['A']}, new {r['B']}, mid-write {r['interrupted']}, failures {r['failures']}, {r['seconds']} s")
    results["_trials"] = trials  # type: ignore[assignment]
    return results


@pytest.mark.parametrize("kind", ARTIFACTS)
def test_a_killed_writer_leaves_the_old_or_the_new_version(kills, kind):
    r = kills[kind]
    assert r["failures"] == 0, r["examples"]
    assert r["trials"] >= kills["_trials"] and r["A"] + r["B"] == r["trials"]
    if kills["_trials"] >= TRIALS["full"]:
        assert r["interrupted"] > 0  # some kills landed while a temporary existed: mid-write
    else:
        # 24 kills can all miss a short write window by chance (merge: 0 of 24 once under load, its write
        # being a small part of a cycle spent reading and merging): the quick tier asks for mid-write kills
        # somewhere, the full tier (200 kills, run by `make test`) for each kind.
        assert sum(kills[k]["interrupted"] for k in ARTIFACTS) > 0
    assert r["left_after_next_write"] == 0  # the next write removed what the killed ones left


def test_the_kill_test_catches_a_writer_without_a_commit_protocol(kills):
    assert kills["control"]["failures"] > 0

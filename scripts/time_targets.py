"""Time `make` targets on this machine and record them as results files (the README's and docs' test and scan times).

    .venv/bin/python scripts/time_targets.py test-fast test scan     # each alone, one after another
    .venv/bin/python scripts/time_targets.py --page-only             # docs/results/timings.md from the files (`make results`)

Each target runs as ``make <target>`` with its output kept in ``results/tests/<target>.log`` (not
committed); the results file ``results/tests/<target>.json`` records the wall time, the pytest counts and
slowest tests (for test targets), the load average before the start (to show nothing else ran), and the
usual provenance (commit, lock hash, command, date, threads). The timings page is generated from the files.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from circuits.io import atomic_write_text
from circuits.results import provenance, read_result, write_result

OUT = ROOT / "results" / "tests"
PAGE = ROOT / "docs" / "results" / "timings.md"
#: The limits the project holds itself to (README): wall time in seconds, alone on 2 cores.
LIMITS = {"test": 20 * 60, "test-fast": 3 * 60, "scan": 5 * 60}
_SUMMARY = re.compile(r"^(?:=+ )?(?P<body>(?:\d+ \w+(?:, )?)+) in (?P<secs>[\d.]+)s", re.MULTILINE)
_DURATION = re.compile(r"^(?P<secs>[\d.]+)s (?P<phase>call|setup|teardown)\s+(?P<test>\S+)", re.MULTILINE)


def parse_pytest(text: str) -> dict[str, object]:
    """Counts (passed, failed, ...) and the slowest tests of a pytest run's output."""
    found = list(_SUMMARY.finditer(text))
    counts: dict[str, int] = {}
    if found:
        for part in found[-1]["body"].split(", "):
            n, what = part.split(" ", 1)
            counts[what] = int(n)
    slowest = [{"test": m["test"], "phase": m["phase"], "seconds": float(m["secs"])} for m in _DURATION.finditer(text)]
    return {"counts": counts, "pytest_seconds": float(found[-1]["secs"]) if found else None, "slowest": slowest[:25]}


def time_target(target: str) -> Path:
    load_before = os.getloadavg()
    log = OUT / f"{target}.log"
    t0 = time.perf_counter()
    proc = subprocess.run(["make", target], check=False, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    atomic_write_text(log, text)
    data: dict[str, object] = {
        "target": target, "seconds": round(seconds, 1), "exit_code": proc.returncode, "limit_seconds": LIMITS.get(target),
        "within_limit": None if target not in LIMITS else bool(seconds <= LIMITS[target] and proc.returncode == 0),
        "load_average_before": [round(x, 2) for x in load_before], "cpus": os.cpu_count(),
    }
    if target.startswith("test"):
        data.update(parse_pytest(text))
    path = write_result(OUT / f"{target}.json", kind="timing", title=f"`make {target}`: wall time on this machine",
                        data=data, provenance=provenance(command=f"make {target}"))
    print(f"make {target}: {seconds:.0f} s, exit {proc.returncode} → {path.relative_to(ROOT)}", flush=True)
    return path


def page() -> str:
    lines = [
        "# Timings",
        "",
        ("Wall time of the project's `make` targets, each run alone from `scripts/time_targets.py` "
         "(generated from `results/tests/*.json`; `make results` rewrites this page)."),
        "",
        "| target | date | commit | wall time | limit | within | tests | load before (1 min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(OUT.glob("*.json")):
        r = read_result(path, kind="timing")
        d, p = r.data, r.provenance
        counts = d.get("counts") or {}
        tests = ", ".join(f"{n} {k}" for k, n in counts.items()) or "—"
        limit = d.get("limit_seconds")
        lines.append(
            f"| `make {d['target']}` | {p.date[:10]} | {(p.git_commit or '?')[:7]}{' (dirty)' if p.git_dirty else ''} | "
            f"{int(d['seconds']) // 60} min {int(d['seconds']) % 60} s | {'—' if limit is None else f'{limit // 60} min'} | "
            f"{'—' if d.get('within_limit') is None else ('yes' if d['within_limit'] else '**no**')} | {tests} | {d['load_average_before'][0]} |"
        )
    slow = [read_result(p, kind="timing") for p in sorted(OUT.glob("test.json"))]
    if slow and slow[0].data.get("slowest"):
        lines += ["", "Slowest tests of `make test` (pytest `--durations`):", "", "| seconds | phase | test |", "|---|---|---|"]
        lines += [f"| {s['seconds']:.1f} | {s['phase']} | `{s['test']}` |" for s in slow[0].data["slowest"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="make targets to time, in order")
    parser.add_argument("--page-only", action="store_true", help="Only rewrite docs/results/timings.md")
    args = parser.parse_args()
    for target in args.targets if not args.page_only else []:
        time_target(target)
        atomic_write_text(PAGE, page())  # after each target: the next one's page test sees a page that matches the files
    if args.page_only or not args.targets:
        atomic_write_text(PAGE, page())
    print(f"written {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

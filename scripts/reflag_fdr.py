"""Re-flag committed atlases under the current flag rule (Benjamini–Hochberg FDR control), from their stored statistics.

Atlases written before the rule had a false discovery rate control flagged a component when its mean
primary effect reached the threshold and its 95% CI lay above 0. This applies the current rule
(:func:`circuits.atlas.build.apply_flag_rule`) to every behaviour of every atlas given, records the
q-values, and prints what changed; nothing is re-measured (the rule needs only the stored means and
p-values). Each file is rewritten atomically and validated as it is saved.

    python scripts/reflag_fdr.py atlas/**/*.atlas.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from circuits.atlas.build import apply_flag_rule
from circuits.atlas.schema import Atlas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("atlases", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if any atlas is not flagged by the current rule")
    args = parser.parse_args()
    stale = []
    for path in args.atlases:
        atlas = Atlas.load(path)
        behaviours = []
        for b in atlas.behaviours:
            new = apply_flag_rule(b)
            before, after = [c.id for c in b.flagged()], [c.id for c in new.flagged()]
            dropped = [i for i in before if i not in after]
            print(f"{path} {b.name}: {len(before)} -> {len(after)} flagged" + (f"; no longer flagged: {', '.join(dropped)}" if dropped else ""))
            if new != b:
                stale.append(f"{path}:{b.name}")
            behaviours.append(new)
        if not args.check and any(n != b for n, b in zip(behaviours, atlas.behaviours)):
            atlas.model_copy(update={"behaviours": behaviours}).save(path)
    if args.check and stale:
        raise SystemExit(f"not flagged by the current rule: {', '.join(stale)}")


if __name__ == "__main__":
    main()

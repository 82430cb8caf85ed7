#!/usr/bin/env bash
# Regenerate every committed SmolLM2-135M atlas, circuit and the one-seed edit comparison (`make atlases`).
# About 1.5-2 h on 2 CPU cores. Scans checkpoint every layer under the cache directory, so an interrupted
# run resumes where it stopped. PY selects the interpreter (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
C="$PY -m circuits"
D=atlas/smollm2-135m
A=$D/gender-occupation.atlas.json
export HF_HUB_OFFLINE=1
$C scan --suite gender-occupation -o $A
$C scan --suite toxicity -o $D/toxicity.atlas.json
$C scan --suite name-sentiment -o $D/name-sentiment.atlas.json
$C scan --suite identity-harm-religion -o $D/identity-harm-religion.atlas.json
$C scan --suite name-sentiment-v2 --max-pairs 1 -o $D/name-sentiment-v2.atlas.json
$C atlas merge $A $D/toxicity.atlas.json $D/name-sentiment.atlas.json $D/identity-harm-religion.atlas.json \
    $D/name-sentiment-v2.atlas.json -o $D/smollm2-135m.atlas.json
$C trace --atlas $D/smollm2-135m.atlas.json --prompt "The Eiffel Tower is located in the city of" --subject "The Eiffel Tower" --target " Paris"
# Edge circuits: the gender-bias circuit (into the gender and merged atlases) and induction (tasks/).
$PY scripts/circuits_smollm2.py
# IOI, greater-than and factual recall (tasks/), and the user-file behaviour of the docs (own-behaviour/).
$PY scripts/tasks.py --tasks ioi --per-template 2
$PY scripts/tasks.py --tasks greater-than factual-recall --per-template 1 --facts 12 --samples 3
$C atlas merge $D/tasks/ioi.atlas.json $D/tasks/greater-than.atlas.json $D/tasks/factual-recall.atlas.json -o $D/tasks/tasks.atlas.json
$C report $D/tasks/tasks.atlas.json -o $D/tasks/report.html
$C scan --suite $D/own-behaviour/office_pronouns.jsonl --edges --ig-steps 3 -o $D/own-behaviour/office-pronouns.atlas.json
$C report $D/smollm2-135m.atlas.json -o $D/report.html
# Every edit kind from the merged atlas, one seed, evaluated on the eval split.
$PY scripts/compare_edits.py --suite gender-occupation

#!/usr/bin/env bash
# Take a PNG screenshot of an atlas HTML report with headless Chromium, so a person can see it.
#   scripts/screenshot_report.sh atlas/smollm2-135m/report.html report.png [width] [height]
# Needs Debian's chromium package (apt-get install -y chromium).
set -euo pipefail
report=$(realpath "$1"); out=$(realpath -m "$2"); width=${3:-1200}; height=${4:-2400}
command -v chromium >/dev/null || { echo "chromium is not installed: apt-get install -y chromium" >&2; exit 2; }
profile=$(mktemp -d); trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size="$width,$height" --virtual-time-budget=5000 --screenshot="$out" "file://$report" 2>/dev/null
echo "screenshot written to $out"

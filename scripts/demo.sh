#!/usr/bin/env bash
# The demo: install, make a small sample set (a few videos deliberately broken), run
# `vidbatch submit jobs/classify.yaml` on a local Ray, print the summary, write its report.
set -euo pipefail
cd "$(dirname "$0")/.."
# The install's own chatter (pip, setuptools) goes to a log, shown only if it fails.
log="$(mktemp -t vidbatch-setup.XXXXXX.log)"
echo "installing vidbatch into .venv (log: $log)"
bash scripts/setup.sh >"$log" 2>&1 || { tail -n 40 "$log"; exit 1; }
. .venv/bin/activate
vidbatch demo-data
# --overwrite: re-running the demo replaces its previous results.
vidbatch submit jobs/classify.yaml --overwrite "$@"
# One HTML page (charts, thumbnails) that opens from disk; the last line is its path.
vidbatch report outputs/classify-demo

#!/usr/bin/env bash
# Install, lint, run the test suite (GPU tests skip themselves without CUDA; the browser
# and Prometheus tests skip where scripts/test_tools.sh cannot install their programs).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
# The system packages install while pip fills .venv; the venv's extra comes after it.
bash scripts/test_tools.sh os &
tools=$!
bash scripts/setup.sh
wait "$tools"
bash scripts/test_tools.sh python
. .venv/bin/activate
ruff check pipeline tests
python -m pytest "$@"

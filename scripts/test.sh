#!/usr/bin/env bash
# Install, lint, run the test suite (GPU tests skip themselves without CUDA; the browser
# and Prometheus tests skip where scripts/test_tools.sh cannot install their programs).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/test_tools.sh
. .venv/bin/activate
ruff check pipeline tests
python -m pytest "$@"

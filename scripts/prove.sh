#!/usr/bin/env bash
# Re-run the README's accuracy demos from scratch (motion, detection, speech, copies,
# shots) and print each figure against its target with its wall time; about an hour on 2
# cores.
# Not part of the test suite. Arguments go to scripts/prove.py (--only, --work, --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python scripts/prove.py "$@"

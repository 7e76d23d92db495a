#!/usr/bin/env bash
# Create .venv (if needed) and install vidbatch with its test extras into it.
# Needs only a Python >= 3.10 with venv and pip; everything else comes from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch/torchvision ranges in pyproject.toml admit 2.14.1/0.29.1 (the builds tested here).
python -m pip install -q -e ".[test]"

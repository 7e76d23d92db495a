#!/usr/bin/env bash
# The test suite's outside programs, installed where missing and where this machine can:
# Debian's `chromium` (the report's and the dashboard's browser tests), `prometheus` (the
# metrics test) and `tmux` (the live display, seen in a real pseudo-terminal).
# Without them those tests skip and say why; nothing else needs them.
set -uo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v tmux >/dev/null || missing+=(tmux)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "test tools: ${missing[*]} missing and no root apt-get here; their tests will skip"
  exit 0
fi
echo "test tools: installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
{ apt-get install -y -q --no-install-recommends "${missing[@]}" ||
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; }
} >/tmp/vidbatch-test-tools.log 2>&1 ||
  echo "test tools: apt-get failed (see /tmp/vidbatch-test-tools.log); their tests will skip"
exit 0

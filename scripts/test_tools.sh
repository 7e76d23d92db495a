#!/usr/bin/env bash
# The test suite's outside programs, installed where missing and where this machine can:
# Debian's `chromium` (the report's and the dashboard's browser tests), `prometheus` (the
# metrics test), `tmux` (the live display, seen in a real pseudo-terminal), and FFmpeg's
# shared libraries with the `torchcodec` extra (decoder: torchcodec; decode_on: replica).
# Without them those tests skip and say why; nothing else needs them.
#   bash scripts/test_tools.sh [os|python]   # os: the system packages only (no .venv
#                                            # needed); python: the extra in .venv only
set -uo pipefail
part="${1:-all}"
log=/tmp/vidbatch-test-tools.log

os_packages() {
  local missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v prometheus >/dev/null || missing+=(prometheus)
  command -v tmux >/dev/null || missing+=(tmux)
  if ! ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so\.'; then
    # This distribution's versioned FFmpeg libraries; Debian 12's where apt knows none yet.
    local ff=($(apt-cache --names-only search \
      '^(libav(codec|format|util|device|filter)|libsw(scale|resample))[0-9]+$' 2>/dev/null |
      awk '{print $1}' | grep -v -- -extra))
    [ ${#ff[@]} -gt 0 ] || ff=(libavcodec59 libavformat59 libavutil57 libavdevice59
                                libavfilter8 libswscale6 libswresample4)
    missing+=("${ff[@]}")
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "test tools: ${missing[*]} missing and no root apt-get here; their tests will skip"
    return 0
  fi
  echo "test tools: installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -q --no-install-recommends "${missing[@]}" ||
    { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; }
  } >>"$log" 2>&1 ||
    echo "test tools: apt-get failed (see $log); their tests will skip"
}

python_extra() {
  .venv/bin/python -c "from torchcodec.decoders import VideoDecoder" 2>/dev/null && return 0
  .venv/bin/python -m pip install -q -e ".[torchcodec]" >>"$log" 2>&1 &&
    .venv/bin/python -c "from torchcodec.decoders import VideoDecoder" 2>/dev/null ||
    echo "test tools: torchcodec does not load here (see $log); its tests will skip"
}

[ "$part" = python ] || os_packages
[ "$part" = os ] || python_extra
exit 0

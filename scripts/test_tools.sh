#!/usr/bin/env bash
# The test suite's outside programs, installed where missing and where this machine can:
# Debian's `chromium` (the report's and the dashboard's browser tests), `prometheus` (the
# metrics test), `tmux` (the live display, seen in a real pseudo-terminal), and FFmpeg's
# shared libraries with the `torchcodec` extra (decoder: torchcodec; decode_on: replica).
# Without them those tests skip and say why; nothing else needs them.
set -uo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v tmux >/dev/null || missing+=(tmux)
torchcodec=0
if ! .venv/bin/python -c "from torchcodec.decoders import VideoDecoder" 2>/dev/null; then
  torchcodec=1
  # This distribution's versioned FFmpeg libraries; Debian 12's where apt knows none yet.
  ff=($(apt-cache --names-only search \
    '^(libav(codec|format|util|device|filter)|libsw(scale|resample))[0-9]+$' 2>/dev/null |
    awk '{print $1}' | grep -v -- -extra))
  [ ${#ff[@]} -gt 0 ] || ff=(libavcodec59 libavformat59 libavutil57 libavdevice59
                              libavfilter8 libswscale6 libswresample4)
  missing+=("${ff[@]}")
fi
install_torchcodec() {
  [ $torchcodec = 1 ] || return 0
  .venv/bin/python -m pip install -q -e ".[torchcodec]" >>/tmp/vidbatch-test-tools.log 2>&1 &&
    .venv/bin/python -c "from torchcodec.decoders import VideoDecoder" 2>/dev/null ||
    echo "test tools: torchcodec does not load here (see /tmp/vidbatch-test-tools.log); its tests will skip"
}
[ ${#missing[@]} -eq 0 ] && { install_torchcodec; exit 0; }
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "test tools: ${missing[*]} missing and no root apt-get here; their tests will skip"
  install_torchcodec
  exit 0
fi
echo "test tools: installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
{ apt-get install -y -q --no-install-recommends "${missing[@]}" ||
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; }
} >/tmp/vidbatch-test-tools.log 2>&1 ||
  echo "test tools: apt-get failed (see /tmp/vidbatch-test-tools.log); their tests will skip"
install_torchcodec
exit 0

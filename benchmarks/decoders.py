"""decord, PyAV and torchcodec (on the CPU, where it is installed) side by side on the
same files: which decodes each file alone (no fallback), and its decode time (median of 3,
in-process, 1 thread), at the clip job's sampling (2 clips x 16 frames, short side 128,
crop 112).

    python benchmarks/decoders.py [FOLDER]     # default: ../shared/videos beside the repo

Prints one line per file and a summary: files each decoder decodes alone, and over the
files all decode, the median and total of each one's time against decord's.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from pipeline.decode.base import DecodeSpec, open_source
from pipeline.decode.video_decord import decode_with_decord
from pipeline.decode.video_pyav import decode_with_pyav

SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi")
DECODERS = {"decord": decode_with_decord, "pyav": decode_with_pyav}
try:
    from pipeline.decode.optional import unavailable
    from pipeline.decode.video_torchcodec import decode_with_torchcodec

    if unavailable() is None:
        DECODERS["torchcodec"] = decode_with_torchcodec
    else:
        print(f"torchcodec left out: {unavailable()}", file=sys.stderr)
except ImportError:  # pragma: no cover
    pass


def median_time(decode, src, spec: DecodeSpec, repeats: int = 3) -> float | None:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        try:
            decode(src, spec)
        except Exception:  # a decoder's failure on this file: counted, not timed
            return None
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else \
        Path(__file__).resolve().parents[2] / "shared" / "videos"
    files = sorted(p for p in folder.rglob("*") if p.suffix in SUFFIXES)
    spec = DecodeSpec(clips=2, frames=16, stride=None, short_side=128, crop_size=112)
    if "torchcodec" in DECODERS:  # warm: torchcodec loads torch's ops and FFmpeg once
        median_time(DECODERS["torchcodec"], open_source(str(files[0])), spec, 1)
    results = {}
    for f in files:
        src = open_source(str(f))
        results[f] = {name: median_time(fn, src, spec) for name, fn in DECODERS.items()}
        print(f.relative_to(folder), "|", "; ".join(
            f"{n} {'FAIL' if t is None else f'{t * 1000:.0f} ms'}" for n, t in results[f].items()))
    both = [r for r in results.values() if None not in r.values()]
    for name in DECODERS:
        ok = sum(r[name] is not None for r in results.values())
        print(f"{name}: decodes {ok} of {len(files)} files alone")
    for name in [n for n in DECODERS if n != "decord"]:
        ratios = [r[name] / r["decord"] for r in both]
        print(f"on the {len(both)} files all decode: {name} takes "
              f"{statistics.median(ratios):.2f}x decord's time per file (median), "
              f"{sum(r[name] for r in both) / sum(r['decord'] for r in both):.2f}x in total")


if __name__ == "__main__":
    main()

"""Optional decoders: whether they load on this machine, without importing them for good.

torchcodec (``decoder: torchcodec``, and NVDEC on GPU replicas) is an optional extra that
loads the system's FFmpeg shared libraries; a spec that names it is refused at planning
where it cannot load, with what to install.
"""

from __future__ import annotations

from functools import cache

INSTALL = ("pip install 'vidbatch[torchcodec]' and FFmpeg's shared libraries (Debian/"
           "Ubuntu: apt-get install libavcodec59 libavformat59 libavdevice59 libavfilter8 "
           "libswscale6 libswresample4, or the packages of another FFmpeg 4 to 9)")


@cache
def unavailable() -> str | None:
    """Why torchcodec cannot decode on this machine, or None when it can."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401  (loads FFmpeg's libraries)
    except ImportError:
        return f"torchcodec is not installed; {INSTALL}"
    except Exception as e:  # RuntimeError: no FFmpeg shared libraries it can load
        first = " ".join(str(e).split())[:160]
        return f"torchcodec cannot load FFmpeg ({first}...); {INSTALL}"
    return None

"""Benchmark inputs, generated deterministically and cached under ``benchmarks/data/``.

Videos: H.264 (libx264, one encoder thread, so the bytes are reproducible), 640x360, 30 fps,
a keyframe exactly every 60 frames (``scenecut=0``), textured moving content: a panning
texture with a textured square crossing it. Flat colour would decode unrealistically fast.
Frames are drawn and encoded one at a time, so memory stays flat for long videos.

Video ``i`` depends only on ``i`` and the parameters, which are part of the folder name and
of ``params.json`` in it: asking for more videos adds files, changing a parameter writes a
new set. Weights: one random initialisation per architecture (``torch.manual_seed(0)``),
saved as a state dict, so that every contender runs the *same* model and embeddings can be
compared across contenders (``weights: none`` would draw new random weights per process).
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

# VIDBATCH_BENCH_DIR moves data and results out of the repo (the harness's smoke test).
BENCH_DIR = Path(os.environ.get("VIDBATCH_BENCH_DIR") or Path(__file__).resolve().parent)
DATA = BENCH_DIR / "data"
GENERATOR = 1  # bump when the content or the encoder settings change


def params(seconds: int) -> dict:
    return {"seconds": seconds, "width": 640, "height": 360, "fps": 30, "gop": 60,
            "codec": "libx264", "preset": "veryfast", "crf": 23, "generator": GENERATOR}


def video_dir(p: dict) -> Path:
    return DATA / (f"{p['width']}x{p['height']}_{p['seconds']}s_{p['fps']}fps_gop{p['gop']}"
                   f"_g{p['generator']}")


def frame_at(t: int, base: np.ndarray, sprite: np.ndarray, seed: int) -> np.ndarray:
    """Frame ``t``: the background pans ``(dy, dx)`` px/frame, the sprite bounces."""
    h, w, _ = base.shape
    dy, dx = 1 + seed % 2, 2 + seed % 3
    frame = np.roll(base, (t * dy, t * dx), axis=(0, 1))
    s = sprite.shape[0]
    y = abs((40 + 3 * t) % (2 * (h - s)) - (h - s))
    x = abs((10 * seed + 5 * t) % (2 * (w - s)) - (w - s))
    frame[y:y + s, x:x + s] = sprite
    return frame


def write_one(path: Path, seed: int, p: dict) -> Path:
    import av

    from pipeline.synth import texture

    rng = np.random.default_rng(seed)
    base = texture(p["height"], p["width"], rng)
    sprite = texture(96, 96, rng, cell=4)
    tmp = path.with_suffix(".tmp.mp4")
    gop = p["gop"]
    with av.open(str(tmp), mode="w") as out:
        stream = out.add_stream(p["codec"], rate=p["fps"])
        stream.width, stream.height, stream.pix_fmt = p["width"], p["height"], "yuv420p"
        stream.options = {"preset": p["preset"], "crf": str(p["crf"]),
                          "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        stream.codec_context.thread_count = 1
        for t in range(p["seconds"] * p["fps"]):
            frame = av.VideoFrame.from_ndarray(frame_at(t, base, sprite, seed), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    os.replace(tmp, path)
    return path


def ensure_videos(n: int, seconds: int, workers: int,
                  rows: int | None = None) -> tuple[Path, list[Path]]:
    """The first ``n`` videos (generated if missing) and a manifest CSV listing them.

    With ``rows`` > ``n``, the manifest has ``rows`` rows cycling through the ``n`` files
    (ids ``v0003-r2``: distinct): the same work per row, for scale runs (memory at 1,000
    rows) without generating 1,000 files."""
    p = params(seconds)
    folder = video_dir(p)
    marker = folder / "params.json"
    if marker.exists() and json.loads(marker.read_text()) != p:
        raise SystemExit(f"{folder} holds videos made with other parameters; delete it")
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(p, indent=1))
    paths = [folder / f"v{i:04d}.mp4" for i in range(n)]
    todo = [(path, i) for i, path in enumerate(paths) if not path.exists()]
    if todo:
        print(f"generating {len(todo)} videos in {folder} ({workers} processes)", flush=True)
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(write_one, *zip(*todo), [p] * len(todo)))
    if rows and rows > n:
        manifest = folder / f"manifest_{n}x{rows}.csv"
        listed = [(f"{paths[i % n].stem}-r{i // n}", paths[i % n]) for i in range(rows)]
    else:
        manifest = folder / f"manifest_{n}.csv"
        listed = [(path.stem, path) for path in paths]
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video_id", "path"])
        writer.writerows([(vid, str(path)) for vid, path in listed])
    return manifest, [path for _, path in listed]


def ensure_weights(arch: str) -> Path:
    """A seeded random initialisation of ``arch``, as a bare state dict."""
    path = DATA / "weights" / f"{arch}_seed0.pt"
    if not path.exists():
        import torch
        from torchvision.models import get_model

        torch.manual_seed(0)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(get_model(arch, weights=None).state_dict(), path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
    return path

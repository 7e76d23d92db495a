"""vidbatch as a contender: a generated job spec, ``vidbatch submit``, and what its output says.

Steady state for vidbatch comes from its output's ``processed_at`` column (when each row's
batch left the model replica, or the decode task in ``mode: decode_only``): the rows
finished after the first batch, over the time from the first batch to the last one, as for
the naive loop. That window excludes Ray start-up, model loading and the first batch.
Per-stage times are the sums of the per-video ``decode_s`` and
``infer_s`` columns (busy seconds across all decode tasks / replicas, not wall time);
vidbatch does not report its write time.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml


def write_spec(name: str, cfg: dict, folder: Path) -> Path:
    """The job YAML for one contender; outputs go to ``folder/out``."""
    spec = {
        "name": f"bench-{name}",
        "manifest": {"path": cfg["manifest"], "id_column": "video_id"},
        "sampling": {"clips_per_video": 1, "frames_per_clip": cfg["frames"],
                     "short_side": cfg["short_side"], "crop_size": cfg["crop"]},
        "model": {"arch": cfg["arch"], "weights": cfg["weights"]},
        "inference": {"batch_size": cfg["batch_size"], "precision": cfg["precision"],
                      "channels_last": cfg["channels_last"]},
        "resources": {"num_cpus": cfg["cores"]},
        "output": {"path": str(folder / "out"), "if_exists": "overwrite"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def command(spec: Path, sets: list[str]) -> list[str]:
    exe = shutil.which("vidbatch") or str(Path(sys.executable).parent / "vidbatch")
    return [exe, "submit", str(spec), "--overwrite", *[a for s in sets for a in ("--set", s)]]


def steady_from_rows(processed_at) -> float | None:
    """Rows finished after the first batch / time from the first batch to the last."""
    t = np.sort(np.asarray(processed_at, dtype="datetime64[ms]").astype(np.int64)) / 1000
    if t.size < 2 or t[-1] <= t[0]:
        return None
    return int((t > t[0]).sum()) / (t[-1] - t[0])


def steady_window(processed_at) -> tuple[float, float] | None:
    """(first batch, last batch) as Unix seconds."""
    t = np.asarray(processed_at, dtype="datetime64[ms]").astype(np.int64) / 1000
    return (float(t.min()), float(t.max())) if t.size else None


def result(folder: Path, lines: list[tuple[float, str]], replicas: int = 1) -> dict:
    """What the harness reports for a finished ``vidbatch submit``."""
    import pandas as pd

    out = folder / "out"
    record = json.loads((out / "_vidbatch_job.json").read_text())
    df = pd.read_parquet(out, columns=["video_id", "status", "decode_s", "infer_s",
                                       "processed_at"])
    ok = int((df.status == "ok").sum())
    infer_s = float(df.infer_s.sum())
    return {"videos": len(df), "steady_videos_per_s": steady_from_rows(df.processed_at),
            "stages": {"decode_s": float(df.decode_s.sum()), "infer_s": infer_s},
            "job_wall_s": record["wall_s"], "ok": ok, "embeddings": str(out),
            "steady_window": steady_window(df.processed_at),
            "infer_only_videos_per_s": replicas * ok / infer_s if infer_s else None}


def _embeddings(path: str) -> dict[str, np.ndarray]:
    import pandas as pd

    df = pd.read_parquet(path, columns=["video_id", "embedding"]).dropna()
    return {v: np.asarray(e, dtype=np.float64) for v, e in zip(df.video_id, df.embedding)}


def cosine_min(a: str, b: str) -> float | None:
    """Minimum cosine similarity of per-video embeddings of two outputs, by video_id."""
    ea, eb = _embeddings(a), _embeddings(b)
    common = sorted(ea.keys() & eb.keys())
    if not common:
        return None
    return min(float(ea[k] @ eb[k] / (np.linalg.norm(ea[k]) * np.linalg.norm(eb[k]) or 1))
               for k in common)

"""vidbatch as a contender: a generated job spec, ``vidbatch submit``, and what its output says.

Steady state for vidbatch comes from its output's ``processed_at`` column (when each row's
batch left the model replica, or the decode task in ``mode: decode_only``): the rows
finished after the first batch, over the time from the first batch to the last one, as for
the naive loop. That window excludes Ray start-up, model loading and the first batch.
Per-stage times are the sums of the per-video ``decode_s`` and
``infer_s`` columns (busy seconds across all decode tasks / replicas, not wall time);
vidbatch does not report its write time.

The ``*_warm`` contenders run the same job as a driver attached to a Ray that is already up
(:func:`running_cluster`: ``vidbatch up``, one small untimed job, then the timed
``vidbatch submit --address auto``, then ``vidbatch down``): what each job of a series pays
on a persistent cluster, without Ray's start-up and shutdown.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


def _exe() -> str:
    return shutil.which("vidbatch") or str(Path(sys.executable).parent / "vidbatch")


def command(spec: Path, sets: list[str], attach: bool = False) -> list[str]:
    """``vidbatch submit``; ``attach``: as a driver on the running Ray (``--address auto``)."""
    return [_exe(), "submit", str(spec), "--overwrite", *[a for s in sets for a in ("--set", s)],
            *(["--address", "auto"] if attach else [])]


WARM_PORT = 8299  # the dashboard of the cluster the *_warm contenders attach to
WARM_UP_VIDEOS = 2


@contextmanager
def running_cluster(name: str, cfg: dict, folder: Path, sets: list[str],
                    env: dict[str, str]) -> Iterator[int]:
    """A Ray started by ``vidbatch up`` (``cfg["cores"]`` CPUs) in a process session of its
    own, warmed by one untimed job on the first videos of the manifest; yields that
    session's id (so that its processes' memory counts) and ends with ``vidbatch down``."""
    # ray start's daemons stay in the session of the process that ran it: `up`'s own. Its
    # output goes to a file: the daemons would hold a pipe open.
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "vidbatch_up.txt"
    with log.open("w") as out:
        up = subprocess.Popen([_exe(), "up", "--num-cpus", str(cfg["cores"]), "--port",
                               str(WARM_PORT)], stdout=out, stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)
        up.wait()
    try:
        if up.returncode != 0:
            raise RuntimeError(f"vidbatch up failed: {log.read_text()[-600:]}")
        with open(cfg["manifest"], newline="") as f:
            rows = list(csv.reader(f))[:1 + WARM_UP_VIDEOS]
        manifest = folder / "warm_up.csv"
        with manifest.open("w", newline="") as f:
            csv.writer(f).writerows(rows)
        spec = write_spec(f"{name}-warm-up", {**cfg, "manifest": str(manifest)},
                          folder / "warm_up")
        warm = subprocess.run(command(spec, sets, attach=True), capture_output=True, text=True,
                              env=env)
        if warm.returncode != 0:
            raise RuntimeError(f"warm-up job failed: {(warm.stdout + warm.stderr)[-600:]}")
        yield up.pid
    finally:
        subprocess.run([_exe(), "down"], capture_output=True, env=env)


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

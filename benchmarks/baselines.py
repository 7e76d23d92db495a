"""The contenders vidbatch is measured against; each runs in its own process.

``python benchmarks/baselines.py NAME CONFIG.json`` runs one and writes its result JSON to
``config["result"]``. None of them imports vidbatch's pipeline except ``model_bound``, which
uses vidbatch's own replica code (``ClassifyReplica.embed``) so that "the same model, batch size,
precision and threads" holds by construction.

Steady state here: videos finished after the first one, divided by the time from the first
finished video to the last (model load, first decode and start-up excluded).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

NORM = {"clip": ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)),
        "frame": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


def steady_rate(done_times: list[float], per_item: float = 1.0) -> float | None:
    """Items per second between the first and the last completion."""
    if len(done_times) < 2 or done_times[-1] <= done_times[0]:
        return None
    return (len(done_times) - 1) * per_item / (done_times[-1] - done_times[0])


def load_resnet(arch: str, weights: str):
    """``(body, head)`` with the benchmark's seeded weights; body returns the embedding."""
    import torch
    from torchvision.models import get_model

    net = get_model(arch, weights=None)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    head, net.fc = net.fc, torch.nn.Identity()
    return net.eval(), head.eval()


def prepare(frames: np.ndarray, cfg: dict):
    """The naive preprocessing: uint8 (T, H, W, 3) -> resize short side, centre crop,
    normalise -> float (T, 3, crop, crop)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    scale = cfg["short_side"] / min(h, w)
    x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear",
                      align_corners=False)
    c, (h, w) = cfg["crop"], x.shape[-2:]
    x = x[..., (h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORM[cfg["kind"]])
    return (x - mean) / std


def naive_one(video_id: str, path: str, body, head, cfg: dict) -> tuple[dict, list[float]]:
    import decord
    import torch

    t0 = time.perf_counter()
    vr = decord.VideoReader(path)  # full resolution, decord's default threads
    n = len(vr)
    idx = ((np.arange(cfg["frames"]) + 0.5) * n / cfg["frames"]).astype(int)
    frames = vr.get_batch(list(idx)).asnumpy()
    t1 = time.perf_counter()
    x = prepare(frames, cfg)
    t2 = time.perf_counter()
    x = x.to(cfg.get("device", "cpu"))
    with torch.inference_mode():
        if cfg["kind"] == "clip":
            emb = body(x.permute(1, 0, 2, 3).unsqueeze(0))[0]
        else:
            emb = body(x).mean(0)
        scores, top = head(emb).softmax(-1).topk(5)
    t3 = time.perf_counter()
    if x.is_cuda:
        torch.cuda.synchronize()
    row = {"video_id": video_id, "path": path, "top5": top.tolist(),
           "top5_scores": scores.tolist(), "embedding": emb.tolist()}
    return row, [t1 - t0, t2 - t1, t3 - t2]


def naive(cfg: dict) -> dict:
    """One process, a for loop, a list of dicts, pandas, Parquet."""
    import pandas as pd

    body, head = load_resnet(cfg["arch"], cfg["weights"])
    device = cfg.get("device", "cpu")
    body, head = body.to(device), head.to(device)
    rows, stages, done = [], np.zeros(3), []
    for video_id, path in zip(cfg["ids"], cfg["paths"], strict=True):
        row, dt = naive_one(video_id, path, body, head, cfg)
        rows.append(row)
        stages += dt
        done.append(time.time())
    t0 = time.perf_counter()
    out = Path(cfg["out_dir"]) / "naive.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(out)
    write_s = time.perf_counter() - t0
    return {"videos": len(rows), "steady_videos_per_s": steady_rate(done),
            "stages": {"decode_s": stages[0], "prep_s": stages[1], "infer_s": stages[2],
                       "write_s": write_s}, "embeddings": str(out)}


class FrameEmbedder:
    """The Ray Data actor of the ray-read-videos baseline: ResNet-18 on 224x224 frames."""

    def __init__(self, arch: str, weights: str):
        import torch

        self.body, _ = load_resnet(arch, weights)
        self.mean, self.std = (torch.tensor(v).view(1, 3, 1, 1) * 255 for v in NORM["frame"])

    def __call__(self, batch: dict) -> dict:
        import torch

        t0 = time.perf_counter()
        x = torch.from_numpy(batch["frame"]).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            emb = self.body((x - self.mean) / self.std).numpy()
        n = len(emb)
        return {"path": batch["path"], "embedding": emb, "t_done": np.full(n, time.time()),
                "infer_s": np.full(n, (time.perf_counter() - t0) / n)}


def ray_read_videos(cfg: dict) -> dict:
    """``ray.data.read_videos(fps=1, resize=(224, 224))`` -> actor -> Parquet -> pandas mean."""
    import pandas as pd
    import ray

    frames_dir, out = Path(cfg["out_dir"]) / "frames", Path(cfg["out_dir"]) / "per_video.parquet"
    shutil.rmtree(frames_dir, ignore_errors=True)
    ray.init(num_cpus=cfg["cores"])
    ds = ray.data.read_videos(cfg["paths"], include_paths=True, fps=1, resize=(224, 224))
    ds = ds.map_batches(FrameEmbedder, fn_constructor_args=(cfg["arch"], cfg["weights"]),
                        batch_size=cfg["batch_size"] * cfg["frames"], concurrency=1,
                        num_cpus=1, batch_format="numpy")
    ds.write_parquet(str(frames_dir))
    ray.shutdown()
    t0 = time.perf_counter()
    df = pd.read_parquet(frames_dir)
    per_video = df.groupby("path")["embedding"].apply(lambda s: np.stack(s).mean(0))
    per_video.reset_index().assign(embedding=lambda d: d.embedding.map(list)).to_parquet(out)
    done = np.sort(df["t_done"].unique())
    rows_per_t = df.groupby("t_done").size().reindex(done).to_numpy()
    frames_per_video = len(df) / max(1, len(per_video))
    steady = None
    if len(done) > 1:  # frame rows after the first batch, as videos
        steady = rows_per_t[1:].sum() / frames_per_video / (done[-1] - done[0])
    return {"videos": len(per_video), "steady_videos_per_s": steady,
            "stages": {"infer_s": float(df["infer_s"].sum()),
                       "write_s": time.perf_counter() - t0},
            "note": f"{len(df)} frame rows ({frames_per_video:.1f}/video)"}


def decode_bound(cfg: dict) -> dict:
    """``ffmpeg -threads 1 -i VIDEO -f null -`` over every video, one process per core."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return {"skipped": "ffmpeg CLI not found (apt-get install -y ffmpeg)"}

    def one(path: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([ffmpeg, "-nostdin", "-v", "error", "-threads", "1", "-i", path,
                        "-f", "null", "-"], check=True)
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(cfg["cores"]) as pool:
        per_video = list(pool.map(one, cfg["paths"]))
    elapsed = time.perf_counter() - t0
    return {"videos": len(per_video), "steady_videos_per_s": len(per_video) / elapsed,
            "stages": {"decode_s": sum(per_video)}}


def model_bound(cfg: dict) -> dict:
    """vidbatch's replica code (``ClassifyReplica.embed``) on random uint8 clips in memory."""
    from pipeline.model.runtime import Runtime
    from pipeline.model.spec import ModelSpec
    from pipeline.model.zoo import model_card
    from pipeline.tasks.classify.replica import ClassifyConfig, ClassifyReplica

    card = model_card(ModelSpec(arch=cfg["arch"], weights=cfg["weights"]))
    replica = ClassifyReplica(ClassifyConfig.of(card, Runtime(
        precision=cfg["precision"], device=cfg.get("device", "cpu"),
        channels_last=cfg["channels_last"], threads=cfg["threads"], streams=cfg["streams"])))
    shape = (cfg["batch_size"], 1, cfg["frames"], cfg["crop"], cfg["crop"], 3)
    frames = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    replica.embed(frames)  # warm-up: allocator, oneDNN kernels
    done = [time.time()]
    for _ in range(cfg["bound_iters"]):
        replica.embed(frames)
        done.append(time.time())
    rate = steady_rate(done, per_item=cfg["batch_size"])
    return {"videos": cfg["batch_size"] * cfg["bound_iters"], "steady_videos_per_s": rate,
            "note": f"batch {cfg['batch_size']}, {cfg['threads']} threads in "
                    f"{cfg['streams']} stream(s), "
                    f"{cfg['precision']}, channels_last={cfg['channels_last']}"}


CONTENDERS = {"naive": naive, "ray_read_videos": ray_read_videos, "decode_bound": decode_bound,
              "model_bound": model_bound}

if __name__ == "__main__":
    family, config = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    result = CONTENDERS[family](config)
    Path(config["result"]).write_text(json.dumps(result, default=float))

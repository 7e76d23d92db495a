"""What every Ray Train worker runs to train a detector: ``detect_loop_per_worker``.

The classification loop's shape (:mod:`pipeline.train.loop`: the same optimizer, schedule,
fault injection and checkpoints beside their optimizer state), over frames instead of
clips: each decoded video row gives its distinct sampled frames, fitted into the
detector's canvas, with their boxes scaled to it. Validation reports COCO-style mAP
(torchmetrics' ``MeanAveragePrecision`` on pycocotools, gathered over the workers);
the best checkpoint is the one with the highest ``val_map`` (mAP@[.5:.95], COCO's primary
metric).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.decode.base import fitted_dims
from pipeline.model.checkpoint import CHECKPOINT_FILE
from pipeline.model.detectors import (
    DetectorCard,
    build_detector,
    new_detector,
    save_detector_checkpoint,
)
from pipeline.tasks.detect_replica import distinct_positions
from pipeline.train.loop import (
    STATE_FILE,
    all_reduce,
    lr_at,
    maybe_fail,
    prepare_resumed,
    report_epoch,
    worker_start,
)
from pipeline.train.spec import OptimSpec

METRIC = "val_map"  # COCO's primary metric, mAP@[.5:.95]


@dataclass(frozen=True, kw_only=True)
class DetectLoopConfig:
    start: DetectorCard
    card: DetectorCard
    optim: OptimSpec
    hflip: bool
    steps_per_epoch: int
    checkpoint_every: int
    extra: dict[str, Any]  # plain data saved in every checkpoint (spec, sampling, counts)
    fail_at_epochs: tuple[int, ...] = ()


def frame_targets(batch: dict[str, np.ndarray], canvas: tuple[int, int]):
    """``(frame uint8 (H, W, 3), boxes float32 (n, 4) in canvas pixels, labels int64)``
    for each distinct sampled frame of each decoded row."""
    for i in range(len(batch["boxes"])):
        boxes = json.loads(batch["boxes"][i])
        h, w = int(batch["height"][i]), int(batch["width"][i])
        fh, fw = fitted_dims(h, w, canvas)
        scale = np.array([fw / w, fh / h] * 2, np.float32)
        indices = batch["frame_indices"][i]
        for p in distinct_positions(indices):
            rows = np.array(boxes.get(str(int(indices[p])), []), np.float32).reshape(-1, 5)
            yield batch["frames"][i, p, 0], rows[:, :4] * scale, rows[:, 4].astype(np.int64)


def _tensor(frame: np.ndarray, device) -> torch.Tensor:
    # A copy: Ray's batches are read-only, and a flipped frame is a view.
    return torch.from_numpy(frame.copy()).to(device).permute(2, 0, 1).float().div_(255)


def train_batches(shard, cfg: DetectLoopConfig, gen: torch.Generator, device):
    """Exactly ``steps_per_epoch`` batches of ``(images, targets)`` (DDP needs every worker
    to take the same number of steps): this worker's frames, shuffled, cycled if short."""
    canvas = (cfg.card.min_size, cfg.card.max_size)
    items = [t for b in shard.iter_batches(batch_size=8, batch_format="numpy")
             for t in frame_targets(b, canvas)]
    order = torch.randperm(len(items), generator=gen).tolist()
    bs = cfg.optim.batch_size
    for step in range(cfg.steps_per_epoch):
        images, targets = [], []
        for k in range(step * bs, (step + 1) * bs):
            frame, boxes, labels = items[order[k % len(order)]]
            boxes = torch.from_numpy(boxes.copy())
            if cfg.hflip and torch.rand(1, generator=gen).item() < 0.5:
                frame = frame[:, ::-1]
                boxes[:, [0, 2]] = frame.shape[1] - boxes[:, [2, 0]]
            images.append(_tensor(frame, device))
            targets.append({"boxes": boxes.to(device), "labels": torch.from_numpy(labels)
                            .to(device)})
        yield images, targets


def build_model(cfg: DetectLoopConfig):
    """The starting detector with a box predictor for our classes."""
    if cfg.start.source == "none":
        return new_detector(cfg.card)
    net = build_detector(cfg.start)
    n = len(cfg.card.class_names)
    if len(cfg.start.class_names) != n:
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

        predictor = getattr(getattr(net, "roi_heads", None), "box_predictor", None)
        if predictor is None:
            raise RuntimeError(f"{cfg.card.arch}: fine-tuning to other classes is supported "
                               "for the Faster R-CNN detectors only")
        net.roi_heads.box_predictor = FastRCNNPredictor(predictor.cls_score.in_features, n)
    return net


def train_one_epoch(model, batches, opt, cfg: DetectLoopConfig, epoch: int) -> dict[str, float]:
    model.train()
    step, total, frames = (epoch - 1) * cfg.steps_per_epoch, 0.0, 0
    for images, targets in batches:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.steps_per_epoch, cfg.optim)
        loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(images)
        frames += len(images)
        step += 1
    return {"loss_sum": total, "frames": frames}


@torch.no_grad()
def evaluate(net, shard, cfg: DetectLoopConfig, rank: int, world: int, device) -> dict:
    """mAP over the val rows ``row % world == rank`` of every worker, gathered."""
    from torchmetrics.detection import MeanAveragePrecision

    net.eval()
    canvas = (cfg.card.min_size, cfg.card.max_size)
    metric = MeanAveragePrecision(iou_type="bbox", backend="pycocotools")
    frames = 0
    for b in shard.iter_batches(batch_size=8, batch_format="numpy"):
        keep = b["row"] % world == rank
        if not keep.any():
            continue
        items = list(frame_targets({k: v[keep] for k, v in b.items()}, canvas))
        for a in range(0, len(items), cfg.optim.batch_size):
            chunk = items[a:a + cfg.optim.batch_size]
            found = net([_tensor(f, device) for f, _, _ in chunk])
            metric.update([{k: v.cpu() for k, v in f.items()} for f in found],
                          [{"boxes": torch.from_numpy(bx), "labels": torch.from_numpy(lb)}
                           for _, bx, lb in chunk])
            frames += len(chunk)
    result = metric.compute()
    frames = int(all_reduce(torch.tensor([frames], dtype=torch.float64)).item())
    return {"val_map50": float(result["map_50"]), "val_map": float(result["map"]),
            "val_frames": frames}


def _save(d: Path, net, opt, cfg: DetectLoopConfig, epoch: int, metrics: dict) -> None:
    save_detector_checkpoint(d / CHECKPOINT_FILE, net, cfg.card, epoch=epoch,
                             metrics=metrics, **cfg.extra)
    torch.save({"optimizer": opt.state_dict(), "epoch": epoch}, d / STATE_FILE)


def _restore(cfg: DetectLoopConfig, checkpoint):
    return prepare_resumed(build_model(cfg), checkpoint, cfg.optim)


def detect_loop_per_worker(config: dict) -> None:
    """Entry point of each Ray Train worker. ``config["loop"]``: :class:`DetectLoopConfig`."""
    import ray.train
    import ray.train.torch as rtt

    cfg, rank, world, gen = worker_start(config)
    model, net, opt, done = _restore(cfg, ray.train.get_checkpoint())
    device = rtt.get_device()
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    for epoch in range(done + 1, cfg.optim.epochs + 1):
        maybe_fail(cfg, epoch, done + 1)
        t0 = time.perf_counter()
        sums = train_one_epoch(model, train_batches(train_shard, cfg, gen, device), opt, cfg,
                               epoch)
        totals = all_reduce(torch.tensor([sums["loss_sum"], sums["frames"]],
                                         dtype=torch.float64))
        train_s = time.perf_counter() - t0
        val = evaluate(net, val_shard, cfg, rank, world, device)
        metrics = {"epoch": epoch, "train_loss": float(totals[0] / max(1, totals[1])),
                   "train_frames": int(totals[1]), **val,
                   "frames_per_s": float(totals[1]) / train_s, "lr": opt.param_groups[0]["lr"],
                   "epoch_s": time.perf_counter() - t0, **cfg.extra["decode_errors"]}
        if not math.isfinite(metrics["train_loss"]):
            raise RuntimeError(f"training diverged at epoch {epoch} (loss "
                               f"{metrics['train_loss']}); lower optim.lr")
        report_epoch(metrics, cfg, rank, partial(_save, net=net, opt=opt, cfg=cfg, epoch=epoch,
                                                 metrics=metrics))

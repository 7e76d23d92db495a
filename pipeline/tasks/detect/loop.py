"""What each Ray Train worker does to train a detector (driven by
:func:`pipeline.fit.epochs.train_worker`), over frames instead of clips: each decoded
video row gives its distinct sampled frames, fitted into the detector's canvas, with
their boxes scaled to it. Validation reports COCO-style mAP (torchmetrics'
``MeanAveragePrecision`` on pycocotools, gathered over the workers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.decode.base import fitted_dims
from pipeline.fit.epochs import LoopConfig, WorkerLoop, all_reduce
from pipeline.model.checkpoint import CHECKPOINT_FILE
from pipeline.tasks.detect.evaluate import coco_map
from pipeline.tasks.detect.models import build_detector, new_detector, save_detector_checkpoint
from pipeline.tasks.detect.replica import distinct_positions


@dataclass(frozen=True, kw_only=True)
class DetectLoopConfig(LoopConfig):
    hflip: bool


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


class DetectLoop(WorkerLoop):
    unit = "frames"

    def build(self):
        """The starting detector with a box predictor for our classes."""
        cfg = self.cfg
        if cfg.start.source == "none":
            return new_detector(cfg.card)
        net = build_detector(cfg.start)
        n = len(cfg.card.class_names)
        if len(cfg.start.class_names) != n:
            from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

            predictor = getattr(getattr(net, "roi_heads", None), "box_predictor", None)
            if predictor is None:
                raise RuntimeError(f"{cfg.card.arch}: fine-tuning to other classes is "
                                   "supported for the Faster R-CNN detectors only")
            net.roi_heads.box_predictor = FastRCNNPredictor(predictor.cls_score.in_features,
                                                            n)
        return net

    def train_epoch(self, model, shard, opt, epoch: int) -> tuple[dict, int]:
        model.train()
        total, frames = 0.0, 0
        batches = train_batches(shard, self.cfg, self.gen, self.device)
        for (images, targets), _ in zip(batches, self.lr_steps(opt, epoch)):
            loss = sum(model(images, targets).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(images)
            frames += len(images)
            self.stepped(loss)
        totals = all_reduce(torch.tensor([total, frames], dtype=torch.float64))
        return ({"train_loss": float(totals[0] / max(1, totals[1])),
                 "train_frames": int(totals[1])}, float(totals[1]))

    @torch.no_grad()
    def evaluate(self, model, shard) -> dict[str, float]:
        """mAP over the val rows ``row % world == rank`` of every worker, gathered."""
        from torchmetrics.detection import MeanAveragePrecision

        model.eval()
        metric = MeanAveragePrecision(iou_type="bbox", backend="pycocotools")
        frames = 0
        for chunk in val_chunks(shard, self.cfg, self.rank, self.world):
            found = model([_tensor(f, self.device) for f, _, _ in chunk])
            metric.update([{k: v.cpu() for k, v in f.items()} for f in found],
                          [{"boxes": torch.from_numpy(bx), "labels": torch.from_numpy(lb)}
                           for _, bx, lb in chunk])
            frames += len(chunk)
        result = coco_map(metric)
        frames = int(all_reduce(torch.tensor([frames], dtype=torch.float64)).item())
        return {"val_map50": float(result["map_50"]), "val_map": float(result["map"]),
                "val_frames": frames}

    def save(self, directory: Path, net, epoch: int, metrics: dict) -> None:
        save_detector_checkpoint(directory / CHECKPOINT_FILE, net, self.cfg.card, epoch=epoch,
                                 metrics=metrics, **self.cfg.extra)


def val_chunks(shard, cfg: DetectLoopConfig, rank: int, world: int):
    """This worker's val frames ``(frame, boxes, labels)`` in chunks of the batch size:
    those of the rows ``row % world == rank``."""
    canvas = (cfg.card.min_size, cfg.card.max_size)
    for b in shard.iter_batches(batch_size=8, batch_format="numpy"):
        keep = b["row"] % world == rank
        if not keep.any():
            continue
        items = list(frame_targets({k: v[keep] for k, v in b.items()}, canvas))
        for a in range(0, len(items), cfg.optim.batch_size):
            yield items[a:a + cfg.optim.batch_size]

"""What every Ray Train worker runs: ``train_loop_per_worker``, one epoch at a time.

Laid out like torchvision's ``references/video_classification/train.py``: build the model,
optimizer and schedule, then per epoch ``train_one_epoch`` and ``evaluate``, and a
checkpoint. Ray Train supplies the process group (DDP over gloo on CPU, NCCL on GPU), the
data shards (``get_dataset_shard``), the checkpoint to resume from (``get_checkpoint``),
and persists what ``ray.train.report`` hands it.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from pipeline.model.card import ModelCard
from pipeline.model.checkpoint import CHECKPOINT_FILE, read_checkpoint, save_checkpoint
from pipeline.model.layout import Normalize
from pipeline.model.zoo import build_network
from pipeline.train.augment import ClipAugment
from pipeline.train.metrics import Tally, write_confusion
from pipeline.train.spec import OptimSpec

STATE_FILE = "train_state.pt"  # optimizer + epoch, beside model.pt, for resuming


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    start: ModelCard
    card: ModelCard
    optim: OptimSpec
    augment: ClipAugment
    steps_per_epoch: int
    checkpoint_every: int
    extra: dict[str, Any]  # plain data saved in every checkpoint (spec, sampling, counts)
    fail_at_epochs: tuple[int, ...] = ()  # fault injection for tests, see maybe_fail


class ClipClassifier(nn.Module):
    """A zoo network over float clips ``(N, T, H, W, 3)`` in 0..255 -> logits, normalised
    as the inference replica does (:class:`~pipeline.model.layout.Normalize`).

    Frame models see ``N * T`` frames and average their logits over time, which is what
    inference computes (it averages embeddings, then applies the linear head).
    """

    def __init__(self, net: nn.Module, card: ModelCard):
        super().__init__()
        self.net, self.clip_model = net, card.clip_model
        self.normalize = Normalize(card)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = self.normalize(clips).contiguous()
        if self.clip_model:
            return self.net(x)
        n, t = clips.shape[:2]
        return self.net(x).view(n, t, -1).mean(1)


def build_model(cfg: LoopConfig) -> nn.Module:
    """The starting network with a head for our classes (replaced when the count differs)."""
    net = build_network(cfg.start)
    if net.fc.out_features != len(cfg.card.class_names):
        net.fc = nn.Linear(net.fc.in_features, len(cfg.card.class_names))
    return ClipClassifier(net, cfg.card)


def make_optimizer(params, o: OptimSpec) -> torch.optim.Optimizer:
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum,
                               weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


def lr_at(step: int, steps_per_epoch: int, o: OptimSpec) -> float:
    """Learning rate at a global step: linear warm-up from lr/10, then cosine to 0 or step
    decay. A pure function of the step, so a resumed run needs no scheduler state."""
    warmup = round(o.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return o.lr * (0.1 + 0.9 * step / warmup)
    if o.schedule == "step":
        return o.lr * o.step_gamma ** (step // steps_per_epoch // o.step_epochs)
    total = max(1, o.epochs * steps_per_epoch - warmup)
    return o.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / total)))


def all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def _autocast(device: torch.device, o: OptimSpec):
    # Mixed precision only on GPU: bf16 autocast on CPU is slow to train with on most CPUs.
    enabled = device.type == "cuda" and o.mixed_precision != "off"
    dtype = torch.float16 if o.mixed_precision == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=enabled)


def train_one_epoch(model, batches, opt, scaler, cfg: LoopConfig, epoch: int,
                    device: torch.device, gen: torch.Generator) -> Tally:
    """One pass over this worker's shard; returns this worker's sums (not yet reduced)."""
    model.train()
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
    tally, step = Tally.empty(0), (epoch - 1) * cfg.steps_per_epoch
    for batch in batches:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.steps_per_epoch, cfg.optim)
        x = cfg.augment(batch["frames"], gen).to(device, non_blocking=True)
        y = batch["target"].to(device)
        with _autocast(device, cfg.optim):
            logits = model(x)
            loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        tally.add(logits.detach().float(), y, loss.detach() * len(y))
        step += 1
    return tally


@torch.no_grad()
def evaluate(model, batches, num_classes: int, device: torch.device, o: OptimSpec) -> Tally:
    """Loss, top-1/top-5 and the confusion matrix over this worker's val rows, with every
    clip of a video averaged like inference does."""
    model.eval()
    tally = Tally.empty(num_classes)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    for batch in batches:
        frames, y = batch["frames"].to(device), batch["target"].to(device)
        n, clips = frames.shape[:2]
        with _autocast(device, o):
            logits = model(frames.flatten(0, 1).float()).float().view(n, clips, -1).mean(1)
        tally.add(logits, y, loss_fn(logits, y))
    return tally


def val_batches(shard, batch_size: int, rank: int, world: int, key: str = "frames"):
    """Every worker reads the whole (unsplit) val set and keeps the rows ``row % world ==
    rank``: each video is evaluated exactly once, none is dropped to even out shards.
    Batches hold ``key`` (the model's input) and ``target``."""
    for batch in shard.iter_torch_batches(batch_size=batch_size):
        keep = batch["row"] % world == rank
        if keep.any():
            yield {key: batch[key][keep], "target": batch["target"][keep]}


def load_resume_state(checkpoint, model: ClipClassifier, cfg: LoopConfig) -> int:
    """Load the weights of a Ray checkpoint into ``model``; return the epoch it finished.
    (The optimizer state is loaded once the model sits on its device.)"""
    with checkpoint.as_directory() as d:
        data = read_checkpoint(str(Path(d) / CHECKPOINT_FILE))
    if tuple(data["class_names"]) != cfg.card.class_names:
        raise RuntimeError(f"the checkpoint to resume from has classes "
                           f"{data['class_names']}, this run {list(cfg.card.class_names)}")
    model.net.load_state_dict(data["state_dict"])
    return int(data["epoch"])


def _save(d: Path, model, opt, cfg: LoopConfig, epoch: int, metrics: dict, val: Tally):
    save_checkpoint(d / CHECKPOINT_FILE, model.net, cfg.card, epoch=epoch, metrics=metrics,
                    **cfg.extra)
    torch.save({"optimizer": opt.state_dict(), "epoch": epoch}, d / STATE_FILE)
    write_confusion(d, val.confusion.tolist(), cfg.card.class_names)


def maybe_fail(cfg: LoopConfig, epoch: int, first_epoch: int) -> None:
    # Only in an attempt that already finished an epoch here: an attempt restarted (or
    # resumed) from the checkpoint before this epoch gets through it. With epochs (2, 3) and
    # max_failures=1, a run fails at 2, recovers, fails at 3 and stops: what the tests need.
    if epoch in cfg.fail_at_epochs and epoch > first_epoch:
        # Ray Train polls each worker's report queue and its error together: a rank that
        # raised before rank 0 had queued the last checkpoint's report would make the
        # controller restart without it. After the barrier every rank's report is queued.
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        raise RuntimeError(f"injected failure at epoch {epoch} (fail_at_epochs, tests only)")


def report_epoch(metrics: dict, cfg, rank: int, save: Callable[[Path], None]) -> None:
    """Report an epoch's metrics to Ray Train, with a checkpoint that ``save(directory)``
    writes on rank 0 every ``checkpoint_every`` epochs and at the last (classification and
    detection alike)."""
    import ray.train

    epoch = metrics["epoch"]
    if epoch % cfg.checkpoint_every and epoch != cfg.optim.epochs:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:  # one copy of the weights; the other workers report metrics only
            save(Path(tmp))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def resume_into(net: nn.Module, checkpoint) -> tuple[int, dict | None]:
    """Load a Ray checkpoint (``model.pt`` beside ``train_state.pt``) into ``net``: ``(the
    epoch it finished, the optimizer's state)``, or ``(0, None)`` without one. For the
    detection and audio loops; the optimizer state is loaded once the model sits on its
    device."""
    if checkpoint is None:
        return 0, None
    with checkpoint.as_directory() as d:
        data = read_checkpoint(str(Path(d) / CHECKPOINT_FILE))
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
    net.load_state_dict(data["state_dict"])
    return int(data["epoch"]), state["optimizer"]


def prepare_resumed(net: nn.Module, checkpoint, optim: OptimSpec,
                    wrap: Callable[[nn.Module], nn.Module] | None = None):
    """``(the model in DDP on this worker's device, the bare ``net``, its optimizer over
    the trainable parameters, the epoch the checkpoint finished)``: ``net`` resumed from
    ``checkpoint`` (:func:`resume_into`), wrapped by ``wrap`` for DDP when given. For the
    detection and audio loops."""
    import ray.train.torch as rtt

    done, opt_state = resume_into(net, checkpoint)
    ddp = rtt.prepare_model(wrap(net) if wrap else net)
    opt = make_optimizer([p for p in ddp.parameters() if p.requires_grad], optim)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    return ddp, net, opt, done


def _restore(cfg: LoopConfig, checkpoint):
    """``(model in DDP on this worker's device, the bare model, optimizer, grad scaler,
    last finished epoch)``, from ``checkpoint`` when Ray hands one over (restart/resume)."""
    import ray.train.torch as rtt

    model, done = build_model(cfg), 0
    if checkpoint is not None:
        done = load_resume_state(checkpoint, model, cfg)
    ddp = rtt.prepare_model(model)  # moved to the worker's device first, then wrapped
    opt = make_optimizer(ddp.parameters(), cfg.optim)
    if checkpoint is not None:  # optimizer state follows the parameters' device
        with checkpoint.as_directory() as d:
            opt.load_state_dict(torch.load(Path(d) / STATE_FILE, map_location="cpu",
                                           weights_only=True)["optimizer"])
    device = rtt.get_device()
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda"
                                  and cfg.optim.mixed_precision == "fp16")
    return ddp, model, opt, scaler, done


def worker_start(config: dict):
    """``(loop config, rank, world size, generator of augmentation draws)`` of this Ray
    Train worker, with its torch threads and seed set (classification and detection)."""
    import ray.train

    cfg = config["loop"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    torch.manual_seed(cfg.optim.seed)
    return cfg, rank, world, torch.Generator().manual_seed(cfg.optim.seed * 1009 + rank)


def train_loop_per_worker(config: dict) -> None:
    """Entry point of each Ray Train worker. ``config["loop"]`` is a :class:`LoopConfig`."""
    import ray.train
    import ray.train.torch as rtt

    cfg, rank, world, gen = worker_start(config)
    model, net, opt, scaler, done = _restore(cfg, ray.train.get_checkpoint())
    device, bs = rtt.get_device(), cfg.optim.batch_size
    train_shard, val_shard = ray.train.get_dataset_shard("train"), \
        ray.train.get_dataset_shard("val")

    def reduce(t):
        return all_reduce(t.to(device)).cpu()

    for epoch in range(done + 1, cfg.optim.epochs + 1):
        maybe_fail(cfg, epoch, done + 1)
        t0 = time.perf_counter()
        batches = train_shard.iter_torch_batches(batch_size=bs, local_shuffle_buffer_size=4 * bs)
        train = train_one_epoch(model, batches, opt, scaler, cfg, epoch, device, gen)
        train = train.reduced(reduce)
        train_s = time.perf_counter() - t0
        val = evaluate(net, val_batches(val_shard, bs, rank, world), len(cfg.card.class_names),
                       device, cfg.optim).reduced(reduce)
        metrics = {"epoch": epoch, **train.metrics("train"), **val.metrics("val"),
                   "clips_per_s": train.count / train_s, "lr": opt.param_groups[0]["lr"],
                   "epoch_s": time.perf_counter() - t0, **cfg.extra["decode_errors"]}
        report_epoch(metrics, cfg, rank, partial(_save, model=net, opt=opt, cfg=cfg,
                                                 epoch=epoch, metrics=metrics, val=val))

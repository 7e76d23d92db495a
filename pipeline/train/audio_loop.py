"""What every Ray Train worker runs to train an audio model: ``audio_loop_per_worker``.

The classification loop's shape (:mod:`pipeline.train.loop`: the same optimizer,
schedule, metrics, fault injection and checkpoints beside their optimizer state), over
soundtrack windows instead of clips: each decoded row is its loudest window with room to
shift, augmented on the waveform and the spectrogram (:mod:`pipeline.train.audio_augment`).
Validation scores the centred windows: loss, top-1, top-5 and the confusion matrix.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pipeline.model.audio_models import AudioCard, build_audio_net, save_audio_checkpoint
from pipeline.model.checkpoint import CHECKPOINT_FILE
from pipeline.train.audio_augment import WaveAugment
from pipeline.train.loop import (
    STATE_FILE,
    all_reduce,
    lr_at,
    maybe_fail,
    prepare_resumed,
    report_epoch,
    val_batches,
    worker_start,
)
from pipeline.train.metrics import Tally, write_confusion
from pipeline.train.spec import OptimSpec


@dataclass(frozen=True, kw_only=True)
class AudioLoopConfig:
    start: AudioCard
    card: AudioCard
    optim: OptimSpec
    augment: WaveAugment
    steps_per_epoch: int
    checkpoint_every: int
    extra: dict[str, Any]  # plain data saved in every checkpoint (spec, sampling, counts)
    fail_at_epochs: tuple[int, ...] = ()


def build_model(cfg: AudioLoopConfig) -> nn.Module:
    """The starting network with a head for our classes (new when the count differs)."""
    net = build_audio_net(cfg.start)
    if net.head.out_features != len(cfg.card.class_names):
        net.head = nn.Linear(net.head.in_features, len(cfg.card.class_names))
    return net


def train_one_epoch(model, batches, opt, cfg: AudioLoopConfig, epoch: int, device,
                    gen: torch.Generator) -> Tally:
    """One pass over this worker's shard; this worker's sums (not yet reduced).
    ``model`` is the DDP-wrapped network; the masks go between its front end and body."""
    model.train()
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
    tally, step = Tally.empty(0), (epoch - 1) * cfg.steps_per_epoch
    for batch in batches:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.steps_per_epoch, cfg.optim)
        wave = cfg.augment(batch["audio"][:, 0].to(device), gen)
        y = batch["target"].to(device)
        logits = model(wave, partial(cfg.augment.mask, gen=gen))
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tally.add(logits.detach(), y, loss.detach() * len(y))
        step += 1
    return tally


class _Masked(nn.Module):
    """The network as DDP sees it: ``forward(wave, mask)`` (SpecAugment inside)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, wave: torch.Tensor, mask=None) -> torch.Tensor:
        return self.net.head(self.net.embed(wave, mask))


@torch.no_grad()
def evaluate(net, batches, cfg: AudioLoopConfig, device) -> Tally:
    """Loss, top-1/top-5 and the confusion matrix of this worker's val rows."""
    net.eval()
    tally = Tally.empty(len(cfg.card.class_names))
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    for batch in batches:
        wave = cfg.augment.centre(batch["audio"][:, 0].to(device))
        y = batch["target"].to(device)
        logits = net(wave)
        tally.add(logits, y, loss_fn(logits, y))
    return tally


def _save(d: Path, net, opt, cfg: AudioLoopConfig, epoch: int, metrics: dict, val: Tally):
    save_audio_checkpoint(d / CHECKPOINT_FILE, net, cfg.card, epoch=epoch, metrics=metrics,
                          **cfg.extra)
    torch.save({"optimizer": opt.state_dict(), "epoch": epoch}, d / STATE_FILE)
    write_confusion(d, val.confusion.tolist(), cfg.card.class_names)


def _restore(cfg: AudioLoopConfig, checkpoint):
    return prepare_resumed(build_model(cfg), checkpoint, cfg.optim, _Masked)


def audio_loop_per_worker(config: dict) -> None:
    """Entry point of each Ray Train worker. ``config["loop"]``: :class:`AudioLoopConfig`."""
    import ray.train
    import ray.train.torch as rtt

    cfg, rank, world, gen = worker_start(config)
    model, net, opt, done = _restore(cfg, ray.train.get_checkpoint())
    device, bs = rtt.get_device(), cfg.optim.batch_size
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")

    def reduce(t):
        return all_reduce(t.to(device)).cpu()

    for epoch in range(done + 1, cfg.optim.epochs + 1):
        maybe_fail(cfg, epoch, done + 1)
        t0 = time.perf_counter()
        batches = train_shard.iter_torch_batches(batch_size=bs,
                                                 local_shuffle_buffer_size=4 * bs)
        train = train_one_epoch(model, batches, opt, cfg, epoch, device, gen)
        train = train.reduced(reduce)
        train_s = time.perf_counter() - t0
        val = evaluate(net, val_batches(val_shard, bs, rank, world, "audio"), cfg,
                       device).reduced(reduce)
        metrics = {"epoch": epoch, **train.metrics("train"), **val.metrics("val"),
                   "clips_per_s": train.count / train_s, "lr": opt.param_groups[0]["lr"],
                   "epoch_s": time.perf_counter() - t0, **cfg.extra["decode_errors"]}
        if not math.isfinite(metrics["train_loss"]):
            raise RuntimeError(f"training diverged at epoch {epoch} (loss "
                               f"{metrics['train_loss']}); lower optim.lr")
        report_epoch(metrics, cfg, rank, partial(_save, net=net, opt=opt, cfg=cfg,
                                                 epoch=epoch, metrics=metrics, val=val))

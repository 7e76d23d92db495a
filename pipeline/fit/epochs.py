"""What every Ray Train worker runs, for every task: :func:`train_worker`, one epoch at a time.

Laid out like torchvision's ``references/video_classification/train.py``: build the model,
optimizer and schedule, then per epoch train, evaluate and checkpoint. A task says how its
model is built, trained for one epoch, evaluated and saved (its :class:`WorkerLoop`);
this module does the rest the same way for all of them: the optimizer and learning-rate
schedule, resuming from Ray's checkpoint, fault injection for tests, and each epoch's
metrics reported to Ray Train with a checkpoint written on rank 0. Ray Train supplies the
process group (DDP over gloo on CPU, NCCL on GPU), the data shards
(``get_dataset_shard``), the checkpoint to resume from (``get_checkpoint``), and persists
what ``ray.train.report`` hands it.
"""

from __future__ import annotations

import math
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed as dist
import torch.nn as nn

from pipeline.fit.spec import OptimSpec
from pipeline.model.checkpoint import CHECKPOINT_FILE, read_checkpoint

STATE_FILE = "train_state.pt"  # optimizer + epoch, beside model.pt, for resuming


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """What every worker is built from (pickled to them); a task's subclass adds its own
    fields (augmentation, ...)."""

    worker: type[WorkerLoop]  # the task's loop, made once per worker
    start: Any  # the card of the starting weights
    card: Any  # the card of the model being trained: class names, input
    optim: OptimSpec
    steps_per_epoch: int
    checkpoint_every: int
    extra: dict[str, Any]  # plain data saved in every checkpoint (spec, sampling, counts)
    fail_at_epochs: tuple[int, ...] = ()  # fault injection for tests, see maybe_fail
    # Rank 0's ``post(epoch, step, loss)`` for the driver's live display (fit.progress).
    post_step: Callable[[int, int, Any], None] | None = None


class WorkerLoop(ABC):
    """One task's training on one Ray Train worker; :func:`train_worker` drives it."""

    unit: ClassVar[str] = "clips"  # what the throughput metric counts: "<unit>_per_s"

    def __init__(self, cfg: LoopConfig, rank: int, world: int, device: torch.device,
                 gen: torch.Generator):
        self.cfg, self.rank, self.world, self.device, self.gen = cfg, rank, world, device, gen

    @abstractmethod
    def build(self) -> nn.Module:
        """The network with a head for the run's classes: what checkpoints hold."""

    def wrap(self, net: nn.Module) -> nn.Module:
        """What DDP wraps and evaluation calls (the network, or a module around it)."""
        return net

    @abstractmethod
    def train_epoch(self, model: nn.Module, shard, opt, epoch: int) -> tuple[dict, int]:
        """Train ``model`` (in DDP) on this worker's shard: ``(the epoch's train metrics
        over all workers, examples trained by all workers)``."""

    @abstractmethod
    def evaluate(self, model: nn.Module, shard) -> dict[str, float]:
        """The val metrics over all workers (``model``: :meth:`wrap`'s, without DDP)."""

    @abstractmethod
    def save(self, directory: Path, net: nn.Module, epoch: int, metrics: dict) -> None:
        """Write ``model.pt`` (and the task's own files) of ``net`` into ``directory``."""

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over all workers (on this worker's device, returned on the CPU)."""
        return all_reduce(t.to(self.device)).cpu()

    def lr_steps(self, opt, epoch: int):
        """Global steps of ``epoch``, the optimizer's learning rate set for each."""
        first = step = (epoch - 1) * self.cfg.steps_per_epoch
        while True:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, self.cfg.steps_per_epoch, self.cfg.optim)
            self.at = (epoch, step - first + 1)
            yield step
            step += 1

    def stepped(self, loss: torch.Tensor) -> None:
        """After each training step (:meth:`lr_steps`'s): rank 0 posts it with its loss
        for the driver's display."""
        if self.rank == 0 and self.cfg.post_step is not None:
            self.cfg.post_step(*self.at, loss.detach())


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


def autocast(device: torch.device, o: OptimSpec):
    # Mixed precision only on GPU: bf16 autocast on CPU is slow to train with on most CPUs.
    enabled = device.type == "cuda" and o.mixed_precision != "off"
    dtype = torch.float16 if o.mixed_precision == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=enabled)


def val_batches(shard, batch_size: int, rank: int, world: int, key: str):
    """Every worker reads the whole (unsplit) val set and keeps the rows ``row % world ==
    rank``: each video is evaluated exactly once, none is dropped to even out shards.
    Batches hold ``key`` (the model's input) and ``target``."""
    for batch in shard.iter_torch_batches(batch_size=batch_size):
        keep = batch["row"] % world == rank
        if keep.any():
            yield {key: batch[key][keep], "target": batch["target"][keep]}


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


def report_epoch(metrics: dict, cfg: LoopConfig, rank: int,
                 save: Callable[[Path], None]) -> None:
    """Report an epoch's metrics to Ray Train, with a checkpoint that ``save(directory)``
    writes on rank 0 every ``checkpoint_every`` epochs and at the last."""
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


def resume_into(net: nn.Module, checkpoint, class_names: tuple[str, ...]
                ) -> tuple[int, dict | None]:
    """Load a Ray checkpoint (``model.pt`` beside ``train_state.pt``) into ``net``: ``(the
    epoch it finished, the optimizer's state)``, or ``(0, None)`` without one. The
    optimizer state is loaded once the model sits on its device."""
    if checkpoint is None:
        return 0, None
    with checkpoint.as_directory() as d:
        data = read_checkpoint(str(Path(d) / CHECKPOINT_FILE))
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
    if tuple(data["class_names"]) != tuple(class_names):
        raise RuntimeError(f"the checkpoint to resume from has classes "
                           f"{data['class_names']}, this run {list(class_names)}")
    net.load_state_dict(data["state_dict"])
    return int(data["epoch"]), state["optimizer"]


def _restore(loop: WorkerLoop, checkpoint):
    """``(the bare network, the module evaluation calls, that module in DDP on this
    worker's device, its optimizer, the last finished epoch)``."""
    import ray.train.torch as rtt

    net = loop.build()
    done, opt_state = resume_into(net, checkpoint, loop.cfg.card.class_names)
    model = loop.wrap(net)
    ddp = rtt.prepare_model(model)  # moved to the worker's device first, then wrapped
    opt = make_optimizer([p for p in ddp.parameters() if p.requires_grad], loop.cfg.optim)
    if opt_state is not None:  # the optimizer state follows the parameters' device
        opt.load_state_dict(opt_state)
    return net, model, ddp, opt, done


def _start(config: dict) -> WorkerLoop:
    """This worker's loop, with its torch threads and seed set."""
    import ray.train
    import ray.train.torch as rtt

    cfg = config["loop"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    torch.manual_seed(cfg.optim.seed)
    gen = torch.Generator().manual_seed(cfg.optim.seed * 1009 + rank)
    return cfg.worker(cfg, rank, world, rtt.get_device(), gen)


def _save(directory: Path, loop: WorkerLoop, net, opt, epoch: int, metrics: dict) -> None:
    loop.save(directory, net, epoch, metrics)
    torch.save({"optimizer": opt.state_dict(), "epoch": epoch}, directory / STATE_FILE)


def train_worker(config: dict) -> None:
    """Entry point of each Ray Train worker. ``config["loop"]`` is a task's
    :class:`LoopConfig`, ``config["threads"]`` the torch threads of this worker."""
    import ray.train

    loop = _start(config)
    cfg = loop.cfg
    net, model, ddp, opt, done = _restore(loop, ray.train.get_checkpoint())
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    for epoch in range(done + 1, cfg.optim.epochs + 1):
        maybe_fail(cfg, epoch, done + 1)
        t0 = time.perf_counter()
        train, examples = loop.train_epoch(ddp, train_shard, opt, epoch)
        train_s = time.perf_counter() - t0
        val = loop.evaluate(model, val_shard)
        metrics = {"epoch": epoch, **train, **val, f"{loop.unit}_per_s": examples / train_s,
                   "lr": opt.param_groups[0]["lr"], "epoch_s": time.perf_counter() - t0,
                   **cfg.extra["decode_errors"]}
        if not math.isfinite(metrics["train_loss"]):
            raise RuntimeError(f"training diverged at epoch {epoch} (loss "
                               f"{metrics['train_loss']}); lower optim.lr")
        report_epoch(metrics, cfg, loop.rank, partial(_save, loop=loop, net=net, opt=opt,
                                                      epoch=epoch, metrics=metrics))

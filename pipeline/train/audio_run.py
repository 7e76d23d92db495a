"""Run an audio training plan on Ray Train, as :mod:`pipeline.train.run` runs a
classification one: decode both splits once (each soundtrack's loudest window), fit a
``TorchTrainer`` running :func:`pipeline.train.audio_loop.audio_loop_per_worker`, and
publish the checkpoint with the best ``val_acc`` at ``<run>/best`` with its confusion
files. The epoch lines and the summary are classification's."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from pipeline.decode.stage import decode_audio_batch
from pipeline.ray_session import connect, disconnect
from pipeline.train.audio_augment import WaveAugment
from pipeline.train.audio_loop import AudioLoopConfig, audio_loop_per_worker
from pipeline.train.audio_plan import AudioTrainPlan
from pipeline.train.run import build_trainer, check_cluster, finish, fit, prepare_data

COLUMNS = ("row", "audio", "target")


def describe(plan: AudioTrainPlan) -> str:
    s, res, f = plan.spec, plan.spec.resources, plan.card.features
    return "\n".join([
        f"train {s.name} (audio): {plan.train_rows.num_rows} train / "
        f"{plan.val_rows.num_rows} val videos, {len(plan.card.class_names)} classes "
        f"{list(plan.card.class_names)[:12]}",
        f"  model : {s.model.arch} from weights {s.model.weights}, {s.optim.optimizer} lr "
        f"{s.optim.lr:g} ({s.optim.schedule}), {s.optim.epochs} epochs x "
        f"{s.optim.batch_size} windows/worker/step",
        f"  audio : {plan.decode.describe()}; the model hears {f['window_s']:g} s as "
        f"{f['n_mels']} log-mel bands every {f['hop_ms']:g} ms",
        f"  ray   : {res.workers} workers x {res.cpus_per_worker:g} CPU, "
        f"{res.gpus_per_worker:g} GPU; max_failures {s.max_failures}"
        + ("; resuming" if plan.resume else ""),
        f"  run   : {plan.run_dir} (checkpoints every {s.checkpoint.every} epoch(s), keep "
        f"{s.checkpoint.keep}; best -> {plan.best_dir})",
    ])


def loop_config(plan: AudioTrainPlan, ok_train: int, counts: dict[str, int],
                fail_at_epochs: tuple[int, ...] = ()) -> AudioLoopConfig:
    spec, a, f = plan.spec, plan.spec.augment, plan.card.features
    per_worker = ok_train // spec.resources.workers
    augment = WaveAugment(samples=round(f["window_s"] * f["sample_rate"]), gain_db=a.gain_db,
                          noise_prob=a.noise_prob, noise_snr_db=a.noise_snr_db,
                          freq_masks=a.freq_masks, freq_mask_bands=a.freq_mask_bands,
                          time_masks=a.time_masks, time_mask_frames=a.time_mask_frames)
    return AudioLoopConfig(
        start=plan.start, card=plan.card, optim=spec.optim, augment=augment,
        steps_per_epoch=max(1, math.ceil(per_worker / spec.optim.batch_size)),
        checkpoint_every=spec.checkpoint.every, fail_at_epochs=fail_at_epochs,
        extra={"decode_errors": counts, "spec": spec.model_dump(mode="json"),
               "sampling": plan.decode.record()})


def run_audio_training(plan: AudioTrainPlan, address: str | None = None,
                       log: Callable[[str], None] = print,
                       fail_at_epochs: tuple[int, ...] = ()) -> dict[str, Any]:
    """Train; return the summary (also written to ``<run>/train_summary.json``)."""
    t0 = time.perf_counter()
    handle = connect(plan.spec.resources, address, log)
    try:
        check_cluster(plan)
        log(describe(plan))
        train_ds, val_ds, ok_train, counts = prepare_data(
            plan, log, plan.decode, plan.decode, COLUMNS, decode_audio_batch)
        cfg = loop_config(plan, ok_train, counts, fail_at_epochs)
        trainer = build_trainer(plan, cfg, train_ds, val_ds, audio_loop_per_worker)
        result = fit(plan, trainer, log)
        summary = finish(plan, result, time.perf_counter() - t0, counts)
    finally:
        disconnect(handle)
    return summary

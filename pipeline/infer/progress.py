"""Job-level progress while a job runs: videos done, errors, videos per second.

Ray Data's own progress (rows per operator) is in the dashboard's Jobs / Ray Data views;
these counters add what a video job's user asks: how many videos are finished, how many
failed, how fast. Each model replica reports its batches to a tiny named actor (no CPU
reserved); the driver prints a line every ``interval_s``. The same batches are recorded as
Ray metrics (:mod:`pipeline.infer.metrics`) for Prometheus and Grafana.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipeline.console import PlainLines, ProgressView
from pipeline.decode.stage import dense_samples, unpack
from pipeline.infer.metrics import JobMetrics
from pipeline.output.rows import Batch, Provenance, rows_table, with_shot_columns

# Manifest rows read ahead of the videos done (ReadGate): far more than are in flight on a
# large cluster's decode tasks and replicas, far fewer than a manifest.
READ_AHEAD_ROWS = 100_000


@ray.remote(num_cpus=0)
class ProgressTracker:
    def __init__(self, total: int):
        self.total, self.ok, self.error = total, 0, 0
        self.t0 = time.time()
        self.first_row_at: float | None = None  # Unix times of the first and last batch out
        self.last_row_at: float | None = None
        self.first_decode_at: float | None = None  # Unix time the first decode task began
        self.attempts: dict[str, int] = {}

    def decode_started(self, at: float) -> None:
        self.first_decode_at = min(at, self.first_decode_at or at)

    def add(self, ok: float, error: float) -> None:
        self.ok += ok
        self.error += error
        self.last_row_at = time.time()
        self.first_row_at = self.first_row_at or self.last_row_at

    def snapshot(self) -> dict[str, float]:
        # Whole videos: a job per shot adds each shot as a share of its video.
        ok, error = int(self.ok + 1e-6), int(self.error + 1e-6)
        done, dt = int(self.ok + self.error + 1e-6), time.time() - self.t0
        return {"total": self.total, "done": done, "ok": ok, "error": error,
                "videos_per_s": done / dt if dt > 0 else 0.0,
                "first_row_at": self.first_row_at, "last_row_at": self.last_row_at,
                "first_decode_at": self.first_decode_at}

    def begin(self, video_id: str) -> int:
        """How many decode attempts of this video have now begun (unfinished ones count:
        their task died with them)."""
        self.attempts[video_id] = self.attempts.get(video_id, 0) + 1
        return self.attempts[video_id]

    def end(self, video_id: str) -> None:
        self.attempts.pop(video_id, None)


class Reporter:
    """Reports each output batch's outcome to the tracker and to the Ray metrics."""

    def __init__(self, job: str, task: str, tracker_name: str, namespace: str):
        self.tracker = ray.get_actor(tracker_name, namespace=namespace)
        self.metrics = JobMetrics(job, task)

    def report(self, table: pa.Table) -> None:
        """Count the batch's videos: a job per shot counts each shot row as its share of
        the video (1 / shot_count), so a video is done when all its shots are."""
        ok = pc.equal(table["status"], "ok")
        share = pa.array([1.0] * table.num_rows)
        if "shot_count" in table.column_names and "shot" in table.column_names:
            share = pc.divide(1.0, pc.fill_null(pc.cast(table["shot_count"], pa.float64()),
                                                1.0))
        done = float(pc.sum(share).as_py() or 0.0)
        good = float(pc.sum(pc.if_else(ok, share, 0.0)).as_py() or 0.0)
        self.tracker.add.remote(good, done - good)
        self.metrics.record(table)


class ReportingReplica:
    """A task's replica that also reports each batch's outcome (Ray Data builds one per
    actor, like the replica it wraps). The replica gets what it always got, dense sample
    columns with zeros for failed rows: the decode tasks' carriers of failed rows
    (``pipeline.decode.stage.pack_failed``) are unpacked, one call per carrier."""

    def __init__(self, replica: type, kwargs: dict, job: str, task: str, tracker_name: str,
                 namespace: str, per_shot: bool = False, decode=None, device: str = "cpu"):
        from pipeline.infer.gpu_check import refuse_unseen_gpu

        refuse_unseen_gpu()  # a GPU this replica's torch cannot see: fail, do not run on CPU
        self.replica = replica(**kwargs)
        self.reporter = Reporter(job, task, tracker_name, namespace)
        self.per_shot = per_shot  # segments: shots: the rows get the batch's shot columns
        # decode_on: replica: ``decode`` (a DecodeSpec) is decoded here, on the replica's
        # device (``device``: inference.device as the replica resolves it).
        self.decoder = None
        if decode is not None:
            from pipeline.decode.on_replica import ReplicaDecoder
            from pipeline.model.runtime import pick_device

            self.decoder = ReplicaDecoder(decode, pick_device(device),
                                          getattr(replica, "device_frames", False))

    def _rows(self, part: Batch) -> pa.Table:
        part = dense_samples(part)
        if self.decoder is not None:
            part = self.decoder(part)
        table = self.replica(part)
        return with_shot_columns(table, part) if self.per_shot else table

    def __call__(self, batch: Batch) -> pa.Table:
        tables = [self._rows(part) for part in unpack(batch)]
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        self.reporter.report(table)
        return table


_reporters: dict[str, Reporter] = {}
_clocked: set[str] = set()  # the jobs whose tracker this process told it began decoding


def _note_decode_start(tracker_name: str, namespace: str) -> None:
    """Tell the job's tracker when this process began decoding, once per process: the
    earliest is the job record's ``first_decode_s``. Only a clock: never fails a task."""
    if tracker_name not in _clocked:
        _clocked.add(tracker_name)
        try:
            ray.get_actor(tracker_name, namespace=namespace).decode_started.remote(time.time())
        except Exception:  # noqa: BLE001  (the tracker is gone: the job is ending)
            pass


class DecodeClock:
    """``on_start`` of inference's decode tasks (``pipeline.decode.stage.in_batches``):
    :func:`_note_decode_start`. Picklable."""

    def __init__(self, tracker_name: str, namespace: str):
        self.tracker_name, self.namespace = tracker_name, namespace

    def __call__(self) -> None:
        _note_decode_start(self.tracker_name, self.namespace)


class ReadGate:
    """Holds a read task of a streamed manifest back until the job's videos done are within
    ``window`` rows of the rows before its own (``ahead``). Read tasks only read and
    normalise, far faster than videos decode, and Ray Data queues their small blocks in
    the driver's memory: without the gate a 10,000,000-row job's driver grew ~85 MB per
    100,000 rows read ahead. Picklable; waits for the tracker of ``tracker_name``."""

    def __init__(self, tracker_name: str, namespace: str, window: int = READ_AHEAD_ROWS):
        self.tracker_name, self.namespace, self.window = tracker_name, namespace, window

    def __call__(self, ahead: int) -> None:
        if ahead <= self.window:
            return
        tracker = ray.get_actor(self.tracker_name, namespace=self.namespace)
        while ray.get(tracker.snapshot.remote())["done"] < ahead - self.window:
            time.sleep(0.2)


class RowGuard:
    """Counts decode attempts per video in the job's tracker, for decoding in the Ray worker
    (``decode_timeout_s: null``), where a crashing decoder kills the worker and Ray
    retries its task: a video on which :data:`MAX_DECODE_ATTEMPTS` attempts already died
    is not decoded again but becomes an error row (:func:`~pipeline.decode.stage.decode_batch`
    asks). Picklable; the actor is looked up once per process."""

    MAX_DECODE_ATTEMPTS = 2

    def __init__(self, tracker_name: str, namespace: str):
        self.tracker_name, self.namespace = tracker_name, namespace
        self._tracker = None

    def _actor(self):
        if self._tracker is None:
            self._tracker = ray.get_actor(self.tracker_name, namespace=self.namespace)
        return self._tracker

    def refuse(self, video_id: str) -> str | None:
        """Why this video is not decoded again, or None (then :meth:`done` follows)."""
        died = ray.get(self._actor().begin.remote(video_id)) - 1
        if died < self.MAX_DECODE_ATTEMPTS:
            return None
        return (f"decode: the decode task died {died} times while decoding this video (a "
                "decoder crash inside the Ray worker, decode_timeout_s: null); not tried "
                "again. The default decode_timeout_s decodes in a confined child instead")

    def done(self, video_id: str) -> None:
        self._actor().end.remote(video_id)


def decode_only(batch: Batch, spec: Any, decode_stage: Callable[..., Batch],
                schema: pa.Schema, provenance: Provenance, task: str, tracker_name: str,
                namespace: str, guard: RowGuard | None = None) -> pa.Table:
    """The whole ``mode: decode_only`` job for one batch, in the decode task: the task's
    ``decode_stage``, then the output rows with null task columns (frames are dropped,
    never shipped)."""
    _note_decode_start(tracker_name, namespace)
    table = rows_table(decode_stage(batch, spec=spec, guard=guard), schema, provenance)
    if tracker_name not in _reporters:
        _reporters[tracker_name] = Reporter(provenance.job, task, tracker_name, namespace)
    _reporters[tracker_name].report(table)
    return table


def format_progress(s: dict[str, float]) -> str:
    return (f"progress: {s['done']}/{s['total']} videos ({s['ok']} ok, {s['error']} error), "
            f"{s['videos_per_s']:.2f} videos/s")


class ProgressReporter:
    """Owns the tracker actor and the driver thread that shows its counts: ``view(job,
    total)`` (:mod:`pipeline.console`) makes what shows them; by default a plain line every
    10 s and one at the end."""

    def __init__(self, job: str, total: int, log: Callable[[str], None],
                 view: Callable[[str, int], ProgressView] | None = None):
        self.name = f"vidbatch-progress-{job}-{time.time_ns()}"
        self.namespace = ray.get_runtime_context().namespace
        self.tracker = ProgressTracker.options(name=self.name).remote(total)
        self.view = (view or (lambda job, total: PlainLines(log, format_progress)))(job, total)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.final: dict[str, float] = {}  # the last snapshot, once the job has ended

    def _loop(self) -> None:
        while not self._stop.wait(self.view.interval_s):
            try:
                self.view.update(ray.get(self.tracker.snapshot.remote(), timeout=5))
            except Exception:  # progress is best effort; never fail the job for it
                pass

    def __enter__(self) -> ProgressReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        try:
            self.final = ray.get(self.tracker.snapshot.remote(), timeout=5)
        except Exception:
            pass
        self.view.finish(self.final)
        ray.kill(self.tracker)

"""What the driver shows a person: vidbatch's own lines, one live progress display on a
terminal, and nothing of Ray's unless ``--verbose``.

* **Ray's output goes to Ray's logs.** While a command runs Ray (:meth:`Console.session`),
  the driver's standard error (file descriptor 2 and ``sys.stderr``) is a log file: Ray's
  Python logging (its handlers write to whatever ``sys.stderr`` is), Ray Data's operator
  tables, the core worker's native lines and any native decoder in the driver land there.
  Once Ray is up, the file moves into the session's ``logs/`` folder, where the dashboard's
  Logs page shows it (:meth:`Console.adopt`). Workers' output stays in their own log files
  (``ray.init(log_to_driver=False)``, :func:`pipeline.ray_session.connect`). vidbatch
  prints to standard output, and its error messages go out after the session, to the
  terminal's own standard error.
* **On a terminal, a live display** (rich): videos done of the total, ok and error,
  videos/s and the time left for a job (:class:`JobBar`); epoch, step, loss, the last
  validation metric and the time left for training (:class:`TrainBar`). Off a terminal
  (CI, logs, the Jobs API), the periodic plain lines of before (:class:`PlainLines`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

DRIVER_LOG = "vidbatch-driver-{pid}.log"


class ProgressView(Protocol):
    """Where a running command's progress goes: ``update`` every ``interval_s`` with the
    latest figures, ``finish`` once with the last."""

    interval_s: float

    def update(self, figures: dict[str, Any]) -> None: ...

    def finish(self, figures: dict[str, Any]) -> None: ...


class PlainLines:
    """Off a terminal: one plain line every ``interval_s`` and one at the end."""

    def __init__(self, log: Callable[[str], None], fmt: Callable[[dict[str, Any]], str],
                 interval_s: float = 10.0):
        self.log, self.fmt, self.interval_s = log, fmt, interval_s

    def update(self, figures: dict[str, Any]) -> None:
        self.log(self.fmt(figures))

    def finish(self, figures: dict[str, Any]) -> None:
        if figures:
            self.log(self.fmt(figures))


def _clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:  # unknown or NaN
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class _Bar:
    """A rich progress display of one task, with our own figures as its text."""

    interval_s = 0.5

    def __init__(self, console, title: str, total: float, unit: str):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(bar_width=30),
            TextColumn("{task.fields[text]}"), TimeElapsedColumn(),
            console=console, redirect_stdout=False, redirect_stderr=False)
        self.task = self.progress.add_task(title, total=total or None, text=f"0 {unit}")
        self.progress.start()

    def update(self, figures: dict[str, Any]) -> None:
        raise NotImplementedError

    def show(self, completed: float, text: str) -> None:
        self.progress.update(self.task, completed=completed, text=text)

    def finish(self, figures: dict[str, Any]) -> None:
        if figures:
            self.update(figures)
        self.progress.refresh()
        self.progress.stop()


class JobBar(_Bar):
    """A job's live line: ``12/40 videos  11 ok  1 error  1.8 videos/s  ETA 0:00:15``."""

    def __init__(self, console, job: str, total: int):
        super().__init__(console, job, total, "videos")

    def update(self, f: dict[str, Any]) -> None:
        rate, left = f["videos_per_s"], f["total"] - f["done"]
        eta = "done" if not left else f"ETA {_clock(left / rate if rate else None)}"
        self.show(f["done"], f"{f['done']}/{f['total']} videos  [green]{f['ok']} ok[/]  "
                  f"[{'red' if f['error'] else 'dim'}]{f['error']} error[/]  "
                  f"{rate:.2f} videos/s  {eta}")


class TrainBar(_Bar):
    """Training's live line: ``epoch 2/5  step 14/40  loss 0.412  val top1 0.81  ETA``."""

    def __init__(self, console, name: str, epochs: int, steps_per_epoch: int):
        super().__init__(console, name, epochs * steps_per_epoch, "steps")
        self.epochs, self.steps = epochs, steps_per_epoch
        self.first: tuple[float, int] | None = None  # (when, steps done) at the first step

    def update(self, f: dict[str, Any]) -> None:
        epoch, step = f.get("epoch", 1), f.get("step", 0)
        done, now = (epoch - 1) * self.steps + step, time.monotonic()
        # The rate from the first step seen on: the workers' start-up is not a step's time.
        if done and self.first is None:
            self.first = (now, done)
        rate = ((done - self.first[1]) / (now - self.first[0])
                if self.first and done > self.first[1] else 0.0)
        eta = _clock((self.epochs * self.steps - done) / rate if rate else None)
        loss = f"loss {f['loss']:.3f}" if f.get("loss") is not None else "loss -"
        val = f"  {f['metric']} {f['value']:.3f}" if f.get("value") is not None else ""
        self.show(done, f"epoch {epoch}/{self.epochs}  step {step}/{self.steps}  {loss}"
                  f"{val}  ETA {eta}")


class Console:
    """The driver's terminal for one command. ``verbose``: Ray's output too, as Ray
    prints it. ``live``: a live display (default: when ``file``, standard output unless
    given, is a terminal)."""

    def __init__(self, verbose: bool = False, live: bool | None = None, file=None):
        from rich.console import Console as RichConsole

        self.verbose, self.file = verbose, file or sys.stdout
        self.live = self.file.isatty() if live is None else live
        self.rich = RichConsole(file=self.file, highlight=False, soft_wrap=True,
                                force_terminal=self.live)
        self.log_path: Path | None = None  # where Ray's output went, once a session ran
        self.adopted = False  # the log is in the Ray session's logs folder

    @property
    def quiet(self) -> bool:
        return not self.verbose

    def line(self, text: str) -> None:
        """One of vidbatch's lines (above a live display, when one is up)."""
        if self.live:
            self.rich.print(text, markup=False)
        else:
            print(text, file=self.file, flush=True)

    def job_view(self, plain: Callable[[dict[str, Any]], str]) -> Callable[..., ProgressView]:
        """``view(job, total)`` for a job's progress; off a terminal, ``plain`` lines."""
        if self.live:
            return lambda job, total: JobBar(self.rich, job, total)
        return lambda job, total: PlainLines(self.line, plain)

    def train_view(self) -> Callable[..., ProgressView] | None:
        """``view(name, epochs, steps_per_epoch)`` for training on a terminal; None off one
        (the epoch lines are the progress)."""
        if self.live:
            return lambda name, epochs, steps: TrainBar(self.rich, name, epochs, steps)
        return None

    @contextlib.contextmanager
    def session(self) -> Iterator[Console]:
        """While Ray runs in this process: its output into a log file (not verbose)."""
        if self.verbose:
            yield self
            return
        import ray.data

        # Ray Data's own progress bars would draw into the log; the dashboard shows them.
        ray.data.DataContext.get_current().enable_progress_bars = False
        fd, name = tempfile.mkstemp(prefix="vidbatch-driver-", suffix=".log")
        self.log_path = Path(name)
        saved_fd, saved_stream = os.dup(2), sys.stderr
        sys.stderr.flush()
        os.dup2(fd, 2)
        os.close(fd)
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        try:
            yield self
        finally:
            sys.stderr.flush()
            sys.stderr = saved_stream
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            self._drop_if_unused()

    def _drop_if_unused(self) -> None:
        """The temporary log of a command that started no Ray and to which nothing was
        written (it used a Ray this process already had) is not kept."""
        path = self.log_path
        if path is not None and not self.adopted and path.stat().st_size == 0:
            path.unlink()
            self.log_path = None

    def adopt(self, logs_dir: str | None) -> None:
        """Move the driver's log into Ray's session ``logs_dir`` (the dashboard lists it).
        Another filesystem: it stays where it is."""
        if self.log_path is None or not logs_dir:
            return
        dest = Path(logs_dir) / DRIVER_LOG.format(pid=os.getpid())
        with contextlib.suppress(OSError):
            os.replace(self.log_path, dest)  # the open descriptor follows the file
            self.log_path, self.adopted = dest, True

    def where_logs_went(self) -> str | None:
        """The line that says where Ray's output is, when it is not here."""
        if self.log_path is None:
            return None
        where = self.log_path.parent if self.adopted else self.log_path  # a folder of logs
        return f"ray's logs: {where} (--verbose prints them here)"


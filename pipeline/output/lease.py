"""One writer per output directory: a lease file with a heartbeat.

A run takes the lease before it writes (``_vidbatch_lease.json``: who holds it, since when,
the last heartbeat) and renews it every :data:`HEARTBEAT_S` from a thread; a second run
that finds a lease renewed within :data:`STALE_S` is refused with the holder named. A lease
older than that was left by a run that died: it is taken over. Taking it is a write then a
read-back, so of two runs that take a stale lease at once, the one whose write landed
second sees the other's name and stops. A lease whose holder was a process of this machine
that has died (a killed driver) is taken over at once. Works the same on local disks and
object stores
(a whole-object write is atomic there), through :class:`~pipeline.output.outdir.OutputDir`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from pipeline.errors import OutputError
from pipeline.output.outdir import OutputDir
from pipeline.output.store import LEASE

HEARTBEAT_S = 10.0
STALE_S = 60.0  # six missed heartbeats
SETTLE_S = 1.0  # wait before the read-back that confirms a takeover


def read_lease(out: OutputDir) -> dict[str, Any] | None:
    try:
        text = out.read_text(LEASE)
        return None if text is None else json.loads(text)
    except (OSError, json.JSONDecodeError):
        return None  # unreadable: treated as no lease (a torn local write cannot happen)


def _gone(lease: dict[str, Any]) -> bool:
    """Whether the lease's holder was a process of this machine that no longer runs (a
    killed driver): its lease needs no waiting for."""
    if lease.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(lease.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False
    return False


def live_holder(out: OutputDir, now: float | None = None) -> dict[str, Any] | None:
    """The lease's holder when it was renewed within :data:`STALE_S` by a process that
    may still run, else None."""
    lease = read_lease(out)
    now = time.time() if now is None else now
    if lease is None or now - float(lease.get("heartbeat", 0)) > STALE_S or _gone(lease):
        return None
    return lease


def describe_holder(lease: dict[str, Any], now: float | None = None) -> str:
    age = (time.time() if now is None else now) - float(lease.get("heartbeat", 0))
    return (f"run {lease.get('run')} of job {lease.get('job')!r} (pid {lease.get('pid')} on "
            f"{lease.get('host')}, since {lease.get('since_utc')}, last heartbeat "
            f"{age:.0f} s ago)")


def refuse_if_held(out: OutputDir) -> None:
    """A ``OutputError`` naming the holder when another run holds the lease."""
    holder = live_holder(out)
    if holder is not None:
        raise OutputError(f"output.path {out} is being written by {describe_holder(holder)}. "
                          "Wait for it to finish (or stop it), then run again; a lease "
                          f"that is not renewed for {STALE_S:.0f} s is taken over.")


class OutputLease:
    """The lease of one run; a context manager that takes, renews and gives it back."""

    def __init__(self, out: OutputDir, run: str, job: str,
                 log: Callable[[str], None] = print):
        self.out, self.run, self.job, self.log = out, run, job, log
        self.since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.lost: str | None = None  # why the lease was lost, if it was
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="vidbatch-lease",
                                        daemon=True)

    def _write(self) -> None:
        self.out.write_text(LEASE, json.dumps({
            "run": self.run, "job": self.job, "pid": os.getpid(),
            "host": socket.gethostname(), "since_utc": self.since,
            "heartbeat": time.time()}))

    def acquire(self) -> OutputLease:
        refuse_if_held(self.out)
        stale = read_lease(self.out)
        self.out.make()
        self._write()
        if stale is not None:
            self.log(f"took over the stale lease of {describe_holder(stale)}")
            time.sleep(SETTLE_S)
        mine = read_lease(self.out)
        if mine is None or mine.get("run") != self.run:
            raise OutputError(f"output.path {self.out} was taken by "
                              f"{describe_holder(mine or {})} at the same time; run again "
                              "once it has finished")
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            lease = read_lease(self.out)
            if lease is not None and lease.get("run") != self.run:
                self.lost = f"the lease was taken by {describe_holder(lease)}"
                return
            try:
                self._write()
            except OSError as e:  # a transient store error: try again next beat
                self.log(f"could not renew the output lease: {e}")

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        lease = read_lease(self.out)
        if lease is not None and lease.get("run") == self.run:
            self.out.remove_file(LEASE)

    def __enter__(self) -> OutputLease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

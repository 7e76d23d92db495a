"""Run one contender in its own process session and measure it from the outside.

Wall time: from ``Popen`` to the process's exit, so Python start-up, imports and Ray
start-up/shutdown are included. CPU: the machine's busy core-seconds from ``Popen`` until
the session's last process is gone, less the sampler's own (a far steadier figure than wall
time on a shared host, and what a job costs on a saturated machine). Memory: the sampler
(:class:`Sampler`, within a CPU budget) walks ``/proc`` for the process tree: the
contender, all its descendants (Ray's gcs_server, raylet, dashboard, workers, ffmpeg
children, ...) plus any process still in its session (it is a session leader), so daemons
re-parented to init are counted too, and, for a job that attaches to a running Ray, the
processes of the session that started that Ray. For each it reads ``/proc/PID/smaps_rollup``:

* **PSS** (proportional set size; the figure we report): shared pages are divided among the
  processes that map them, so the sum counts shared libraries and Ray's object store
  (shared memory in /dev/shm, mapped by raylet and the workers) once;
* **RSS**: the same sum with shared pages counted in every process (an upper bound).

Pages of the object store that no process maps are not counted (Ray maps its whole store).
Processes left in the session after the contender exits are waited for, then terminated by
pid, so that one contender's Ray cannot disturb the next.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path


def _fields(pid: int | str) -> list[str] | None:
    """``/proc/PID/stat`` after the command name (state, ppid, pgrp, sid, ...), or None if
    the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _stat(pid: str) -> tuple[int, int] | None:
    """``(ppid, sid)`` of a process, or None if it is gone."""
    fields = _fields(pid)
    return None if fields is None else (int(fields[1]), int(fields[3]))


def start_time(pid: int) -> int | None:
    """When a running process started (clock ticks after boot): with the pid, it names one
    process even if the pid is reused. None once it is gone or a zombie."""
    fields = _fields(pid)
    return None if fields is None or fields[0] in "ZX" else int(fields[19])


def tree(root: int, sessions: tuple[int, ...] = ()) -> list[int]:
    """``root``, its descendants, and the processes of its session and of ``sessions``."""
    info = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(p))}
    members = {pid for pid, (_, sid) in info.items() if sid == root or sid in sessions}
    members.add(root)
    frontier = list(members)
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in info.items():
            if ppid == parent and pid not in members:
                members.add(pid)
                frontier.append(pid)
    return sorted(p for p in members if p in info)


def memory_kb(pid: int) -> tuple[int, int]:
    """``(pss, rss)`` in kB; zeros for a process that is gone."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0, 0
    values = {ln.split(":")[0]: int(ln.split()[1]) for ln in lines if ln.startswith(("Pss:",
                                                                                     "Rss:"))}
    return values.get("Pss", 0), values.get("Rss", 0)


class Sampler(threading.Thread):
    """Peak PSS/RSS sums (MiB) and peak process count of a process tree.

    Reading ``smaps_rollup`` walks a process's page tables, so sampling costs CPU taken from
    the cores the job runs on, and more for a local Ray's ~27 processes than for a
    one-process contender: once a second it took 6.8 core-s in 40 s of the clip job (17 %
    of one core, 8.5 % of this 2-core machine). So the sampler keeps to a CPU budget: after
    each sample it waits ``interval_s`` or the sample's own CPU time / ``budget``, whichever
    is longer (~0.17 s per sample of a local Ray -> one every ~7 s; the one-process
    contenders are still sampled once a second). The jobs' memory plateaus over tens of
    seconds; a peak shorter than the wait can be missed. ``sessions``: other process
    sessions counted with the tree (a Ray cluster the contender attaches to)."""

    def __init__(self, root: int, interval_s: float = 1.0, budget: float = 0.025,
                 sessions: tuple[int, ...] = ()):
        super().__init__(daemon=True)
        self.root, self.interval_s, self.budget = root, interval_s, budget
        self.sessions = sessions
        self.peak_pss = self.peak_rss = self.peak_procs = self.samples = 0
        self.cpu_s = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.thread_time()
            pids = tree(self.root, self.sessions)
            mem = [memory_kb(p) for p in pids]
            self.peak_pss = max(self.peak_pss, sum(m[0] for m in mem))
            self.peak_rss = max(self.peak_rss, sum(m[1] for m in mem))
            self.peak_procs = max(self.peak_procs, len(pids))
            spent = time.thread_time() - t0
            self.cpu_s += spent
            self.samples += 1
            self.stop.wait(max(self.interval_s, spent / self.budget))


def _reap_session(root: int, grace_s: float = 20.0) -> int:
    """Wait for leftovers of the session to exit; terminate the stubborn ones by pid."""
    deadline = time.time() + grace_s
    while (left := [p for p in tree(root) if p != root]) and time.time() < deadline:
        time.sleep(0.5)
    for pid in left:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return len(left)


def _read_lines(stream, log_path: Path, lines: list[tuple[float, str]]) -> None:
    with log_path.open("w") as log:
        for line in stream:  # timestamps are taken as lines arrive
            lines.append((time.time(), line.rstrip("\n")))
            log.write(line)


def busy_core_s() -> float:
    """Core-seconds this machine has spent busy since boot (``/proc/stat``: user, nice,
    system, irq, softirq; idle, iowait and time stolen by a hypervisor excluded)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def run_measured(argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 sessions: tuple[int, ...] = ()) -> dict:
    """Run ``argv``; return wall time, exit code, peak memory and timestamped output lines.
    ``sessions``: process sessions whose memory counts with the contender's (see Sampler)."""
    lines: list[tuple[float, str]] = []
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0, busy0 = time.perf_counter(), busy_core_s()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True, bufsize=1)
    sampler = Sampler(proc.pid, sessions=sessions)
    sampler.start()
    # A reader thread, because a daemon that inherited the pipe would keep it open.
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, log_path, lines),
                              daemon=True)
    reader.start()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    killed = _reap_session(proc.pid)
    busy = busy_core_s() - busy0
    sampler.stop.set()
    sampler.join()
    reader.join(timeout=5)
    return {"rc": rc, "wall_s": wall, "peak_pss_mb": sampler.peak_pss / 1024,
            "peak_rss_mb": sampler.peak_rss / 1024, "peak_procs": sampler.peak_procs,
            "leftover_processes_terminated": killed, "memory_samples": sampler.samples,
            "sampler_cpu_s": round(sampler.cpu_s, 2),
            # the machine's CPU time during the run, less the sampler's own (the harness is
            # otherwise idle; nothing else may run during a benchmark)
            "cpu_core_s": round(busy - sampler.cpu_s, 1), "lines": list(lines)}

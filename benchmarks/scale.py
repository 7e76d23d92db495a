"""Manifests of 1, 10 and 100 million rows (issue 32): the driver's memory and time before
the first video, as the manifest grows. Paths name files that do not exist, so every row
is an error row after a failed open: the manifest's cost, not decoding's, is measured.

    python benchmarks/scale.py                        # 1M, 10M, 100M: dry run, interrupted run
    python benchmarks/scale.py --rows 1000000 --cases dry_run        # one size, one case
    python benchmarks/scale.py --rows 10000000 --cases complete      # halfway, then --resume
    python benchmarks/scale.py --rows 100000000 --cases duplicates

Cases, each ``vidbatch submit jobs/classify.yaml`` in a process of its own:

* ``dry_run``: ``--dry-run``: the whole-manifest checks and the plan; wall time and the
  process's peak RSS (``wait4``).
* ``interrupted``: the job, stopped with SIGINT (Ctrl-C) once 200,000 rows are on disk:
  from the job record (written on interruption), the first decode task's start and the
  driver's peak RSS, both from the command's start; whether it stopped cleanly (exit within
  60 s, no Ray process left); then ``--resume --dry-run``: the rows it counts as done (all
  the rows on disk) and its wall time.
* ``rss``: the job for 270 s, its driver's RSS and the rows on disk sampled every 15 s:
  rows/s and MiB per 100,000 rows over the second half of the samples.
* ``complete``: the job, interrupted halfway, then ``--resume`` to the end; every manifest
  row present once (read back with DuckDB), each run's rows/s, and the first run's driver
  RSS sampled every 60 s (it spans several windows of ``dataflow.WINDOW_ROWS``).
* ``duplicates``: the manifest plus a shard repeating 3 of its paths: the dry run must fail,
  naming them; its wall time and peak RSS.

Manifests are directories of Parquet shards of 1,000,000 rows (one file for 1,000,000),
written once with DuckDB under ``benchmarks/data/scale/``. Results: ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import vidbatch_jobs
import videos

REPO = Path(__file__).resolve().parents[1]
DATA = videos.DATA / "scale"
WORK = videos.BENCH_DIR / "results" / "tmp" / "scale"
CASES = ("dry_run", "interrupted", "rss", "complete", "duplicates")
SHARD = 1_000_000
STOP_AT = 200_000


def manifest(rows: int) -> Path:
    """``rows`` paths of missing files, in shards of :data:`SHARD` rows (derived ids)."""
    folder = DATA / f"m{rows}"
    if (folder / "_done").exists():
        return folder if rows > SHARD else folder / "part-0.parquet"
    folder.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    for k in range(max(1, rows // SHARD)):
        n = min(SHARD, rows - k * SHARD)
        con.execute(
            f"COPY (SELECT '/nonexistent-vidbatch/part-' || lpad(((i + {k * SHARD}) // 10000)"
            "::VARCHAR, 5, '0') || '/clip-' || lpad((i + "
            f"{k * SHARD})::VARCHAR, 9, '0') || '.mp4' AS path FROM range({n}) t(i)) TO "
            f"'{folder / f'part-{k}.parquet'}' (FORMAT parquet, ROW_GROUP_SIZE {SHARD})")
    (folder / "_done").touch()
    return manifest(rows)


def with_duplicates(rows: int) -> Path:
    """The manifest of ``rows`` plus a shard repeating three of its paths."""
    base = manifest(rows)
    folder = DATA / f"dups{rows}"
    if not folder.exists():
        folder.mkdir(parents=True)
        for f in (sorted(base.glob("part-*.parquet")) if base.is_dir() else [base]):
            (folder / f.name).symlink_to(f)
        t = pq.read_table(folder / "part-0.parquet").take([7, 123_456 % rows, rows // 2 % SHARD])
        pq.write_table(t, folder / "zz-repeated.parquet")
    return folder


def argv(src: Path, out: Path, *extra: str) -> list[str]:
    return [vidbatch_jobs._exe(), "submit", str(REPO / "jobs" / "classify.yaml"),
            "--set", f"manifest={src}", "--set", f"output.path={out}",
            "--set", "max_error_fraction=1", *extra]


def timed(cmd: list[str]) -> dict:
    """Run ``cmd``: its wall time, exit status, own peak RSS (MiB, from ``wait4``) and the
    tail of its output."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)
        log.seek(0)
        tail = log.read()[-3000:].decode(errors="replace")
    return {"wall_s": round(time.perf_counter() - t0, 2),
            "rc": os.waitstatus_to_exitcode(status),
            "peak_rss_mb": round(usage.ru_maxrss / 1024), "tail": tail}


_COUNTED: dict[Path, int] = {}  # files' rows, once their footer could be read


def rows_on_disk(out: Path) -> int:
    """The rows in ``out``'s data files (each file's footer read once: a job writes
    thousands, and this is polled every second)."""
    total = 0
    for f in out.glob("*.parquet"):
        if f not in _COUNTED:
            try:
                _COUNTED[f] = pq.read_metadata(f).num_rows
            except Exception:  # being written
                continue
        total += _COUNTED[f]
    return total


def ray_left() -> int:
    found = subprocess.run(["pgrep", "-f", "raylet|gcs_server"], capture_output=True, text=True)
    return len(found.stdout.split())


def interrupt_at(cmd: list[str], out: Path, rows: int) -> dict:
    """Run ``cmd`` until ``rows`` rows are on disk, then SIGINT it as Ctrl-C does."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    samples, last = [], t0
    while p.poll() is None and (done := rows_on_disk(out)) < rows:
        time.sleep(1)
        if time.perf_counter() - last >= 60:  # the driver's RSS as rows flow
            last = time.perf_counter()
            samples.append((round(last - t0), done, rss_mib(p.pid)))
    sent = time.perf_counter()
    os.killpg(p.pid, signal.SIGINT)
    try:
        os.wait4(p.pid, 0)
        stopped = round(time.perf_counter() - sent, 1)
    except ChildProcessError:
        stopped = None
    time.sleep(2)
    record = json.loads((out / "_vidbatch_job.json").read_text())
    return {"wall_s": round(sent - t0, 1), "stop_s": stopped, "state": record["state"],
            "rss_samples": samples,
            "rows_on_disk": rows_on_disk(out), "ray_processes_left": ray_left(),
            **{k: record.get("timing", {}).get(k) for k in
               ("ray_ready_s", "first_decode_s", "driver_peak_rss_mb")}}


def rss_mib(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) // 1024
    except (OSError, IndexError):
        return None


def sampled(cmd: list[str], out: Path, seconds: float) -> dict:
    """Run ``cmd`` for ``seconds``, sampling its RSS (``VmRSS``) and the rows on disk every
    15 s, then SIGINT it: how the driver's memory moves as rows flow."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    t0, samples = time.perf_counter(), []
    while p.poll() is None and time.perf_counter() - t0 < seconds:
        time.sleep(15)
        if (rss := rss_mib(p.pid)) is None:
            break
        samples.append((round(time.perf_counter() - t0), rows_on_disk(out), rss))
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGINT)
        p.wait()
    (t1, r1, m1), (t2, r2, m2) = samples[len(samples) // 2], samples[-1]
    return {"samples": samples, "rows_per_s": round((r2 - r1) / max(1, t2 - t1)),
            "mib_per_100k_rows": round((m2 - m1) / max(1, r2 - r1) * 1e5, 1)}


def plan_counts(tail: str) -> str:
    return next((ln.strip() for ln in tail.splitlines() if ln.startswith("job ")), "")


def run_case(case: str, rows: int) -> dict:
    out = WORK / f"{case}_{rows}"
    subprocess.run(["rm", "-rf", str(out)], check=True)  # this benchmark's own folder
    _COUNTED.clear()
    src = manifest(rows)
    if case == "dry_run":
        r = timed(argv(src, out, "--dry-run"))
        return {**r, "ok": r["rc"] == 0}
    if case == "duplicates":
        r = timed(argv(with_duplicates(rows), out, "--dry-run"))
        return {**r, "ok": r["rc"] != 0 and "duplicate video ids" in r["tail"]}
    if case == "rss":  # the second half of the samples: steady state
        r = sampled(argv(src, out), out, 270)
        return {**r, "ok": bool(r["samples"])}
    if case == "interrupted":
        r = interrupt_at(argv(src, out), out, STOP_AT)
        resumed = timed(argv(src, out, "--resume", "--dry-run"))
        return {**r, "resume_dry_run_s": resumed["wall_s"], "resume_plan": plan_counts(
            resumed["tail"]), "ok": r["state"] == "interrupted" and r["ray_processes_left"] == 0
            and f"({r['rows_on_disk']} already done" in resumed["tail"]}
    first = interrupt_at(argv(src, out), out, rows // 2)
    resumed = timed(argv(src, out, "--resume"))
    record = json.loads((out / "_vidbatch_job.json").read_text())
    n, unique = duckdb.sql(f"SELECT count(*), count(DISTINCT video_id) FROM "
                           f"read_parquet('{out}/*.parquet')").fetchall()[0]
    return {"first_run": first, "resume": {k: resumed[k] for k in ("wall_s", "rc",
            "peak_rss_mb")}, "resume_timing": record.get("timing"), "rows": n,
            "unique_ids": unique, "rows_per_s_resume": round(
                record["counts"]["processed_this_run"] / resumed["wall_s"]),
            "ok": resumed["rc"] == 0 and n == unique == rows}


def main(argv_: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="1000000,10000000,100000000")
    p.add_argument("--cases", default="dry_run,interrupted", help=",".join(CASES))
    args = p.parse_args(argv_)
    # Started in the background by a shell (`... &`), this process ignores SIGINT, and so
    # would each vidbatch it starts: Ctrl-C (the interrupted cases) would not reach them.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    WORK.mkdir(parents=True, exist_ok=True)
    runs = []
    for rows in map(int, args.rows.split(",")):
        for case in args.cases.split(","):
            row = {"case": case, "rows": rows, **run_case(case, rows)}
            runs.append(row)
            print(json.dumps(row), flush=True)
    path = videos.BENCH_DIR / "results" / f"scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(runs, indent=1))
    print(f"all runs: {path}")
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

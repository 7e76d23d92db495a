"""Interleaved A/B of two source trees on one vidbatch job: is a change faster?

    git worktree add /tmp/before HEAD~1
    python benchmarks/ab.py /tmp/before . JOB.yaml --rounds 5 [-- --address auto]

Each round runs ``python -m pipeline.cli submit JOB.yaml --overwrite`` once per tree, with
that tree first on ``PYTHONPATH`` (a local Ray's workers inherit it), the order swapped
every round so that neither side always runs on a machine the other just warmed. It prints
each run's wall time and the machine's busy CPU core-seconds (``/proc/stat``, until
``--settle`` seconds after the process exits, so that a local Ray's shutdown counts), then
the medians and ranges. Short jobs show fixed costs (start-up, exit) that the run-to-run
noise of a 96-video job hides. Nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procs import busy_core_s


def run(tree: Path, job: Path, extra: list[str], settle_s: float) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}
    # PATH: the `ray` beside this Python; cwd: an empty folder, so that neither tree (nor a
    # folder holding Ray's session directory `ray/`) shadows the imports.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    with tempfile.TemporaryDirectory() as cwd:
        t0, busy0 = time.perf_counter(), busy_core_s()
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "submit", str(job),
                               "--overwrite", *extra], cwd=cwd, env=env, capture_output=True,
                              text=True)
        wall = time.perf_counter() - t0
        time.sleep(settle_s)
        cpu = busy_core_s() - busy0
    if done.returncode != 0:
        sys.exit(f"{tree}: exit {done.returncode}\n{(done.stdout + done.stderr)[-2000:]}")
    return wall, cpu


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before", type=Path, help="source tree A (e.g. a git worktree)")
    p.add_argument("after", type=Path, help="source tree B")
    p.add_argument("job", type=Path, help="the job YAML both run")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--settle", type=float, default=3.0, help="seconds counted after exit")
    p.epilog = "Arguments after -- go to `vidbatch submit` (e.g. -- --address auto)."
    argv = sys.argv[1:] if argv is None else list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:cut])
    args.extra = argv[cut + 1:]
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    job = args.job.resolve()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for r in range(args.rounds):
        for name in (["before", "after"] if r % 2 == 0 else ["after", "before"]):
            wall, cpu = run(trees[name], job, args.extra, args.settle)
            results[name].append((wall, cpu))
            print(f"round {r} {name}: wall {wall:.1f} s, CPU {cpu:.1f} core-s", flush=True)
    for name, rows in results.items():
        walls, cpus = [w for w, _ in rows], [c for _, c in rows]
        print(f"{name} ({trees[name]}): wall median {statistics.median(walls):.1f} s "
              f"({min(walls):.1f}-{max(walls):.1f}), CPU median {statistics.median(cpus):.1f} "
              f"core-s ({min(cpus):.1f}-{max(cpus):.1f})")
    faster = sum(a[0] < b[0] for a, b in zip(results["after"], results["before"]))
    print(f"after faster than before in {faster} of {args.rounds} rounds (wall)")


if __name__ == "__main__":
    main()

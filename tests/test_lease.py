"""One writer per output: the lease refuses a second run by name, and a dead run's lease is
taken over."""

from __future__ import annotations

import json
import time

import pytest

import pipeline.output.lease as lease_mod
from pipeline.errors import OutputError
from pipeline.output.lease import OutputLease, live_holder, read_lease
from pipeline.output.outdir import OutputDir
from pipeline.output.store import LEASE


def quiet(_):
    pass


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    out = OutputDir.at(str(tmp_path / "out"))
    with OutputLease(out, "run-a", "job-a", quiet):
        with pytest.raises(OutputError, match=r"being written by run run-a of job 'job-a'"):
            OutputLease(out, "run-b", "job-b", quiet).acquire()
    assert read_lease(out) is None  # given back


def test_a_stale_lease_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setattr(lease_mod, "SETTLE_S", 0.01)
    out = OutputDir.at(str(tmp_path / "out"))
    out.make()
    dead = {"run": "dead", "job": "j", "pid": 1, "host": "h", "since_utc": "x",
            "heartbeat": time.time() - lease_mod.STALE_S - 1}
    out.write_text(LEASE, json.dumps(dead))
    assert live_holder(out) is None
    lines = []
    with OutputLease(out, "alive", "j", lines.append):
        assert read_lease(out)["run"] == "alive"
    assert "took over the stale lease of run dead" in lines[0]


def test_the_heartbeat_renews_and_notices_a_taker(tmp_path, monkeypatch):
    monkeypatch.setattr(lease_mod, "HEARTBEAT_S", 0.05)
    out = OutputDir.at(str(tmp_path / "out"))
    lease = OutputLease(out, "mine", "j", quiet).acquire()
    first = read_lease(out)["heartbeat"]
    time.sleep(0.3)
    assert read_lease(out)["heartbeat"] > first
    out.write_text(LEASE, json.dumps({**read_lease(out), "run": "thief"}))
    time.sleep(0.3)
    assert lease.lost and "run thief" in lease.lost
    lease.release()
    assert read_lease(out)["run"] == "thief"  # not ours: left alone


def test_planning_refuses_an_output_that_another_run_holds(tmp_path):
    from pipeline.infer.plan import plan_job
    from pipeline.infer.spec import parse_jobspec

    (tmp_path / "m.csv").write_text("path\nv.mp4\n")
    out = OutputDir.at(str(tmp_path / "out"))
    spec = parse_jobspec({"name": "j", "manifest": "m.csv", "model": {"arch": "r3d_18"},
                          "output": {"path": "out"}}, base_dir=tmp_path)
    with OutputLease(out, "other", "j", quiet):
        with pytest.raises(OutputError, match="being written by run other"):
            plan_job(spec, policy="resume")


def test_the_lease_of_a_dead_process_on_this_machine_is_taken_over_at_once(tmp_path,
                                                                              monkeypatch):
    import socket
    import subprocess

    monkeypatch.setattr(lease_mod, "SETTLE_S", 0.01)
    out = OutputDir.at(str(tmp_path / "out"))
    out.make()
    gone = subprocess.Popen(["true"])  # a process that has exited and been reaped
    gone.wait()
    pid = gone.pid
    out.write_text(LEASE, json.dumps({"run": "killed", "job": "j", "pid": pid,
                                      "host": socket.gethostname(), "since_utc": "x",
                                      "heartbeat": time.time()}))
    with OutputLease(out, "resumed", "j", quiet):
        assert read_lease(out)["run"] == "resumed"

"""Starting Ray for a job: the auth token stays private, and an inherited switch that turns
authentication off is not accepted silently."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from conftest import run_bounded
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import ConfigError
from pipeline.ray_session import METRICS_LINGER_ENV, metrics_linger_s


def test_up_refuses_an_inherited_auth_mode_of_disabled(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    result = CliRunner().invoke(app, ["up"])
    assert result.exit_code == 2
    assert "RAY_AUTH_MODE=disabled" in result.output and "--insecure-no-auth" in result.output


def test_a_local_ray_leaves_its_token_readable_by_its_owner_only(tmp_path):
    """A job's own local Ray (a fresh process and home, as a new user's): Ray writes the
    token it creates as 0644; after connect it is 0600."""
    code = ("from pipeline.ray_session import connect, disconnect\n"
            "from pipeline.spec import DecodeResourcesSpec\n"
            "h = connect(DecodeResourcesSpec(num_cpus=1, object_store_mb=100), None, print)\n"
            "disconnect(h)\n")
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("RAY_AUTH_MODE", None)
    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("0123456789abcdef" * 4)
    token.chmod(0o644)  # as `ray get-auth-token --generate` leaves it
    done = run_bounded([sys.executable, "-c", code], 180, env=env)
    assert done.returncode == 0, done.stdout
    assert stat.S_IMODE(token.stat().st_mode) == 0o600


@pytest.mark.parametrize(("value", "seconds"), [(None, 0.0), ("", 0.0), ("25", 25.0),
                                                ("2.5", 2.5)])
def test_metrics_linger_is_off_unless_set(monkeypatch, value, seconds):
    if value is None:
        monkeypatch.delenv(METRICS_LINGER_ENV, raising=False)
    else:
        monkeypatch.setenv(METRICS_LINGER_ENV, value)
    assert metrics_linger_s() == seconds


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "7200"])
def test_a_bad_metrics_linger_names_the_variable_and_the_fix(monkeypatch, value):
    monkeypatch.setenv(METRICS_LINGER_ENV, value)
    with pytest.raises(ConfigError, match=f"{METRICS_LINGER_ENV}=.*scrape_interval"):
        metrics_linger_s()


def test_the_harness_stops_what_a_ray_shutdown_leaves_and_nothing_else():
    """conftest.stop_ray (every Ray the tests start stops through it), on stand-ins: a
    "raylet" whose "worker" outlives it is killed and named once the grace is over; the
    raylet, which the stop did end, is not named; a Ray process outside that Ray (another Ray
    of the session: stopping a test cluster once killed the shared one) runs on."""
    from conftest import PROCS, stop_ray

    raylet = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(w.pid, flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                              "/ray/another-session"])
    worker = int(raylet.stdout.readline())
    try:
        with pytest.warns(UserWarning, match="left 1 of its processes") as record:
            stop_ray(raylet.kill, [raylet.pid], grace_s=1)
        message = str(record[0].message)
        assert f"{worker} " in message and f"{raylet.pid} " not in message
        assert PROCS.start_time(worker) is None  # gone (or a zombie nobody reaped yet)
        assert other.poll() is None
    finally:
        for p in (raylet, other):
            p.kill()
            p.wait()
        raylet.stdout.close()

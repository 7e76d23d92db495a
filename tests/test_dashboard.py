"""Signing in to the Ray dashboard: `vidbatch token` finds the token where Ray does, and a
real Chromium gets past the token dialog with it to a running `vidbatch submit` job."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import _processes_below, _wait_for_exit, spawn
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.dashboard import dashboard_hint, find_token
from pipeline.errors import VidbatchError
from pipeline.synth import moving_texture, write_video

AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")

# Ray's own lookup (what `ray get-auth-token` calls), one case after another in one process.
RAY_LOOKUP = """
import json, os, sys
from ray._raylet import AuthenticationTokenLoader
loader, found = AuthenticationTokenLoader.instance(), []
for env in json.load(sys.stdin):
    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        os.environ.pop(k, None)
    os.environ.update(env)
    loader.reset_cache()
    try:
        has = loader.has_token(ignore_auth_mode=True)
        found.append(loader.get_raw_token(ignore_auth_mode=True) if has else None)
    except Exception:  # RAY_AUTH_TOKEN_PATH names no readable, non-empty file
        found.append(None)
print(json.dumps(found))
"""


def _token_cases(tmp_path: Path) -> list[dict[str, str]]:
    """Environments (HOME included) that tell Ray's lookup order and edge cases apart."""
    homes = {}
    for name, content in {"with": " home-token\n", "empty": "", "blank": "\n \n",
                          "without": None}.items():
        homes[name] = tmp_path / name
        (homes[name] / ".ray").mkdir(parents=True)
        if content is not None:
            (homes[name] / ".ray" / "auth_token").write_text(content)
    (tmp_path / "named").write_text("named-token\n")
    named, missing = str(tmp_path / "named"), str(tmp_path / "missing")
    home = str(homes["with"])
    return [{"HOME": home},
            {"HOME": str(homes["empty"])}, {"HOME": str(homes["blank"])},
            {"HOME": str(homes["without"])},
            {"HOME": home, "RAY_AUTH_TOKEN": "  env-token "},
            {"HOME": home, "RAY_AUTH_TOKEN": ""}, {"HOME": home, "RAY_AUTH_TOKEN": "  "},
            {"HOME": home, "RAY_AUTH_TOKEN_PATH": named},
            {"HOME": home, "RAY_AUTH_TOKEN_PATH": ""},
            {"HOME": home, "RAY_AUTH_TOKEN_PATH": missing},
            {"HOME": home, "RAY_AUTH_TOKEN_PATH": str(homes["with"])},  # a directory
            {"HOME": home, "RAY_AUTH_TOKEN": "env-token", "RAY_AUTH_TOKEN_PATH": named}]


def test_vidbatch_token_finds_the_token_where_ray_does(tmp_path, monkeypatch):
    cases = _token_cases(tmp_path)
    done = subprocess.run([sys.executable, "-c", RAY_LOOKUP], input=json.dumps(cases),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ray_found = json.loads(done.stdout)
    ours = []
    for env in cases:
        for k in AUTH_ENV:
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        try:
            ours.append(find_token()[0])
        except VidbatchError:
            ours.append(None)
    assert ours == ray_found
    # The cases tell the sources apart: each of them wins somewhere.
    assert {"home-token", "env-token", "named-token", None} <= set(ray_found)


def test_vidbatch_token_without_a_token_says_what_to_do(tmp_path, monkeypatch):
    for k in AUTH_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    done = CliRunner().invoke(app, ["token"])
    assert done.exit_code == 2
    assert str(tmp_path / ".ray" / "auth_token") in done.output
    assert "vidbatch submit" in done.output and "RAY_AUTH_TOKEN" in done.output
    assert "Traceback" not in done.output


def test_the_dashboard_hint_names_the_url_and_the_command_not_the_token(monkeypatch):
    for k in AUTH_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "s3cret-t0ken")
    hint = dashboard_hint("http://127.0.0.1:8265")
    assert "http://127.0.0.1:8265" in hint and "`vidbatch token`" in hint
    assert "s3cret-t0ken" not in hint and "\n" not in hint
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert "vidbatch token" not in dashboard_hint("http://127.0.0.1:8265")


# ------------------------------------------------------------------ the whole way in

JOB = "dashboard-demo"
DASHBOARD_URL = re.compile(r"dashboard[^\n]*?(http://127\.0\.0\.1:\d+)")


class Output:
    """A process's output, read as it comes (so that its pipe never fills)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.lines = proc, []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: re.Pattern, deadline: float) -> re.Match:
        while time.monotonic() < deadline and self.proc.poll() is None:
            if found := pattern.search(self.text()):
                return found
            time.sleep(0.2)
        pytest.fail(f"no {pattern.pattern!r} in the job's output:\n{self.text()}")


def held_job(root: Path) -> tuple[Path, Path]:
    """A job over two videos and a named pipe (legitimate input, as a video still arriving):
    its decode blocks on the pipe until :func:`release` gives it a video. Returns the job's
    YAML and the pipe."""
    for i in range(2):
        write_video(root / f"v{i}.mp4", moving_texture(8, 48, 64, seed=i))
    write_video(root / "late.mp4", moving_texture(8, 48, 64, seed=2))
    pipe = root / "arriving.mp4"
    os.mkfifo(pipe)
    (root / "manifest.csv").write_text("path\nv0.mp4\nv1.mp4\narriving.mp4\n")
    spec = {"name": JOB, "manifest": str(root / "manifest.csv"),
            "sampling": {"clips_per_video": 1, "frames_per_clip": 4, "short_side": 32,
                         "crop_size": 32},
            "model": {"arch": "r3d_18", "weights": "none"},
            "inference": {"batch_size": 1, "channels_last": False},
            "resources": {"num_cpus": 2, "object_store_mb": 100, "videos_per_decode_task": 1,
                          "decode_timeout_s": 120},
            "output": {"path": str(root / "out")}}
    (root / "job.yaml").write_text(yaml.safe_dump(spec))
    return root / "job.yaml", pipe


def wait_for_reader(pipe: Path, proc: subprocess.Popen, deadline: float) -> int | None:
    """The write end of ``pipe`` once the job's decoder has opened it (its decode stage is
    running and now waits for data); None if the job ended or the deadline passed."""
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        time.sleep(0.2)
    return None


def release(pipe: Path, writer: int | None, video: Path) -> None:
    """Put a real video where the pipe was, then close the pipe: the decoder reading it sees
    its end, and opening the path again (the fallback decoder) finds the video."""
    if pipe.is_fifo():
        os.replace(video, pipe)
    if writer is not None:
        os.close(writer)


def sign_in(page, url: str, token: str) -> None:
    page.goto(url)
    dialog = page.get_by_role("dialog", name="Authentication Token Required")
    dialog.wait_for()
    field = dialog.get_by_label("Authentication Token")
    # A wrong token is refused (the dialog stays): the dialog does check what it is given.
    field.fill("not-the-token")
    with page.expect_response(lambda r: r.status in (401, 403)):
        dialog.get_by_role("button", name="Submit").click()
    assert dialog.is_visible()
    field.fill(token)
    dialog.get_by_role("button", name="Submit").click()
    dialog.wait_for(state="hidden")


# Opt-in (pytest -m dashboard tests/test_dashboard.py), outside CI until its hang is found: in one
# clean-clone CI run it never finished (50 min, the Ray dashboard's DataHead and ServeHead
# processes spinning at full CPU beside the suite's shared Ray), and a hang must not hold
# the default run. Alone it passes in about a minute.
@pytest.mark.slow
@pytest.mark.dashboard
def test_chromium_signs_in_with_vidbatch_token_and_sees_the_running_job(
        browser, tmp_path, monkeypatch):
    """A new user's first job (a fresh HOME, no RAY_AUTH_* set: Ray 2.60 turns token auth on
    and creates the token), seen in the dashboard while it runs."""
    job, pipe = held_job(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in (*AUTH_ENV, "RAY_ADDRESS")}
    env["HOME"] = str(home)
    proc = spawn([sys.executable, "-m", "pipeline.cli", "submit", str(job)], env=env,
                 cwd=tmp_path)
    out, writer, ray_procs = Output(proc), None, {}
    deadline = time.monotonic() + 180
    try:
        url = out.wait_for(DASHBOARD_URL, deadline).group(1)
        writer = wait_for_reader(pipe, proc, deadline)
        assert writer is not None, f"the job never opened {pipe}:\n{out.text()}"
        ray_procs = _processes_below([proc.pid])  # Ray's daemons and workers, all up now

        for k in AUTH_ENV:
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setenv("HOME", str(home))
        printed = CliRunner().invoke(app, ["token"])
        assert printed.exit_code == 0, printed.output
        token = printed.stdout.strip()

        page = browser.new_page(viewport={"width": 1400, "height": 1050})
        sign_in(page, url, token)
        page.get_by_role("link", name="Jobs", exact=True).first.click()
        row = page.get_by_role("row").filter(has_text=f"pipeline.cli submit {job}")
        row.get_by_text("RUNNING").wait_for(timeout=60_000)
        row.get_by_role("link").first.click()  # its Job ID: the job's own page

        page.get_by_text("Ray Data Overview").click()
        dataset = page.get_by_role("row").filter(has_text=f"{JOB}_")  # named after the job
        dataset.get_by_text("RUNNING").wait_for(timeout=60_000)
        dataset.locator("svg").first.click()  # expands it: its operators
        page.get_by_role("row").filter(has_text="Write").first.wait_for()
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=shot)
        if target := os.environ.get("VIDBATCH_DASHBOARD_PNG"):  # docs/dashboard.png
            shutil.copyfile(shot, target)
        page.close()
    finally:
        release(pipe, writer, tmp_path / "late.mp4")
        try:
            proc.wait(timeout=max(10, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        left = _wait_for_exit(ray_procs, 30)
        for pid, _ in left:
            os.kill(pid, 9)
    assert proc.returncode == 0, out.text()
    assert "3/3 videos (3 ok, 0 error)" in out.text()
    assert not left, f"Ray processes outlived the job: {sorted(left.values())}"


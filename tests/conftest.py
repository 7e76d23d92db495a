"""Shared fixtures: tiny real videos, one local Ray per test session, the real-world samples.

Ray: one local instance (2 CPUs, 256 MiB object store, no dashboard) serves every test that
asks for ``ray_session``; it is shut down when the session ends, so no Ray process outlives
the run. Multi-node tests start and stop their own raylets. Each stop goes through
``stop_ray``: a process of that Ray its own shutdown leaves running (once in CI, a
``ray::TrainController`` of the shared session) is stopped by pid, with a warning.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.synth import moving_texture, write_video

REPO = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = REPO.parent / "shared" / "videos"


def spawn(cmd: list[str], **kw) -> subprocess.Popen:
    """``cmd`` leading its own process group (so :func:`bounded` can end it whole), its
    stderr merged into its stdout."""
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)


def bounded(proc: subprocess.Popen, timeout: float) -> str:
    """What ``proc`` (from :func:`spawn`) printed, once it exits. Past ``timeout`` its whole
    process group (a local Ray it started too) is killed and the test fails with the
    output so far."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out = proc.communicate()[0]
        pytest.fail(f"{' '.join(map(str, proc.args))} ran past {timeout} s; its process "
                    f"group was killed. Output:\n{out}")


def run_bounded(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    """:func:`spawn` then :func:`bounded`: ``cmd``'s exit code and output (in ``stdout``)."""
    proc = spawn(cmd, **kw)
    out = bounded(proc, timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def pytest_configure(config):
    # A SIGTERM (``timeout``, a CI runner) ends the run as Ctrl-C does: pytest stops, the
    # session's fixtures tear down (the shared Ray is stopped by stop_ray) and the process
    # exits, instead of waiting forever on a Ray whose dashboard agent, and with it the
    # raylet, the same signal to the process group has already ended.
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def pytest_collection_modifyitems(config, items):
    _deselect_bench_unless_asked(config, items)
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


OPT_IN = ("bench", "dashboard")  # markers whose tests run only when -m names them


def _deselect_bench_unless_asked(config, items) -> None:
    """The benchmark harness's test and the dashboard's browser test run only when ``-m``
    names their marker: they are outside the default run, and ``-m "not slow"`` does not
    bring them back."""
    asked = config.getoption("markexpr") or ""
    for marker in OPT_IN:
        if marker in asked:
            continue
        out = [item for item in items if marker in item.keywords]
        if out:
            config.hook.pytest_deselected(items=out)
            items[:] = [item for item in items if marker not in item.keywords]


def _benchmark_procs():
    """benchmarks/procs.py (a process tree and start times from /proc), loaded by path:
    benchmarks/ is not a package, and its module names (run, report) must not shadow
    anything on sys.path."""
    spec = importlib.util.spec_from_file_location("vidbatch_bench_procs",
                                                  REPO / "benchmarks" / "procs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PROCS = _benchmark_procs()


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray shared by the whole test session."""
    import ray
    import ray.data

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    started = not ray.is_initialized()
    if started:
        # address="local": never join a Ray someone left running on this machine.
        ray.init(address="local", num_cpus=2, object_store_memory=256 * 2**20,
                 include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    if started:
        stop_ray(ray.shutdown, daemon_pids(ray._private.worker._global_node))


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


def daemon_pids(*nodes) -> list[int]:
    """The pids of the processes that Ray started for ``nodes`` (``ray._private.node.Node``:
    gcs_server, raylet, the dashboard, ...); their workers run below the raylet."""
    return [info.process.pid for node in nodes for infos in node.all_processes.values()
            for info in infos]


def _processes_below(roots: list[int]) -> dict[tuple[int, int], str]:
    """``roots`` and everything below them: (pid, start time) -> command line (Linux;
    elsewhere none)."""
    if not Path("/proc/self/stat").exists():
        return {}
    found = {}
    for pid in {pid for root in roots for pid in PROCS.tree(root)}:
        if (started := PROCS.start_time(pid)) is not None:
            found[pid, started] = _cmdline(pid)
    return found


def _wait_for_exit(processes: dict[tuple[int, int], str],
                   timeout_s: float) -> dict[tuple[int, int], str]:
    """Wait up to ``timeout_s`` for ``processes`` to exit; those still running."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = {(pid, started): cmd for (pid, started), cmd in processes.items()
                if PROCS.start_time(pid) == started}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def stop_ray(stop: Callable[[], None], roots: list[int], grace_s: float = 15.0) -> None:
    """``stop()`` (``ray.shutdown``, ``Cluster.shutdown``), then stop exactly the processes
    it left of that Ray: ``roots`` (:func:`daemon_pids`) and those below them before it ran
    that still run ``grace_s`` later (SIGKILL, and a warning that names them). Another Ray
    of this test session (the shared one, while a multi-node test stops its cluster) is not
    touched. Ray's own shutdown relies on each worker noticing its raylet's death, and a
    busy actor (a ``ray::TrainController``, once in CI) can miss it."""
    before = _processes_below(roots)
    stop()
    left = _wait_for_exit(before, grace_s)
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _wait_for_exit(left, 5.0)
    if left:
        warnings.warn(f"Ray's shutdown left {len(left)} of its processes running after "
                      f"{grace_s:g} s; stopped them: "
                      + "; ".join(f"{pid} {cmd[:80]}" for (pid, _), cmd in left.items()),
                      stacklevel=2)


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    """The real-world sample videos beside the repo; skips when they are absent."""
    if not SHARED_VIDEOS.is_dir():
        pytest.skip(f"{SHARED_VIDEOS} is absent (real-world samples are optional)")
    return SHARED_VIDEOS


@pytest.fixture
def make_video(tmp_path):
    """``make_video(name, frames=30, size=(64, 80), **kw)`` writes a textured moving video."""

    def _make(name: str, frames: int = 30, size: tuple[int, int] = (64, 80), seed: int = 0,
              fps: int = 30, lossless: bool = False, codec: str = "libx264") -> Path:
        data = moving_texture(frames, size[0], size[1], seed)
        return write_video(tmp_path / name, data, fps=fps, lossless=lossless, codec=codec)

    return _make


@pytest.fixture
def numbered_frames():
    """Frames whose content encodes their index: frame t is filled with value 8 * t."""

    def _make(frames: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
        out = np.zeros((frames, *size, 3), dtype=np.uint8)
        for t in range(frames):
            out[t] = (8 * t) % 256
        return out

    return _make


def _break_packet(video: Path, out: Path, index: int = 30) -> Path:
    """A copy of ``video`` whose packet ``index`` (in decode order) is overwritten with
    garbage, its length prefix included."""
    import av

    with av.open(str(video)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    data = bytearray(video.read_bytes())
    pos, size = packets[index]
    data[pos:pos + size] = b"\xff" * size
    out.write_bytes(bytes(data))
    return out


@pytest.fixture(scope="session")
def break_packet():
    """``break_packet(video, out, index=30)``: see :func:`_break_packet`."""
    return _break_packet


@pytest.fixture
def numbered_b_frames(tmp_path):
    """60 frames, frame t filled with 4 * t, a keyframe every 20 frames and B-frames
    (I B B B P ... in display order): what sparse decoding has to get right."""
    frames = np.zeros((60, 48, 64, 3), dtype=np.uint8)
    for t in range(60):
        frames[t] = 4 * t
    return write_video(tmp_path / "bframes.mp4", frames, options={
        "crf": "1", "x264-params": "keyint=20:min-keyint=20:scenecut=0:bframes=3:b-adapt=0"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3():
    """A local S3 endpoint (moto): ``(pyarrow S3FileSystem, environment for a vidbatch
    process)``."""
    import pyarrow.fs as pafs

    moto_server = pytest.importorskip("moto.server", reason="moto (a test dependency) is "
                                      "absent")
    # Port 0: the server binds whatever port is free. A port picked first and bound after
    # can be taken in between, and moto's start() then waits forever for a server that
    # failed to start.
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    # moto keeps its buckets in the process, shared by every server it starts: empty them,
    # so that each test starts from no buckets whatever ran before it.
    reset = urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http",
                           access_key="testing", secret_key="testing", region="us-east-1",
                           allow_bucket_creation=True)
    try:
        yield fs, env
    finally:
        server.stop()


CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (Debian's, driven by Playwright); skips (saying why) where
    Chromium or Playwright is absent."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no chromium on PATH: install Debian's `chromium` package (scripts/setup.sh "
                    "does where apt-get can) to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is a test extra: pip install -e .[test]")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS)
        yield b
        b.close()


def render(browser, html: Path) -> tuple:
    """The page ``html`` in Chromium (the ``browser`` fixture), and the console errors, page
    errors and requests that leave the file it collects."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: problems.append(f"network: {r.url}")
            if not r.url.startswith(("file:", "data:")) else None)
    page.goto(html.as_uri())
    page.wait_for_load_state("load")
    return page, problems

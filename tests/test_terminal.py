"""What a person sees in a terminal: ``vidbatch submit`` run by tmux in a real
pseudo-terminal, its screen read with ``capture-pane`` while the job runs and after it ends."""

import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from pipeline.synth import moving_texture, write_video

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (scripts/test_tools.sh)")

BAR = re.compile(r"\d+/\d+ videos\s+\d+ ok\s+\d+ error\s+[\d.]+ videos/s\s+(ETA|done)")
NOISE = ("INFO", "WARNING", "Warning", "warn(", "core_worker", "moov atom", "ERROR opening",
         "Traceback", "(MapBatches", "pid=")


class Tmux:
    """One tmux server of this test's own (its socket), whose only pane runs ``cmd`` and
    stays on screen once ``cmd`` exits."""

    def __init__(self, tmp_path, cmd: list[str], width: int = 100, height: int = 50):
        self.sock = f"vidbatch-test-{uuid.uuid4().hex[:8]}"
        conf = tmp_path / "tmux.conf"
        conf.write_text("set -g remain-on-exit on\nset -g history-limit 2000\n")
        self._tmux("-f", str(conf), "new-session", "-d", "-x", str(width), "-y",
                   str(height), "-c", str(tmp_path), subprocess.list2cmdline(cmd))

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.sock, *args], check=True,
                              capture_output=True, text=True, timeout=30).stdout

    def screen(self) -> str:
        """The pane's text, scrollback included, as a person would read it."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-2000")

    def exit_code(self) -> int | None:
        dead, *status = self._tmux("display", "-p",
                                   "#{pane_dead} #{pane_dead_status}").split()
        return int(status[0]) if dead == "1" else None

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True)


@pytest.fixture
def job(tmp_path):
    """Six good videos and two broken ones (a decoder speaks up about both)."""
    for i in range(6):
        write_video(tmp_path / f"v{i}.mp4", moving_texture(16, 48, 64, seed=i))
    (tmp_path / "truncated.mp4").write_bytes((tmp_path / "v0.mp4").read_bytes()[:3000])
    (tmp_path / "not_a_video.mp4").write_text("nope")
    names = [f"v{i}.mp4" for i in range(6)] + ["truncated.mp4", "not_a_video.mp4"]
    (tmp_path / "m.csv").write_text("path\n" + "\n".join(names) + "\n")
    spec = {"name": "term", "manifest": "m.csv",
            "sampling": {"frames_per_clip": 4, "short_side": 48, "crop_size": 48},
            "model": {"arch": "resnet18", "num_classes": 3},
            "inference": {"batch_size": 2},
            "resources": {"num_cpus": 2, "cpus_per_decode_task": 0.5,
                          "videos_per_decode_task": 1},
            "output": {"path": "out"}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path / "job.yaml"


@pytest.mark.slow
def test_submit_in_a_terminal_shows_one_live_bar_and_no_noise(job, tmp_path):
    term = Tmux(tmp_path, [sys.executable, "-m", "pipeline.cli", "submit", str(job)])
    running, deadline = [], time.monotonic() + 240
    try:
        while (code := term.exit_code()) is None:
            assert time.monotonic() < deadline, "vidbatch submit ran past 240 s:\n" + \
                term.screen()
            running.append(term.screen())
            time.sleep(0.25)
        final = term.screen()
    finally:
        term.kill()
    assert code == 0, final
    # While it ran, the bar was on screen, updated in place: one bar line per screen.
    bars = [s for s in running if BAR.search(s)]
    assert bars, "no progress bar seen while the job ran:\n" + running[-1]
    assert all(len(BAR.findall(s)) == 1 for s in bars)
    text = final.rstrip()
    lines = [x for x in text.splitlines() if x.strip()]
    assert "job term (classify): 8 videos" in text  # the plan
    assert re.search(r"8/8 videos\s+6 ok\s+2 error", text)  # the bar, finished
    assert "job term: 8 rows for 8 manifest rows -> 6 ok, 2 error" in text  # the summary
    assert "ray's logs: " in text
    assert [n for n in NOISE if n in text] == [], text
    assert len(lines) <= 25, text

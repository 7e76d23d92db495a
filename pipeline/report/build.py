"""``vidbatch report``: pick the report (a job's output, or a training run's folder),
build it, and write it where asked (by default beside what it describes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.fs as pafs

from pipeline.errors import OutputError
from pipeline.output.store import REPORT_FILE as REPORT
from pipeline.paths import local_path
from pipeline.report.job import job_report
from pipeline.report.rows import RowsView
from pipeline.report.training import is_training_run, training_report


def make_report(location: str, output: str | None = None, thumbnails: int = 36,
                log: Callable[[str], None] = print) -> str:
    """Write the report of ``location`` to ``output`` (default: ``_vidbatch_report.html``
    in a job's output, ``report.html`` in a training run's folder); returns where."""
    t0 = time.perf_counter()
    local = local_path(location)
    if local is not None and is_training_run(local):
        html = training_report(local)
        dest = output or str(Path(local) / "report.html")
        _write(dest, html)
    else:
        view = RowsView(location)
        html = job_report(view, thumbnails, log)
        dest = output or view.out.display(REPORT)
        if output is None:
            view.out.write_text(REPORT, html)
        else:
            _write(dest, html)
    log(f"report written in {time.perf_counter() - t0:.1f} s ({len(html) / 2**20:.1f} MiB)")
    return dest


def _write(dest: str, html: str) -> None:
    local = local_path(dest)
    try:
        if local is not None:
            Path(local).parent.mkdir(parents=True, exist_ok=True)
            Path(local).write_text(html, encoding="utf-8")
            return
        fs, path = pafs.FileSystem.from_uri(dest)
        with fs.open_output_stream(path) as f:
            f.write(html.encode("utf-8"))
    except (OSError, ValueError) as e:
        raise OutputError(f"cannot write the report to {dest}: {e}. Give -o a writable path "
                          "or URI.") from e

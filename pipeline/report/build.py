"""``vidbatch report``: pick the report (a job's output, or a training run's folder),
build it, and write it where asked (by default beside what it describes)."""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import OutputError
from pipeline.output.outdir import OutputDir
from pipeline.output.store import REPORT_FILE as REPORT
from pipeline.paths import local_path, parent
from pipeline.report.job import job_report
from pipeline.report.rows import RowsView
from pipeline.report.training import is_training_run, training_report


def make_report(location: str, output: str | None = None, thumbnails: int | None = None,
                log: Callable[[str], None] = print) -> str:
    """Write the report of ``location`` to ``output`` (default: ``_vidbatch_report.html``
    in a job's output, ``report.html`` in a training run's folder); returns where."""
    t0 = time.perf_counter()
    local = local_path(location)
    if local is not None and is_training_run(local):
        dest = output or str(Path(local) / "report.html")
        folder = _folder(dest)  # a place that cannot be written fails before any work
        html = training_report(local)
    else:
        view = RowsView(location)
        dest = output or view.out.display(REPORT)
        folder = _folder(dest)
        html = job_report(view, thumbnails, log)
    _write(folder, dest, html)
    log(f"report written in {time.perf_counter() - t0:.1f} s ({len(html) / 2**20:.1f} MiB)")
    return dest


def _folder(dest: str) -> OutputDir:
    """The folder of the path or URI ``dest``, made if missing."""
    try:
        folder = OutputDir.at(parent(dest))
        folder.make()
        return folder
    except (OSError, ValueError) as e:
        raise OutputError(f"cannot write the report to {dest}: {e}. Give -o a writable path "
                          "or URI.") from e


def _write(folder: OutputDir, dest: str, html: str) -> None:
    """``html`` to ``dest`` in ``folder``, whole or not at all (OutputDir.write_text)."""
    try:
        folder.write_text(posixpath.basename(dest.rstrip("/")), html)
    except (OSError, ValueError) as e:
        raise OutputError(f"cannot write the report to {dest}: {e}. Give -o a writable path "
                          "or URI.") from e

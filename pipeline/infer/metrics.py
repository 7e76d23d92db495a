"""The job's metrics, exported through Ray's metrics agent for Prometheus and Grafana.

Every output batch is counted where it is made (model replicas, or decode tasks for
``mode: decode_only``), from the output table itself: videos by status, error rows by the
stage that failed (the part of ``error`` before its first ``:``), and each row's
``decode_s`` / ``infer_s`` in a histogram. Rows written are counted in the write tasks
after each Parquet file is complete (:class:`RowsWritten`), so the gap between
``vidbatch_videos_total`` and ``vidbatch_rows_written_total`` is what is finished but not
yet safely on storage. Queue depth is Ray Data's own (``ray_data_*`` gauges per operator;
``cluster/grafana/vidbatch-dashboard.json`` plots them), not re-exported here.

Ray prefixes every name with ``ray_`` and adds its own labels (``SessionName``,
``WorkerId``, ...): one series per worker process, so queries sum over them. The names
and buckets below are the contract with the Grafana dashboard
(``tests/test_metrics_dashboard.py`` checks it). docs/monitoring.md covers the setup.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

VIDEOS = "vidbatch_videos_total"
ERRORS = "vidbatch_errors_total"
DECODE_SECONDS = "vidbatch_decode_seconds"
INFER_SECONDS = "vidbatch_infer_seconds"
ROWS_WRITTEN = "vidbatch_rows_written_total"
# Not "job": Prometheus sets that label to the scrape job's name and renames a scraped
# "job" label to "exported_job".
TAGS = ("vidbatch_job", "task")

# Seconds per video. Decoding spans a one-frame clip to a long file read from object
# storage; inference is a video's share of its batch's model time.
DECODE_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
INFER_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                 30]


def status_counts(table: pa.Table) -> dict[str, int]:
    """Rows per ``status`` value."""
    return _value_counts(table["status"])


def error_stages(table: pa.Table) -> dict[str, int]:
    """Error rows per failing stage: ``"read: file not found"`` counts for ``read``."""
    errors = pc.drop_null(table["error"])
    if not len(errors):
        return {}
    return _value_counts(pc.list_element(pc.split_pattern(errors, ":", max_splits=1), 0))


def timings(table: pa.Table, column: str) -> list[float]:
    """The non-null values of a seconds column."""
    return pc.drop_null(table[column]).to_pylist()


def _value_counts(values) -> dict[str, int]:
    return {d["values"]: d["counts"] for d in pc.value_counts(values).to_pylist()}


class JobMetrics:
    """The metrics of one job's output batches, as recorded in one worker process.

    Counting costs a few pyarrow calls per batch plus one histogram observation per row and
    timing column: Ray's ``Histogram`` takes one value per call and has no bulk form.
    """

    def __init__(self, job: str, task: str):
        from ray.util.metrics import Counter, Histogram

        self.tags = dict(zip(TAGS, (job, task)))
        self.videos = Counter(VIDEOS, "videos finished, by status (ok or error)",
                              tag_keys=(*TAGS, "status"))
        self.errors = Counter(ERRORS, "error rows by the stage that failed (the part of the "
                              "error column before its first colon)",
                              tag_keys=(*TAGS, "stage"))
        self.decode_s = Histogram(DECODE_SECONDS, "seconds decoding one video",
                                  boundaries=DECODE_BUCKETS, tag_keys=TAGS)
        self.infer_s = Histogram(INFER_SECONDS, "model seconds per video (its share of the "
                                 "batch)", boundaries=INFER_BUCKETS, tag_keys=TAGS)

    def record(self, table: pa.Table) -> None:
        for status, n in status_counts(table).items():
            self.videos.inc(n, tags={**self.tags, "status": status})
        for stage, n in error_stages(table).items():
            self.errors.inc(n, tags={**self.tags, "stage": stage})
        for histogram, column in ((self.decode_s, "decode_s"), (self.infer_s, "infer_s")):
            for seconds in timings(table, column):
                histogram.observe(seconds, tags=self.tags)


class RowsWritten:
    """``rows_written(n)``: ``n`` rows are now in complete Parquet files. Called in Ray
    Data's write tasks (``pipeline.dataflow.write``); picklable, the counter is made once
    per process."""

    def __init__(self, job: str, task: str):
        self.tags = dict(zip(TAGS, (job, task)))
        self._counter = None

    def __getstate__(self) -> dict:
        return {"tags": self.tags, "_counter": None}

    def __call__(self, rows: int) -> None:
        if not rows:
            return
        if self._counter is None:
            from ray.util.metrics import Counter

            self._counter = Counter(ROWS_WRITTEN, "output rows in complete Parquet files",
                                    tag_keys=TAGS)
        self._counter.inc(rows, tags=self.tags)

"""The job metrics' counting, and the Grafana dashboard's contract with them.

Every vidbatch metric the dashboard queries is one that ``pipeline.infer.metrics`` defines
(histograms through their ``_bucket`` series), every defined metric has a panel, and every
Ray Data metric it queries exists in this Ray. tests/test_metrics.py runs the queries
against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.infer import metrics

DASHBOARD = Path(__file__).resolve().parents[1] / "cluster" / "grafana" / \
    "vidbatch-dashboard.json"


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def names_in(prefix: str) -> set[str]:
    return {m for e in dashboard_exprs() for m in re.findall(rf"\b{prefix}\w+", e)}


def test_vidbatch_metrics_on_the_dashboard_are_the_ones_defined():
    counters = {metrics.VIDEOS, metrics.ERRORS, metrics.ROWS_WRITTEN}
    histograms = {metrics.DECODE_SECONDS, metrics.INFER_SECONDS}
    exported = {f"ray_{n}" for n in counters} | {f"ray_{n}_bucket" for n in histograms}
    assert names_in("ray_vidbatch_") == exported


def test_ray_data_metrics_on_the_dashboard_exist_in_this_ray():
    from ray.data._internal.execution.interfaces.op_runtime_metrics import OpRuntimeMetrics

    known = {f"ray_data_{m.name}" for m in OpRuntimeMetrics.get_metrics()}
    known.add("ray_data_output_rows")  # a dataset-level gauge of Ray Data's stats actor
    used = names_in("ray_data_")
    assert used and used <= known, used - known


def test_dashboard_queries_go_to_its_datasource_variable():
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"SessionName", "job"} <= set(variables)
    targets = [p for p in d["panels"] if p["type"] != "row"]
    assert targets and all(p["datasource"]["uid"] == "${datasource}" for p in targets)
    assert len({p["id"] for p in d["panels"]}) == len(d["panels"])


def test_no_metric_uses_the_job_label_that_prometheus_overwrites():
    assert "job" not in metrics.TAGS
    assert not any(re.search(r"[{,]\s*job\s*=", e) for e in dashboard_exprs())


@pytest.fixture
def table() -> pa.Table:
    return pa.table({
        "status": ["ok", "error", "error", "ok", "error"],
        "error": [None, "read: file not found", "decode: bad: header", None,
                  "read: file is empty"],
        "decode_s": [0.5, None, 0.01, 0.25, None],
        "infer_s": [0.1, None, None, 0.2, None],
    })


def test_counts_of_a_batch(table):
    assert metrics.status_counts(table) == {"ok": 2, "error": 3}
    assert metrics.error_stages(table) == {"read": 2, "decode": 1}
    assert metrics.timings(table, "decode_s") == [0.5, 0.01, 0.25]
    assert metrics.timings(table, "infer_s") == [0.1, 0.2]


def test_a_batch_without_errors_has_no_stages(table):
    ok = table.filter(pa.compute.equal(table["status"], "ok"))
    assert metrics.error_stages(ok) == {}


def test_recording_needs_no_cluster(table):
    metrics.JobMetrics("j", "classify").record(table)  # Ray buffers them until it exports
    metrics.RowsWritten("j", "classify")(5)

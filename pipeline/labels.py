"""Box labels files: one row per object per frame, for detection training and evaluation.

Columns: ``video_id``, ``frame`` (the frame's index in the video, from 0), ``label`` (a
class name) and the box ``x1, y1, x2, y2`` in the frame's pixels; optionally ``object``,
an id of the object within its video (evaluation counts tracking's ID switches with it).
CSV, Parquet or JSON Lines, local or a URI, as manifests are.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import ManifestError
from pipeline.manifest import read_table

LABEL_NUMBERS = ("frame", "x1", "y1", "x2", "y2")


def read_labels(uri: str) -> pa.Table:
    """The labels file with ``frame`` (and ``object``) as int64 and the box as float64; a
    ``ManifestError`` names a missing column or a row whose numbers do not parse."""
    table = read_table(uri, "labels file", "data.labels")
    missing = [c for c in ("video_id", "label", *LABEL_NUMBERS) if c not in table.column_names]
    if missing:
        raise ManifestError(f"labels file {uri} lacks columns {missing}; it needs video_id, "
                            "frame, label, x1, y1, x2, y2 (box in pixels)")
    cols = {"video_id": table["video_id"].cast(pa.string()),
            "label": pc.utf8_trim_whitespace(table["label"].cast(pa.string()))}
    numbers = LABEL_NUMBERS + (("object",) if "object" in table.column_names else ())
    for name in numbers:
        typ = pa.float64() if name in ("x1", "y1", "x2", "y2") else pa.int64()
        try:
            cols[name] = pc.cast(table[name], typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = table[name].to_pylist()
            bad = next(i for i, v in enumerate(values) if not _parses(v, typ))
            kind = "a number" if typ == pa.float64() else "an integer"
            raise ManifestError(f"labels file {uri}, row {bad + 1}: {name} is "
                                f"{values[bad]!r}, not {kind}") from None
    return pa.table(cols)


def _parses(value, typ: pa.DataType) -> bool:
    try:
        pc.cast(pa.array([value]), typ)
        return True
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False

"""Job specs: YAML -> the frozen, validated spec of the job's task.

The ``task`` key (default ``classify``) picks the spec class (``pipeline.tasks``); the
shared sections come from :mod:`pipeline.spec`. Relative paths in a spec are resolved
against the directory of the spec file, so that ``vidbatch submit jobs/classify.yaml``
means the same thing from any working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.paths import is_checkpoint_ref, resolve
from pipeline.spec import JobSpec, check_uris, read_spec_yaml, validate
from pipeline.tasks.registry import DEFAULT_TASK, get_task


def parse_jobspec(data: Any, source: str = "<spec>", base_dir: Path | None = None) -> JobSpec:
    """Validate a parsed spec; resolve relative paths against ``base_dir``."""
    task = get_task(data.get("task", DEFAULT_TASK) if isinstance(data, dict) else DEFAULT_TASK)
    spec = validate(task.spec_class, data, source, "job spec", "README, 'The job spec'")
    model = getattr(spec, "model", None)
    check_uris({"manifest.path": spec.manifest.path, "output.path": spec.output.path,
                "model.weights": getattr(model, "weights", None),
                "model.labels": getattr(model, "labels", None),
                "segments.shots_from": spec.segments and spec.segments.shots_from},
               spec.allow_uri_options)
    return spec if base_dir is None else resolve_paths(spec, base_dir)


def resolve_paths(spec: JobSpec, base: Path) -> JobSpec:
    """The spec with its manifest, output, weights, labels and shots paths made absolute."""
    update: dict[str, Any] = {
        "manifest": spec.manifest.model_copy(update={"path": resolve(base, spec.manifest.path)}),
        "output": spec.output.model_copy(update={"path": resolve(base, spec.output.path)}),
    }
    if spec.segments is not None and spec.segments.shots_from:
        update["segments"] = spec.segments.model_copy(
            update={"shots_from": resolve(base, spec.segments.shots_from)})
    model = getattr(spec, "model", None)
    if model is not None:
        weights = model.weights
        labels = getattr(model, "labels", None)
        update["model"] = model.model_copy(update={
            "weights": resolve(base, weights) if is_checkpoint_ref(weights) else weights,
            **({"labels": resolve(base, labels)} if labels else {}),
        })
    return spec.model_copy(update=update)


def spec_yaml(spec: JobSpec) -> str:
    """The spec as YAML that :func:`parse_jobspec` turns back into the same job elsewhere
    (the Jobs API's entrypoint). Only the keys the spec gives are written, paths resolved:
    a key left out must stay left out, because some defaults depend on more than the spec
    (a checkpoint's sampling fills only the sampling keys the spec leaves out)."""
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_unset=True), sort_keys=False)


def load_jobspec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> JobSpec:
    """Read, override and validate a YAML job spec."""
    return parse_jobspec(read_spec_yaml(path, overrides), str(path),
                         Path(path).resolve().parent)

"""``vidbatch train``: the spec's ``task`` key (``classify``, the default, ``detect`` or
``audio``) picks the training spec, plan, run and summary."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.spec import read_spec_yaml

TRAINABLE = ("classify", "detect", "audio")


def load_training(path: str | Path, overrides: list[str] | tuple[str, ...] = ()):
    """The validated training spec of ``path`` for its task."""
    from pipeline.train.audio_spec import parse_audio_trainspec
    from pipeline.train.detect_spec import parse_detect_trainspec
    from pipeline.train.spec import parse_trainspec

    data = read_spec_yaml(path, overrides, "training spec", "jobs/train.yaml")
    task = data.get("task", "classify") if isinstance(data, dict) else "classify"
    if task not in TRAINABLE:
        raise ConfigError(f"task: {task!r} cannot be trained; choose one of {list(TRAINABLE)}")
    parse = {"detect": parse_detect_trainspec, "audio": parse_audio_trainspec}.get(
        task, parse_trainspec)
    return parse(data, str(path), Path(path).resolve().parent)


def train(spec, resume: bool = False, address: str | None = None,
          log: Callable[[str], None] = print) -> tuple[dict[str, Any], str]:
    """Plan and run ``spec``; ``(summary, the summary as text)``."""
    task = getattr(spec, "task", "classify")
    if task == "audio":
        from pipeline.train.audio_plan import plan_audio_training
        from pipeline.train.audio_run import run_audio_training
        from pipeline.train.report import render_summary as render

        summary = run_audio_training(plan_audio_training(spec, resume), address, log)
        return summary, render(summary)
    if task == "detect":
        from pipeline.train.detect_plan import plan_detect_training
        from pipeline.train.detect_run import render_summary, run_detect_training

        summary = run_detect_training(plan_detect_training(spec, resume), address, log)
        return summary, render_summary(summary)
    from pipeline.train.plan import plan_training
    from pipeline.train.report import render_summary as render
    from pipeline.train.run import run_training

    summary = run_training(plan_training(spec, resume=resume), address=address, log=log)
    return summary, render(summary)

"""The tasks a job spec's ``task:`` key can name. Adding a task is one line here."""

from __future__ import annotations

from pipeline.errors import ConfigError
from pipeline.tasks.audio import AudioTask
from pipeline.tasks.base import Task
from pipeline.tasks.classify import ClassifyTask
from pipeline.tasks.detect import DetectTask

TASKS: dict[str, Task] = {t.name: t for t in (ClassifyTask(), DetectTask(), AudioTask())}
DEFAULT_TASK = "classify"


def get_task(name: object) -> Task:
    """The task called ``name``, or a ``ConfigError`` that lists the known ones."""
    if not isinstance(name, str) or name not in TASKS:
        raise ConfigError(f"task: unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]

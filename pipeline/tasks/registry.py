"""The tasks a job spec's ``task:`` key can name. Adding a task is one line here."""

from __future__ import annotations

from pipeline.errors import ConfigError
from pipeline.tasks.audio.job import AudioTask
from pipeline.tasks.base import Task
from pipeline.tasks.classify.job import ClassifyTask
from pipeline.tasks.detect.job import DetectTask
from pipeline.tasks.shots.job import ShotsTask

TASKS: dict[str, Task] = {t.name: t for t in (ClassifyTask(), DetectTask(), AudioTask(),
                                                ShotsTask())}
DEFAULT_TASK = "classify"


def get_task(name: object) -> Task:
    """The task called ``name``, or a ``ConfigError`` that lists the known ones."""
    if not isinstance(name, str) or name not in TASKS:
        raise ConfigError(f"task: unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]


def trainable() -> list[str]:
    """The names of the tasks that ``vidbatch train`` can train."""
    return [name for name, task in TASKS.items() if task.training() is not None]

"""The task seam: what an analysis task declares so that one pipeline runs it.

A job is always the same stream: manifest rows -> decode tasks -> an actor pool of
replicas -> Parquet (``pipeline.infer``, wired by ``pipeline.dataflow``). A task fills in
what differs, and nothing else changes when one is added:

* its **spec**: a :class:`~pipeline.spec.JobSpec` subclass with the task's sections;
* its **model**, resolved on the driver without tensors (:meth:`Task.resolve`), and the
  weights made available before work starts (:meth:`Task.fetch`);
* what it **decodes** (:meth:`Task.decode_spec`) and the decode stage that does it
  (:attr:`Task.decode_stage`: video frames by default; an audio task names its own);
* its **replica**: a class set up once per actor, then called with decoded batches, which
  returns the batch's output rows (:meth:`Task.replica`);
* its **output columns** (:meth:`Task.output_fields`), between the common ones of
  :mod:`pipeline.output.rows`;
* the lines it adds to the plan, the job record and the summary;

and, for the rest of its life, where it has them:

* its **training** (:meth:`Task.training`: a :class:`~pipeline.fit.training.Training`,
  which ``vidbatch train`` runs);
* its **evaluation** against labels (:meth:`Task.evaluate`, ``vidbatch evaluate``);
* the commands that write its **demo data** (:attr:`Task.demos`).

Each task is one package, ``pipeline/tasks/<task>/``. A recipe is in docs/tasks.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from pipeline.decode.base import DecodeSpec
from pipeline.decode.stage import decode_batch
from pipeline.errors import ConfigError
from pipeline.model.runtime import Runtime
from pipeline.output.rows import Provenance, output_schema
from pipeline.spec import JobSpec

if TYPE_CHECKING:  # the training parts import torch: loaded only when a run needs them
    from pipeline.fit.training import Training


def random_weights_note(meaningful: bool, what: str) -> tuple[str, ...]:
    """The plan's note for a model with random weights (``weights: none``): its ``what``
    (predictions, detections) are meaningless."""
    if meaningful:
        return ()
    return (f"weights: none -> random weights; {what} are meaningless (a pipeline check)",)


@dataclass(frozen=True)
class TaskLines:
    """What a task adds to the plan that ``vidbatch submit`` prints."""

    model: str  # the model: "r3d_18 (clip model), weights none, 400 classes"
    output: str = ""  # what it writes besides the common columns: "top-5, embeddings"
    notes: tuple[str, ...] = ()


class Task(ABC):
    """One analysis task. Subclasses are stateless; the registry holds one instance each."""

    name: ClassVar[str]
    spec_class: ClassVar[type[JobSpec]]
    # Spec sections of the task that must be unchanged for --resume to continue a job.
    resume_keys: ClassVar[tuple[str, ...]] = ("model",)
    # The model architectures the task offers, its default first (``vidbatch schema``).
    architectures: ClassVar[tuple[str, ...]] = ()
    # The decode stage, ``stage(batch, spec=decode_spec, guard=None) -> batch``: a plain
    # function over batches (pipeline.decode.stage), run in decode tasks; ``guard`` counts
    # attempts per video when decoding runs in the Ray worker. Its spec also gives the
    # memory a task needs (``spec.memory(videos)``) and its plan line (``spec.describe()``).
    decode_stage: ClassVar[Callable] = staticmethod(decode_batch)

    @abstractmethod
    def resolve(self, spec: JobSpec) -> Any:
        """The job's model without its tensors (a card): enough to plan. Runs on the driver
        while Ray starts; reads metadata only."""

    @abstractmethod
    def fetch(self, model: Any) -> None:
        """Make the weights available (download them) on the driver, so that a machine
        that cannot fails before any work starts."""

    @abstractmethod
    def decode_spec(self, spec: JobSpec, model: Any) -> DecodeSpec:
        """What each video is decoded into for this task's replicas (the spec of
        :attr:`decode_stage`)."""

    @abstractmethod
    def output_fields(self, arch: str) -> list[pa.Field]:
        """The task's own output columns for a model architecture."""

    @abstractmethod
    def replica(self, spec: JobSpec, model: Any, runtime: Runtime) -> tuple[type, dict]:
        """``(class, constructor kwargs)`` of the replica: Ray Data constructs one per
        actor; each call maps a decoded batch to a ``pyarrow.Table`` of output rows."""

    @abstractmethod
    def provenance(self, spec: JobSpec, model: Any) -> Provenance:
        """What the rows say about the model and the job."""

    @abstractmethod
    def describe(self, spec: JobSpec, model: Any) -> TaskLines:
        """The task's part of the plan (``vidbatch submit --dry-run`` prints it)."""

    @abstractmethod
    def record(self, model: Any) -> dict[str, Any]:
        """The model's part of the job record (``_vidbatch_job.json``)."""

    # Error stages that are outcomes of the input, not failures (an audio task's
    # "no_audio"): such rows stay error rows but do not count against max_error_fraction.
    outcome_stages: ClassVar[tuple[str, ...]] = ()
    # Figures the task's summary reads: a name for each SQL aggregate over the output's
    # rows (any column, e.g. "count(*) FILTER (status = 'ok' AND silent)"), which DuckDB
    # computes out of core (pipeline.infer.summary).
    summary_figures: ClassVar[dict[str, str]] = {}

    def summary(self, record: dict[str, Any], figures: dict[str, Any] | None = None
                ) -> list[str]:
        """Lines the task adds to a finished job's summary; ``figures``: the values of
        :attr:`summary_figures` (None when there are no rows or no figures)."""
        return []

    def schema(self, arch: str) -> pa.Schema:
        """The whole output schema of this task with ``arch``."""
        return output_schema(self.output_fields(arch))

    def training(self) -> Training | None:
        """The task's training parts (``vidbatch train``), or None: it is not trainable.
        Imported when asked for, so that jobs do not load them."""
        return None

    # ``evaluation(output, labels) -> figures``: scores a finished job's output against a
    # labels file (``vidbatch evaluate``); None: the task has no evaluation.
    evaluation: ClassVar[Callable[[str, str], dict[str, Any]] | None] = None
    # The commands that write the task's demo data: ``vidbatch`` command -> typer function.
    demos: ClassVar[dict[str, Callable]] = {}

    def evaluate(self, output: str, labels: str) -> dict[str, Any]:
        """Score the finished job in ``output`` against the labels file ``labels``."""
        if self.evaluation is None:
            raise ConfigError(f"{output} holds a {self.name} job, which has no evaluation; "
                              "evaluate scores the jobs of tasks that have one (see "
                              "docs/tasks.md)")
        return self.evaluation(output, labels)

"""Classification and embeddings: ``task: classify`` (the default).

A torchvision ResNet turns each video's sampled clips into one embedding and top-k class
predictions (the replica: :mod:`pipeline.tasks.classify.replica`). Its training is
:mod:`pipeline.tasks.classify.train`; its demo data, :mod:`pipeline.tasks.classify.demo`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
from pydantic import Field

from pipeline.decode.base import DecodeSpec
from pipeline.model.archs import ARCHS
from pipeline.model.card import ModelCard
from pipeline.model.runtime import Runtime
from pipeline.model.spec import ModelSpec
from pipeline.model.zoo import ensure_weights_available, model_card
from pipeline.output.rows import Provenance
from pipeline.spec import JobSpec, OutputSpec
from pipeline.tasks.base import Task, TaskLines, random_weights_note
from pipeline.tasks.classify.demo import COMMANDS as DEMOS
from pipeline.tasks.classify.replica import ClassifyConfig, ClassifyReplica, classify_fields

if TYPE_CHECKING:
    from pipeline.fit.training import Training


class ClassifyOutputSpec(OutputSpec):
    embeddings: bool = True
    top_k: int = Field(5, ge=1, le=1000)
    centre_embedding: bool = Field(
        False, description="also embed each frame's centre zoomed 1.25x (column "
        "embedding_centre, a second forward pass): near-duplicates then match copies "
        "cropped by a border (docs/search.md)")


class ClassifyJobSpec(JobSpec):
    task: Literal["classify"] = "classify"
    model: ModelSpec
    output: ClassifyOutputSpec


class ClassifyTask(Task):
    name = "classify"
    demos = DEMOS
    spec_class = ClassifyJobSpec
    architectures = ("r3d_18", *(a for a in ARCHS if a != "r3d_18"))

    def resolve(self, spec: ClassifyJobSpec) -> ModelCard:
        return model_card(spec.model)

    def fetch(self, model: ModelCard) -> None:
        ensure_weights_available(model)

    def decode_spec(self, spec: ClassifyJobSpec, model: ModelCard) -> DecodeSpec:
        return DecodeSpec.from_sampling(spec.sampling, spec.resources, model.short_side,
                                        model.crop_size, model.extra.get("sampling"),
                                        spec.allow_uri_options)

    def output_fields(self, arch: str) -> list[pa.Field]:
        return classify_fields(arch)

    def replica(self, spec: ClassifyJobSpec, model: ModelCard, runtime: Runtime
                ) -> tuple[type, dict[str, Any]]:
        config = ClassifyConfig.of(model, runtime, spec.output.top_k, spec.output.embeddings,
                                   spec.name, spec.output.centre_embedding)
        return ClassifyReplica, {"config": config}

    def provenance(self, spec: ClassifyJobSpec, model: ModelCard) -> Provenance:
        return Provenance(model.arch, model.weights, spec.name)

    def describe(self, spec: ClassifyJobSpec, model: ModelCard) -> TaskLines:
        return TaskLines(
            model=f"{model.arch} ({model.kind} model), weights {model.weights}, "
                  f"{len(model.class_names)} classes",
            output=f"top-{spec.output.top_k}" + (", embeddings" if spec.output.embeddings
                                                 else "")
            + (" (whole and centre)" if spec.output.centre_embedding
               and spec.output.embeddings else ""),
            notes=random_weights_note(model.meaningful, "predictions"))

    def record(self, model: ModelCard) -> dict[str, Any]:
        return {"arch": model.arch, "weights": model.weights,
                "classes": len(model.class_names), "predictions_meaningful": model.meaningful}

    def summary(self, record: dict[str, Any], figures: dict[str, Any] | None = None
                ) -> list[str]:
        if record["model"]["predictions_meaningful"]:
            return []
        return ["note: weights: none -> random weights; pred_label/pred_score are "
                "meaningless. Use a checkpoint from `vidbatch train` or torchvision weights "
                "for real predictions."]

    def training(self) -> Training:
        from pipeline.tasks.classify.train import ClassifyTraining

        return ClassifyTraining()

"""The classification replica: a torchvision ResNet (:mod:`pipeline.model.zoo`) turns each
video's sampled clips into one embedding (the pooled features, averaged over clips, and
over frames for 2D models) and top-k class predictions from its linear head. Rows whose
decode failed pass through untouched, so every input row leaves as exactly one output row.

With ``output.centre_embedding`` it also embeds a second view of the same frames, their
centre zoomed by :data:`CENTRE_ZOOM` (``embedding_centre``): a copy cropped by a 10% border
shows what that view shows, so near-duplicate search matches it there
(:mod:`pipeline.search.near_dups`, docs/search.md).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.model.archs import ARCHS
from pipeline.model.card import ModelCard
from pipeline.model.runtime import Runtime, Streams, bf16_cpu_warning, pick_device
from pipeline.output.rows import (
    Batch,
    Provenance,
    inference_failed,
    output_schema,
    per_ok,
    rows_table,
)


def classify_fields(arch: str) -> list[pa.Field]:
    """The task's own output columns for a model architecture."""
    return [
        pa.field("pred_index", pa.int32()),
        pa.field("pred_label", pa.string()),
        pa.field("pred_score", pa.float32()),
        pa.field("topk_labels", pa.list_(pa.string())),
        pa.field("topk_scores", pa.list_(pa.float32())),
        pa.field("embedding", pa.list_(pa.float32(), ARCHS[arch].embed_dim)),
        pa.field("embedding_centre", pa.list_(pa.float32(), ARCHS[arch].embed_dim)),
    ]


# The centre view's zoom: the middle 1/1.25 = 80% of each side, i.e. what is left after a
# 10% border is cut away on every side, resized back to the frame's size.
CENTRE_ZOOM = 1.25


def centre_view(clips, zoom: float = CENTRE_ZOOM):
    """Clips ``(n, T, H, W, 3)`` (uint8 or float in 0..255) -> float ``(n, T, H, W, 3)``:
    the centre ``1/zoom`` of every frame resized back to ``H x W`` (bilinear, as training's
    random resized crop resizes)."""
    import torch.nn.functional as F

    n, t, h, w = clips.shape[:4]
    bh, bw = round(h / zoom), round(w / zoom)
    top, left = (h - bh) // 2, (w - bw) // 2
    box = clips[:, :, top:top + bh, left:left + bw].flatten(0, 1).permute(0, 3, 1, 2).float()
    out = F.interpolate(box, size=(h, w), mode="bilinear", align_corners=False,
                        antialias=True)
    return out.clamp_(0, 255).permute(0, 2, 3, 1).reshape(n, t, h, w, 3)


@dataclass(frozen=True, kw_only=True)
class ClassifyConfig:
    """What each replica is built from (pickled to the actors)."""

    card: ModelCard
    runtime: Runtime
    top_k: int
    embeddings: bool
    schema: pa.Schema
    provenance: Provenance
    centre_embedding: bool = False

    @classmethod
    def of(cls, card: ModelCard, runtime: Runtime | None = None, top_k: int = 5,
           embeddings: bool = True, job: str = "", centre_embedding: bool = False
           ) -> ClassifyConfig:
        """The config of a replica of ``card`` in the job named ``job``."""
        return cls(card=card, runtime=runtime or Runtime(), top_k=top_k, embeddings=embeddings,
                   schema=output_schema(classify_fields(card.arch)),
                   provenance=Provenance(card.arch, card.weights, job),
                   centre_embedding=centre_embedding and embeddings)


def prediction_columns(n: int, ok: np.ndarray, emb: np.ndarray | None,
                       topi: np.ndarray | None, tops: np.ndarray | None,
                       class_names: np.ndarray, schema: pa.Schema,
                       centre: np.ndarray | None = None) -> dict[str, pa.Array]:
    """The task's columns of one batch: results on the ``ok`` rows, null elsewhere
    (``embedding_centre`` everywhere when ``centre`` is None)."""
    has = topi is not None
    return {
        "pred_index": per_ok(n, ok, topi[:, 0].tolist() if has else None, pa.int32()),
        "pred_label": per_ok(n, ok, class_names[topi[:, 0]].tolist() if has else None,
                             pa.string()),
        "pred_score": per_ok(n, ok, tops[:, 0].tolist() if has else None, pa.float32()),
        "topk_labels": per_ok(n, ok, [class_names[r].tolist() for r in topi] if has else None,
                              pa.list_(pa.string())),
        "topk_scores": per_ok(n, ok, tops.tolist() if has else None, pa.list_(pa.float32())),
        "embedding": per_ok(n, ok, emb.tolist() if emb is not None else None,
                            schema.field("embedding").type),
        "embedding_centre": per_ok(n, ok, centre.tolist() if centre is not None else None,
                                   schema.field("embedding_centre").type),
    }


class ClassifyReplica:
    """One model replica; Ray Data constructs it once per actor, tests call it directly."""

    # Takes frames already on its device (a torch tensor: decode_on replica, on a GPU).
    device_frames = True

    def __init__(self, config: ClassifyConfig):
        import torch

        from pipeline.model.layout import Normalize
        from pipeline.model.zoo import build_network, split_head

        self.config = config
        rt, card = config.runtime, config.card
        self.streams = Streams(rt)
        self.device = torch.device(pick_device(rt.device))
        warning = bf16_cpu_warning(rt.precision, self.device.type)
        if warning:
            print(warning, file=sys.stderr, flush=True)  # Ray forwards it to the driver
        body, head = split_head(build_network(card))
        self.memory_format = None
        if rt.channels_last:
            self.memory_format = torch.channels_last_3d if card.clip_model else \
                torch.channels_last
        body = body.to(self.device).eval()
        if self.memory_format is not None:
            body = body.to(memory_format=self.memory_format)
        self.body, self.head = body, head.to(self.device).eval()
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[
            rt.precision]
        self.normalize = Normalize(card).to(self.device)
        self.class_names = np.array(card.class_names, dtype=object)

    def _prepare(self, frames: np.ndarray, centre: bool = False):
        """uint8 ``(n, T, H, W, 3)`` -> the network's normalised input on its device
        (``centre``: of the frames' :func:`centre_view`)."""
        import torch

        if isinstance(frames, torch.Tensor):  # decoded on the replica's device
            x = frames.to(self.device)
        else:
            host = torch.from_numpy(frames)
            if self.device.type == "cuda":  # page-locked, so the copy runs asynchronously
                host = host.pin_memory()
            x = host.to(self.device, non_blocking=True)
        x = self.normalize(centre_view(x) if centre else x)
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        return x

    def embed(self, frames: np.ndarray, centre: bool = False) -> np.ndarray:
        """Per-video embeddings for uint8 frames ``(videos, clips, T, H, W, 3)``: one
        forward pass per stream over consecutive videos, in input order. ``centre``: of
        the frames' :func:`centre_view`."""
        return self.streams.map(self._embed_centre if centre else self._embed, frames)

    def _embed_centre(self, frames: np.ndarray) -> np.ndarray:
        return self._embed(frames, centre=True)

    def _embed(self, frames: np.ndarray, centre: bool = False) -> np.ndarray:
        import torch

        videos, clips, t = frames.shape[:3]
        flat = frames.reshape(videos * clips, *frames.shape[2:])
        with torch.inference_mode(), torch.autocast(
                self.device.type, dtype=self.dtype or torch.float32,
                enabled=self.dtype is not None):
            f = self.body(self._prepare(flat, centre)).float()
        per_video = clips if self.config.card.clip_model else clips * t
        return f.view(videos, per_video, -1).mean(dim=1).cpu().numpy()

    def classify(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (indices, softmax scores) for each embedding."""
        import torch

        with torch.inference_mode():
            logits = self.head(torch.from_numpy(embeddings).to(self.device)).float()
            k = min(self.config.top_k, logits.shape[1])
            scores, idx = torch.softmax(logits, dim=1).topk(k, dim=1)
        return idx.cpu().numpy(), scores.cpu().numpy()

    def __call__(self, batch: Batch) -> pa.Table:
        ok = batch["status"] == "ok"
        n_ok = int(ok.sum())
        c = self.config
        emb = topi = tops = centre = None
        infer_s = np.full(len(ok), np.nan)
        if n_ok:
            t0 = time.perf_counter()
            try:
                emb = self.embed(batch["frames"][ok])
                topi, tops = self.classify(emb)
                if c.centre_embedding:
                    centre = self.embed(batch["frames"][ok], centre=True)
            except Exception as e:  # one bad batch must not end the job: its rows say why
                batch = inference_failed(batch, ok, e)
                ok, emb, centre = np.zeros_like(ok), None, None
            infer_s[ok] = (time.perf_counter() - t0) / max(1, n_ok)
        columns = prediction_columns(len(ok), ok, emb if c.embeddings else None, topi, tops,
                                     self.class_names, c.schema, centre)
        return rows_table(batch, c.schema, c.provenance, ok, columns, infer_s)

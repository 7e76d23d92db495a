"""Training's latest step, for the driver's live display: rank 0 posts its epoch, step and
loss to a tiny named actor (no CPU reserved) at most twice a second; the driver reads it
(:func:`pipeline.train.report.fit_with_progress`). An actor, not a file: the workers may run
on other machines than the driver."""

from __future__ import annotations

import time
from typing import Any

import ray

POST_EVERY_S = 0.5


@ray.remote(num_cpus=0)
class StepBoard:
    def __init__(self):
        self.latest: dict[str, Any] = {}

    def post(self, epoch: int, step: int, loss: float) -> None:
        self.latest = {"epoch": epoch, "step": step, "loss": loss, "at": time.time()}

    def read(self) -> dict[str, Any]:
        return self.latest


class StepPoster:
    """A worker's side of the board (picklable; the actor is looked up on first use).
    Posting is best effort: a board that is gone never fails training."""

    def __init__(self, name: str, namespace: str):
        self.name, self.namespace = name, namespace
        self._board, self._posted = None, 0.0

    def __call__(self, epoch: int, step: int, loss) -> None:
        now = time.monotonic()
        if now - self._posted < POST_EVERY_S:
            return
        self._posted = now
        try:
            if self._board is None:
                self._board = ray.get_actor(self.name, namespace=self.namespace)
            self._board.post.remote(epoch, step, float(loss))
        except Exception:  # noqa: BLE001  (the display only)
            self._board = None

    def __getstate__(self):
        return {"name": self.name, "namespace": self.namespace}

    def __setstate__(self, state):
        self.__init__(state["name"], state["namespace"])

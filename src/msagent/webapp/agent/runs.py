"""Finished agent runs of the web page: the trajectory and what it ran on, the last few kept."""

from __future__ import annotations

import time
from typing import cast

import attrs
import numpy as np

from msagent._lru import BoundedLRU
from msagent.server.errors import ServerError
from msagent.types import BBox, Point, Trajectory

MAX_RUNS = 64


class RunNotFound(ServerError):
    status, code = 404, "run_not_found"


@attrs.frozen(eq=False)
class RunRecord:
    """A finished run: the trajectory and what it ran on."""

    id: str
    image_id: str
    trajectory: Trajectory
    ground_truth: np.ndarray | None = None
    created: float = attrs.field(factory=time.time)

    def prompts_after(self, steps: int) -> list[BBox | Point]:
        """The pixel prompts of the executed actions among the first ``steps`` steps."""
        # an executed step added a pixel prompt
        return [cast(BBox | Point, s.prompt) for s in self.trajectory.steps[:steps] if s.executed]

    def mask_after(self, steps: int) -> np.ndarray | None:
        executed = [s for s in self.trajectory.steps[:steps] if s.executed]
        return executed[-1].mask if executed else None


class RunStore:
    """Finished runs by id, the most recent ``max_items``."""

    def __init__(self, max_items: int = MAX_RUNS) -> None:
        self.max_items = max_items
        self._runs: BoundedLRU[str, RunRecord] = BoundedLRU(max_items)

    def put(self, record: RunRecord) -> None:
        self._runs.put(record.id, record)

    def get(self, run_id: str) -> RunRecord:
        record = self._runs.peek(run_id)
        if record is None:
            raise RunNotFound(f"no agent run {run_id!r} on this server (the server keeps the last "
                              f"{self.max_items} runs); run the agent again")
        return record



"""Expert trajectory generation: the abstract TrajectoryGenerator."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator

from .segmenter import Segmenter
from .types import Case, Trajectory


class TrajectoryGenerator(ABC):
    """Turns a Case (with ground truth) into expert trajectories using a Segmenter."""

    name: str = ""

    @abstractmethod
    def generate(self, case: Case, segmenter: Segmenter) -> Iterator[Trajectory]:
        """Yield the accepted trajectories for ``case`` (possibly none)."""

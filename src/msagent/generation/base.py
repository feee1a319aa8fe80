"""Expert trajectory generation: the abstract TrajectoryGenerator.

A generator turns a :class:`~msagent.types.Case` with its ground truth into expert
trajectories by driving a :class:`~msagent.backbones.segmenter.Segmenter`. :meth:`generate` yields the
trajectories that pass the generator's filters; :meth:`attempt` yields every trajectory it
ran, each with its verdict, so that a long job can record what was dropped and why.
The built-in ``hybrid`` generator lives in :mod:`msagent.generation.hybrid`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import attrs

from msagent.backbones.segmenter import Segmenter
from msagent.types import Case, Trajectory


@attrs.frozen(eq=False)
class Attempt:
    """One generated trajectory and its verdict: ``kept`` (passes the filters) or the
    ``reason`` it was dropped (e.g. "low_final_iou")."""

    trajectory: Trajectory
    kept: bool = True
    reason: str = ""


class TrajectoryGenerator(ABC):
    """Turns a Case (with ground truth) into expert trajectories using a Segmenter."""

    name: str = ""

    @abstractmethod
    def generate(self, case: Case, segmenter: Segmenter) -> Iterator[Trajectory]:
        """Yield the accepted trajectories for ``case`` (possibly none)."""

    def attempt(self, case: Case, segmenter: Segmenter) -> Iterator[Attempt]:
        """Yield every trajectory run for ``case`` with its verdict. The default reports the
        trajectories of :meth:`generate` as kept; generators with filters override it."""
        for trajectory in self.generate(case, segmenter):
            yield Attempt(trajectory)

    def options(self) -> dict:
        """The generator's settings as JSON-safe values (recorded in a job's manifest)."""
        return {}

    def check_backbone(self, segmenter: Segmenter | str) -> None:
        """Refuse, before any case runs, a backbone (an instance or a registered name) this
        generator cannot run with (:class:`~msagent.errors.InvalidInput`). The default accepts
        every backbone."""

"""Expert trajectory generation: the ``hybrid`` generator and the resumable job.

- :class:`HybridGenerator` / :class:`HybridConfig`: Box-to-Point and Sequential-Click expert
  episodes (:mod:`msagent.generation.hybrid`);
- :func:`generate`: datasets × backbone → a sharded Parquet trajectory set, locally or on
  Ray, resumable (:mod:`msagent.generation.job`);
- :func:`read_trajectories`: the records of a trajectory set (:mod:`msagent.generation.records`).
"""

from msagent.generation.hybrid import HybridConfig, HybridGenerator
from msagent.generation.job import GenerateSummary, generate, summarize
from msagent.generation.records import TrajectoryRecord, read_manifest, read_trajectories

__all__ = ["GenerateSummary", "HybridConfig", "HybridGenerator", "TrajectoryRecord", "generate",
           "read_manifest", "read_trajectories", "summarize"]

"""One 3-D run (key slice → propagation → review) and the interactive 3-D session.

- :mod:`.stack`: a volume as slices for the backbone (:class:`SlicedVolume`);
- :mod:`.embeddings`, :mod:`.propagation`: the generic propagator and its embedding store;
- :mod:`.agent`, :mod:`.trajectory`, :mod:`.api`: the agentic 3-D run, its record and
  :func:`segment_volume`;
- :mod:`.session`: the interactive 3-D session (prompts on any slice, propagate, undo).
"""

from msagent.volume.agent import VolumeAgent
from msagent.volume.api import VolumeResult, segment_volume
from msagent.volume.trajectory import VolumeEpisode, VolumeTrajectory

__all__ = ["VolumeAgent", "VolumeEpisode", "VolumeResult", "VolumeTrajectory", "segment_volume"]

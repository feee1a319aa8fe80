"""Export trajectory sets (and datasets) to training formats.

- ``verl-sft``: verl 0.9 MultiTurnSFTDataset Parquet, one row per kept trajectory
  (:mod:`msagent.export.verl`);
- ``llamafactory``: LLaMA-Factory ShareGPT multimodal JSON plus its ``dataset_info.json``
  entry (:mod:`msagent.export.llamafactory`);
- ``verl-rl``: verl RLHFDataset prompt Parquet, one row per case (from a trajectory set or a
  dataset). ``layout="upstream"`` writes upstream MedSAM-Agent's row layout instead, which its
  ``MedSAMDataset`` loads (:mod:`msagent.export.upstream`).

The conversations are the released checkpoint's (:mod:`msagent.export.conversation`).
Output is written part by part (one part per trajectory-set shard), each atomically; a rerun
skips the parts already written, so an interrupted export resumes. ``export.json`` records
the settings; a rerun with other settings into the same folder is refused
(:mod:`msagent.export.job`).
"""

from msagent.export.conversation import (
    Conversation,
    ParsedConversation,
    check_size,
    conversation,
    parse_conversation,
)
from msagent.export.job import FORMATS, ExportSummary, export_rl_prompts, export_trajectories

__all__ = ["Conversation", "ExportSummary", "FORMATS", "ParsedConversation", "check_size", "conversation",
           "export_rl_prompts", "export_trajectories", "parse_conversation"]

"""Dataset builders: RL parquet (verl's RLHFDataset) and multi-turn SFT parquet
(verl's MultiTurnSFTDataset), from msagent Cases or trajectory sets, on msagent's own verl
export rows (:mod:`msagent.export.verl`).

CLI: ``python -m msagent_training.data rl ...``; SFT parquet from a trajectory set: ``msagent
export TRAJ --format verl-sft`` (the same rows). The writers here serve the smoke data and tests.
"""

from .parquet import rl_rows, write_rl_parquet, write_rows, write_sft_parquet
from .rows import AGENT_NAME, rl_row, rl_schema, sft_row, sft_schema, tools_kwargs

__all__ = ["AGENT_NAME", "rl_row", "rl_rows", "rl_schema", "sft_row", "sft_schema", "tools_kwargs",
           "write_rl_parquet", "write_rows", "write_sft_parquet"]

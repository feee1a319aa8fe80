"""Dataset builders: RL parquet (verl's RLHFDataset) and multi-turn SFT parquet
(verl's MultiTurnSFTDataset), from msagent Cases or trajectory sets.

CLI: ``python -m msagent_training.data {rl,sft} ...`` (``--help`` for the options).
"""

from .parquet import rl_rows, rl_schema, sft_schema, write_rl_parquet, write_rows, write_sft_parquet
from .rows import AGENT_NAME, IMAGE_PLACEHOLDER, flatten_messages, rl_prompt, rl_row, sft_row

__all__ = ["AGENT_NAME", "IMAGE_PLACEHOLDER", "flatten_messages", "rl_prompt", "rl_row", "rl_rows",
           "rl_schema", "sft_row", "sft_schema", "write_rl_parquet", "write_rows",
           "write_sft_parquet"]

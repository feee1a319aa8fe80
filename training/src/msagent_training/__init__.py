"""msagent wired into verl 0.9.1 (unmodified) through its extension points.

- :mod:`msagent_training.tools` — ``add_bbox``, ``add_point``, ``stop_action`` verl tools on
  msagent's protocol and segmenters (``configs/tools/*.yaml``);
- :mod:`msagent_training.agent_loop` — the ``msagent`` agent loop (``configs/agent_loop.yaml``);
- :mod:`msagent_training.reward` — ``compute_score`` (``reward.custom_reward_function``);
- :mod:`msagent_training.data` — RL / multi-turn SFT parquet builders (``python -m
  msagent_training.data``);
- :mod:`msagent_training.tiny` — a tiny random Qwen3-VL for smoke runs and tests;
- :mod:`msagent_training.smoke_data` — phantom cases and expert trajectories.

Nothing is imported here: importing verl is slow, and each piece is loaded by verl by path.
"""

__version__ = "0.1.0"

"""The one-call API's namespace: :func:`segment` and :class:`Result`
(:mod:`msagent.agent.segment`), and loading and listing plugins by name
(:mod:`msagent.plugins.loading`). This module only re-exports them for ``msagent``; nothing
inside msagent imports it (an import-linter contract)."""

from msagent.agent.segment import Result, segment
from msagent.plugins.loading import (
    list_backbones,
    list_policies,
    list_rewards,
    list_trajectory_generators,
    load_backbone,
    load_policy,
    load_reward,
    load_trajectory_generator,
)

__all__ = ["Result", "segment", "load_backbone", "load_policy", "load_reward",
           "load_trajectory_generator", "list_backbones", "list_policies", "list_rewards",
           "list_trajectory_generators"]

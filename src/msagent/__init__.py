"""msagent: agentic interactive medical image segmentation.

A policy (a multimodal LLM, or a simulated expert) drives a promptable segmentation backbone
with one tool call per turn. Backbones, policies, rewards and trajectory generators are
plugins discovered through the ``msagent`` entry-point group. ``load_backbone`` /
``list_backbones`` build and list backbones. ``segment_volume`` runs the agent through a whole
CT/MR volume (a key slice, propagation, review).
"""

from msagent._version import __version__
from msagent.agent import Agent
from msagent.api import (
    Result,
    list_backbones,
    list_policies,
    list_rewards,
    list_trajectory_generators,
    load_backbone,
    load_policy,
    load_reward,
    load_trajectory_generator,
    segment,
)
from msagent.backbones.segmenter import CacheInfo, Embedding, Segmenter
from msagent.generation.base import TrajectoryGenerator
from msagent.plugins import lazy
from msagent.plugins.hookspecs import hookimpl
from msagent.policies.base import Episode, Policy, Reply
from msagent.reward import MedSAMReward, Reward, RewardBreakdown
from msagent.types import Action, BBox, Case, MaskPrediction, Point, Prompts, Step, Trajectory
from msagent.volume.agent import VolumeAgent
from msagent.volume.api import VolumeResult, segment_volume
from msagent.volume.trajectory import VolumeEpisode, VolumeTrajectory

__all__ = [
    "Action", "Agent", "BBox", "CacheInfo", "Case", "Embedding", "Episode", "MaskPrediction",
    "MedSAMReward", "Point", "Policy", "Prompts", "Reply", "Result", "Reward", "RewardBreakdown",
    "Segmenter", "Step", "Trajectory", "TrajectoryGenerator", "VolumeAgent", "VolumeEpisode",
    "__version__", "VolumeResult", "VolumeTrajectory", "hookimpl", "list_backbones",
    "list_policies", "list_rewards", "list_trajectory_generators", "lazy", "load_backbone",
    "load_policy", "load_reward", "load_trajectory_generator", "segment", "segment_volume",
]

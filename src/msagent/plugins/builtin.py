"""The plugin that ships with the core: it registers through the same hooks as any other."""

from __future__ import annotations

from msagent.plugins.factories import lazy
from msagent.plugins.hookspecs import hookimpl


@hookimpl
def msagent_register_policies(register):
    register("expert", lazy("msagent.policies.expert:ExpertPolicy"),
             "Simulated clinician from the ground truth: box, then ΔIoU-accepted corrective clicks")
    register("oracle-box", lazy("msagent.policies.expert:OracleBoxPolicy"),
             "Baseline: one tight ground-truth box, then stop")


@hookimpl
def msagent_register_rewards(register):
    register("medsam", lazy("msagent.reward:MedSAMReward"),
             "MedSAM-Agent process reward (format, quality, penalty, bonus)")


@hookimpl
def msagent_register_segmenters(register):
    register("remote", lazy("msagent.backbones.remote:RemoteSegmenter"),
             "A backbone served by `msagent serve` over HTTP (url= or $MSAGENT_REMOTE_URL)")


@hookimpl
def msagent_register_trajectory_generators(register):
    register("hybrid", lazy("msagent.generation.hybrid:HybridGenerator"),
             "Box-to-Point and Sequential-Click expert trajectories, ΔIoU-accepted (τ=0.01, N=5)")

"""One 2-D episode: the step rule (:mod:`.episode`), the loop that asks the policy and runs the
backbone (:mod:`.loop`), and refinement of an existing mask (:mod:`.refine`)."""

from msagent.agent.loop import Agent

__all__ = ["Agent"]

"""Test support for msagent-training (its tests and users' checks of a setup): a scripted
policy, the fixed episode it replays, the parts of verl's ``AgentData`` the tools read, and
the settings of the CPU smoke runs."""

from __future__ import annotations

import io
from types import SimpleNamespace

import msagent
import numpy as np
from PIL import Image

#: CPU smoke runs: SFT steps (enough for valid calls in some sampled replies, not all; see
#: msagent_training.probe) and the policy's image size in pixels
SFT_STEPS = 60
IMAGE_SIZE = 256

#: a fixed episode in the 0–999 frame: box, positive click, negative click, stop
_CALL = '{}\n<tool_call>\n{{"name": "{}", "arguments": {}}}\n</tool_call>'
SCRIPT = tuple(_CALL.format(text, name, args) for text, name, args in (
    ("Box the ellipse.", "add_bbox", '{"bbox_2d": [180, 150, 820, 860]}'),
    ("Grow it.", "add_point", '{"point_2d": [500, 500], "point_type": "positive"}'),
    ("Trim the corner.", "add_point", '{"point_2d": [20, 30], "point_type": "negative"}'),
    ("Done.", "stop_action", "{}"),
))


class ScriptedPolicy(msagent.Policy):
    """Replies with fixed texts in order (the last one again once they run out)."""

    name = "scripted"

    def __init__(self, replies) -> None:
        self.replies = list(replies)
        self.turn = 0

    def act(self, episode) -> msagent.Reply:
        reply = self.replies[min(self.turn, len(self.replies) - 1)]
        self.turn += 1
        return msagent.Reply(reply)


def agent_data(request_id: str) -> SimpleNamespace:
    """The parts of verl's AgentData the tools read."""
    return SimpleNamespace(request_id=request_id, extra_fields={})


def png_array(data: bytes) -> np.ndarray:
    """A PNG's pixels as an array."""
    return np.asarray(Image.open(io.BytesIO(data)))


__all__ = ["IMAGE_SIZE", "SCRIPT", "SFT_STEPS", "ScriptedPolicy", "agent_data", "png_array"]

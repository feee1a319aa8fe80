import hashlib
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msagent import protocol
from msagent.errors import PolicyOutputError
from msagent.types import BBox, Point

# The released checkpoint's strings, pinned: any edit must be deliberate.
SYSTEM_SHA256 = "9238cf9e4a4b8425c93dde532d22c5f8df1e10e50932eaefdd6b967b84c07a61"


def test_system_prompt_is_the_checkpoints_byte_for_byte():
    assert len(protocol.SYSTEM_PROMPT) == 2221
    assert hashlib.sha256(protocol.SYSTEM_PROMPT.encode()).hexdigest() == SYSTEM_SHA256
    for schema in protocol.TOOL_SCHEMAS:
        assert json.dumps(schema) in protocol.SYSTEM_PROMPT


def test_user_texts_are_pinned():
    assert protocol.first_user_text("liver") == (
        "The target to be segmented is: liver.\n"
        "Now, please analyze the original image, then decide your first action.")
    assert protocol.FOLLOW_UP_TEXT == (
        "Here is the updated mask after your previous action.\nBased on this, what is your next "
        "action? If the mask is now accurate, you can call 'stop_action' to finish.")
    assert [s["function"]["name"] for s in protocol.TOOL_SCHEMAS] == [
        "add_bbox", "add_point", "stop_action"]


@pytest.mark.parametrize("text, kind, args", [
    ('I see it.\n<tool_call>\n{"name": "add_bbox", "arguments": {"bbox_2d": [1, 2, 30, 40]}}\n'
     '</tool_call> trailing', "add_bbox", {"bbox_2d": [1, 2, 30, 40]}),
    ('<tool_call>{name: "add_point", arguments: {point_2d: [5, 6], point_type: "negative"}}'
     '</tool_call>', "add_point", {"point_2d": [5, 6], "point_type": "negative"}),
    ('<tool_call>{"name": "add_positive_point", "arguments": {"x": 7, "y": 8}}</tool_call>',
     "add_point", {"point_2d": [7, 8], "point_type": "positive"}),
    # floats are kept, not rounded: to_pixel maps them itself (issue 15)
    ('<tool_call>{"name": "add_negative_point", "arguments": {"x": 7.4, "y": 8.6}}',
     "add_point", {"point_2d": [7.4, 8.6], "point_type": "negative"}),
    # upstream's documented repair: a key missing only its opening quote
    ('<tool_call>{"name": "add_positive_point", "arguments": {"x": 500, y": 430}}</tool_call>',
     "add_point", {"point_2d": [500, 430], "point_type": "positive"}),
    ('<tool_call>{"name": "add_point", "arguments": {point_2d": [5, 6], "point_type": '
     '"positive"}}</tool_call>', "add_point", {"point_2d": [5, 6], "point_type": "positive"}),
    ('<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [1.0, 2, 3, 4.0]}}</tool_call>',
     "add_bbox", {"bbox_2d": [1, 2, 3, 4]}),
    ('<tool_call>{"name": "stop_action", "arguments": {}}</tool_call>', "stop_action", {}),
    ('{"name": "stop_action", "arguments": "{}"}', "stop_action", {}),
    ('<tool_call>{"name":"add_bbox","arguments":"{\\"bbox_2d\\": [1,2,3,4]}"}</tool_call>',
     "add_bbox", {"bbox_2d": [1, 2, 3, 4]}),
])
def test_parse_action_accepts_valid_and_tolerated_forms(text, kind, args):
    action = protocol.parse_action(text)
    assert action.kind == kind and dict(action.arguments) == args and action.raw_text == text


@pytest.mark.parametrize("text, message", [
    ("I will add a box somewhere.", "no <tool_call>"),
    ("<tool_call>{not json at all</tool_call>", "not valid JSON"),
    ('<tool_call>{"name": "add_circle", "arguments": {}}</tool_call>', "unknown tool"),
    ('<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [1, 2, 3]}}</tool_call>', "4 numbers"),
    ('<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": ["a", 2, 3, 4]}}</tool_call>',
     "finite numbers"),
    ('<tool_call>{"name": "add_point", "arguments": {"point_2d": [1, 2]}}</tool_call>', "point_type"),
    ('<tool_call>{"name": "add_point", "arguments": {"point_2d": [1, true], "point_type": '
     '"positive"}}</tool_call>', "finite numbers"),
    ('<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [1, 2, 1e999, 4]}}</tool_call>',
     "finite numbers"),
    ('<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [1, 2, 1' + "0" * 400 + ', 4]}}'
     '</tool_call>', "finite numbers"),
])
def test_parse_action_rejects_bad_calls_with_a_reason(text, message):
    with pytest.raises(PolicyOutputError, match=message):
        protocol.parse_action(text)


def test_unknown_argument_keys_are_ignored_and_recorded():
    # Both upstream paths execute this call; the parser drops the extra key and names it.
    # (Until issue 15 this was rejected with "unexpected arguments".)
    action = protocol.parse_action(
        '<tool_call>{"name": "add_point", "arguments": {"point_2d": [5, 6], "point_type": '
        '"positive", "label": 1, "confidence": 0.9}}</tool_call>')
    assert dict(action.arguments) == {"point_2d": [5, 6], "point_type": "positive"}
    assert action.ignored == ("confidence", "label")
    box = protocol.parse_action('{"name": "add_bbox", "arguments": {"bbox_2d": [1, 2, 3, 4], "z": 1}}')
    assert box.ignored == ("z",) and protocol.parse_action(box.raw_text) == box


def test_ignored_keys_survive_the_trajectory_json():
    from msagent.types import Step, Trajectory

    action = protocol.parse_action('{"name": "stop_action", "arguments": {"why": "done"}}')
    trajectory = Trajectory(target="t", image_size=(4, 4), steps=(Step(0, action.raw_text, action),))
    again = Trajectory.from_json(trajectory.to_json())
    assert again.steps[0].action.ignored == ("why",)
    plain = Trajectory(target="t", image_size=(4, 4),
                       steps=(Step(0, "", protocol.stop_action()),))
    assert "ignored" not in plain.to_json()  # files without ignored keys are unchanged


@pytest.mark.parametrize("value, size, upstream, rounded_first", [
    (678.5, 2000, 1357, 1356), (1.5, 1000, 1, 2), (99.5, 3000, 298, 300), (0.6, 1000, 0, 1),
    (1000, 2000, 1999, 1998), (999.5, 2000, 1999, 1998),
    (678.5, 117, 79, 79), (999.9, 99, 98, 98), (-0.4, 100, 0, 0), (1e300, 50, 49, 49),
])
def test_floats_map_with_upstreams_floor_rule(value, size, upstream, rounded_first):
    # upstream's RL tools: int(v * size / 1000), then the server clamps into the image.
    # ``rounded_first`` is what msagent gave before issue 15 (round half-to-even, then clamp
    # the value to 0-999, then floor): 1 px off on the first six.
    assert protocol.to_pixel(value, size) == upstream
    if value < 1e6:
        assert upstream == min(max(int(value * size / 1000), 0), size - 1)
    assert rounded_first == min(math.floor(min(max(round(value), 0), 999) * size / 1000), size - 1)


def test_a_float_is_not_rounded_before_mapping():
    # 678.6 was rounded to 679 first; upstream gives int(678.6) = 678 at 1000 px.
    action = protocol.parse_action(
        '<tool_call>{"name": "add_point", "arguments": {"point_2d": [678.6, 0.6], '
        '"point_type": "positive"}}</tool_call>')
    assert protocol.action_to_prompt(action, (1000, 1000)) == Point(678, 0, True)


@pytest.mark.parametrize("box, size", [
    ([500, 100, 500, 600], (1000, 1000)),   # x1 == x2: upstream's tool refuses it too
    ([500, 100, 505, 600], (99, 99)),       # 49.5 and 49.995 both floor to 49
    ([10, 300, 900, 301], (100, 100)),      # y collapses to row 30
])
def test_a_box_of_zero_pixel_width_or_height_is_an_invalid_reply(box, size):
    text = json.dumps({"name": "add_bbox", "arguments": {"bbox_2d": box}})
    assert protocol.parse_action(text).kind == "add_bbox"  # without an image size: no check
    with pytest.raises(PolicyOutputError, match="zero width or height"):
        protocol.parse_action(text, size)


def test_a_thin_but_nonzero_box_is_valid():
    text = json.dumps({"name": "add_bbox", "arguments": {"bbox_2d": [500, 100, 510, 600]}})
    assert protocol.parse_action(text, (99, 99)).kind == "add_bbox"  # 49 .. 50


def test_only_the_first_call_counts():
    text = ('<tool_call>{"name": "stop_action", "arguments": {}}</tool_call>'
            '<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [1, 2, 3, 4]}}</tool_call>')
    assert protocol.parse_action(text).kind == "stop_action"


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 1000), st.data())
def test_pixel_to_model_to_pixel_is_exact_up_to_1000_px(size, data):
    pixel = data.draw(st.integers(0, size - 1))
    assert protocol.to_pixel(protocol.to_model(pixel, size), size) == pixel


@settings(max_examples=200, deadline=None)
@given(st.integers(1000, 5000), st.integers(0, 999))
def test_model_to_pixel_to_model_is_exact_from_1000_px(size, value):
    assert protocol.to_model(protocol.to_pixel(value, size), size) == value


@settings(max_examples=200, deadline=None)
@given(st.integers(-50, 1100), st.integers(1, 3000))
def test_to_pixel_clamps_into_the_image(value, size):
    assert 0 <= protocol.to_pixel(value, size) <= size - 1


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 900), st.integers(2, 900), st.data())
def test_format_parse_round_trip_of_prompts(height, width, data):
    xs = sorted(data.draw(st.lists(st.integers(0, width - 1), min_size=2, max_size=2)))
    ys = sorted(data.draw(st.lists(st.integers(0, height - 1), min_size=2, max_size=2)))
    box = BBox(xs[0], ys[0], xs[1], ys[1])
    point = Point(xs[0], ys[1], data.draw(st.booleans()))
    for prompt, make in ((box, protocol.bbox_action), (point, protocol.point_action)):
        action = make(prompt, (height, width), "Because.")
        parsed = protocol.parse_action(action.raw_text)
        assert parsed == action
        assert protocol.action_to_prompt(parsed, (height, width)) == prompt


def test_box_corners_are_ordered_and_clamped():
    action = protocol.parse_action(
        '<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [900, 800, -5, 1200]}}</tool_call>')
    assert protocol.action_to_prompt(action, (100, 200)) == BBox(0, 80, 180, 99)


def test_policy_image_is_512_and_overlay_is_green_blend():
    image = np.full((100, 60, 3), 100, np.uint8)
    mask = np.zeros((100, 60), bool)
    mask[:50] = True
    plain = protocol.policy_image(image)
    over = np.asarray(protocol.policy_image(image, mask))
    assert plain.size == (512, 512)
    assert tuple(over[10, 10]) == (50, 177, 50)  # 100*0.5 + (0,255,0)*0.5, truncated
    assert tuple(over[500, 10]) == (100, 100, 100)


def test_the_agent_counts_a_zero_size_box_and_hostile_text_as_invalid_replies():
    import msagent
    from msagent.testing import BoxBackbone, make_phantom

    zero = '<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [400, 250, 400, 700]}}</tool_call>'
    box = '<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [250, 250, 700, 700]}}</tool_call>'
    deep = "<tool_call>" + "[" * 5000 + "</tool_call>"
    stop = '<tool_call>{"name": "stop_action", "arguments": {}}</tool_call>'

    class Scripted(msagent.Policy):
        def __init__(self):
            self.replies = [zero, box, deep, stop]

        def act(self, episode):
            return msagent.Reply(self.replies.pop(0))

    image, mask = make_phantom()
    boxes = BoxBackbone()
    trajectory = msagent.Agent(Scripted(), boxes).run(image, "blob", mask)
    errors = [s.error for s in trajectory.steps]
    assert "zero width or height" in errors[0] and errors[1] is None
    assert "not valid JSON" in errors[2] and trajectory.stop_reason == "stop"
    assert boxes.decodes == 1 and trajectory.turns == 1

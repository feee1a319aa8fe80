"""The reply parser under hostile text: total (only PolicyOutputError), linear, bounded.

Issue 13: ``"<tool_call>x" + " " * 16000 + "y"`` took ~10 s (a quadratic regex); deep
nesting raised RecursionError, 4,300+-digit integers ValueError, integers beyond the float
range OverflowError — all escaping :func:`msagent.protocol.parse_action`.
"""

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msagent import protocol
from msagent.errors import PolicyOutputError
from msagent.types import Action

TIME_BOUND_S = 1.0  # generous: linear parsing takes milliseconds on every input here


def _parse_in_time(text: str) -> Action | PolicyOutputError:
    start = time.perf_counter()
    try:
        result: Action | PolicyOutputError = protocol.parse_action(text, (100, 100))
    except PolicyOutputError as exc:
        result = exc
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_BOUND_S, f"parse took {elapsed:.2f} s on {len(text)} chars"
    return result


CALL = '{"name": "add_bbox", "arguments": {"bbox_2d": [1, 2, 300, 400]}}'


@pytest.mark.parametrize("text", [
    "<tool_call>x" + " " * 16_000 + "y",
    "<tool_call>x" + " " * 1_000_000 + "y",
    "<tool_call>{" + ", " * 200_000 + "}",
    "<tool_call>{a" + " " * 100_000 + "b",
    "<tool_call>" + "[" * 100_000,
    "<tool_call>" + "{" * 5_000 + "}" * 5_000 + "</tool_call>",
    '<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": ' + "[" * 3000 + "]" * 3000
    + "}}</tool_call>",
    '<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [' + "9" * 5000
    + ", 1, 2, 3]}}</tool_call>",
    '<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [1' + "0" * 400
    + ", 1, 2, 3]}}</tool_call>",
    '<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [1e400, 1, 2, 3]}}</tool_call>',
    '<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [-1e400, 1, 2, 3]}}</tool_call>',
    '<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [NaN, 1, 2, 3]}}</tool_call>',
    '<tool_call>{"name": "add_bbox", "arguments": "' + "[" * 3000 + '"}</tool_call>',
    '<tool_call>{"name": "' + "x" * 1_000_000 + '", "arguments": {}}</tool_call>',
    "{" * 100_000 + "name",
    "a" * 1_000_000 + "<tool_call>" + CALL + "</tool_call>",  # beyond the cap: not read
    "<tool_call>" * 100_000,
    "</tool_call>" * 100_000 + "<tool_call>",
])
def test_hostile_replies_are_invalid_replies_in_bounded_time(text):
    assert isinstance(_parse_in_time(text), PolicyOutputError)


def test_a_call_after_a_long_rationale_within_the_cap_still_parses():
    text = "x" * (protocol.MAX_REPLY_CHARS - len(CALL) - 40) + "<tool_call>" + CALL + "</tool_call>"
    assert _parse_in_time(text).kind == "add_bbox"


def test_the_cap_is_on_what_is_read_not_on_the_reply():
    text = "<tool_call>" + CALL + "</tool_call>" + "z" * 2_000_000
    action = _parse_in_time(text)
    assert action.kind == "add_bbox" and action.raw_text == text


def test_a_huge_integer_is_refused_not_overflowed():
    with pytest.raises(PolicyOutputError, match="finite"):
        protocol.parse_action(json.dumps({"name": "add_point", "arguments": {
            "point_2d": [10 ** 400, 1], "point_type": "positive"}}))


_FRAGMENTS = st.sampled_from([
    "<tool_call>", "</tool_call>", "{", "}", "[", "]", '"', "'", ":", ",", " ", "\n", "\t",
    "name", '"name"', "arguments", '"add_bbox"', '"add_point"', '"stop_action"', "bbox_2d",
    '"point_2d"', '"positive"', "x", 'y"', "0", "9", "-", ".", "e", "1e400", "NaN", "true",
    "\\", "\u00e9", "\u2028",
])
_RUN = st.tuples(_FRAGMENTS, st.integers(1, 3000)).map(lambda t: t[0] * t[1])
_HOSTILE = st.lists(st.one_of(_FRAGMENTS, _RUN), max_size=30).map("".join)
_BIG = st.tuples(_FRAGMENTS, st.sampled_from([40_000, 250_000, 1_000_000])).map(
    lambda t: t[0] * t[1])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_HOSTILE, st.tuples(_HOSTILE, _BIG, _HOSTILE).map("".join)))
def test_any_text_parses_or_is_an_invalid_reply_in_bounded_time(text):
    result = _parse_in_time(text)
    if isinstance(result, Action):
        assert result.kind in ("add_bbox", "add_point", "stop_action")


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=5), children, max_size=4),
                    max_leaves=40),
       st.sampled_from(["add_bbox", "add_point", "stop_action", "add_positive_point"]))
def test_any_json_arguments_parse_or_are_an_invalid_reply(arguments, name):
    text = "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"
    _parse_in_time(text)

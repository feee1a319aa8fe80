"""segment_volume's options are refused with InvalidInput naming the accepted forms, never a
stray ValueError/TypeError/OverflowError, and no option chooses an allocation (issue 26,
Also): windows, labels, key_slice=True, survey_slices=10**9 (7.45 GiB of np.linspace)."""

from __future__ import annotations

import numpy as np
import pytest

import msagent
from msagent.errors import InvalidInput
from msagent.testing import BrightBackbone


def tube(count=4, size=(20, 30)):
    volume = np.full((count, *size), 20.0) + np.arange(count)[:, None, None] * 2.0
    yy, xx = np.mgrid[:size[0], :size[1]]
    mask = np.stack([(yy - size[0] // 2) ** 2 + (xx - size[1] // 2) ** 2 <= (4 + z % 3) ** 2
                     for z in range(count)])
    volume[mask] = 200.0
    return volume, mask


def run(**kwargs):
    volume, mask = tube()
    kwargs.setdefault("ground_truth", mask)
    return msagent.segment_volume(volume, "tube", backbone=BrightBackbone(), policy="expert", **kwargs)


@pytest.mark.parametrize("window", [
    [400, 40], {"a": 1}, ("a", "b"), (1, 2, 3), np.array([400, 40]), (True, 40), (400, None),
    (float("nan"), 40), (400, float("inf")), (0, 40), (-400, 40), "1e400/40", "0/40", "-5/40",
    "400/nan", 400, b"400/40", object(),
])
def test_a_bad_window_is_invalid_input_with_the_accepted_forms(window):
    with pytest.raises(InvalidInput, match="WIDTH/LEVEL"):
        run(window=window)


@pytest.mark.parametrize("window", ["abdomen", "400/40", (400, 40), (400.5, -20), "auto", None])
def test_good_windows_still_work(window):
    assert run(window=window, key_slice=1).key_slice == 1


@pytest.mark.parametrize("label", [True, 1.5, "1", float("nan"), [1], (1,), np.array([1]), 2**70])
def test_a_bad_label_is_invalid_input(label):
    _, mask = tube()
    with pytest.raises(InvalidInput, match="label"):
        run(ground_truth=mask.astype(np.int16) * 3, label=label)


def test_a_label_picks_its_value():
    _, mask = tube()
    assert run(ground_truth=mask.astype(np.int16) * 3, label=np.int64(3)).dice > 0.5


@pytest.mark.parametrize("key_slice", [True, False, 1.0, "1", np.float64(1), -1, 4, 10**30])
def test_a_bad_key_slice_is_invalid_input(key_slice):
    with pytest.raises(InvalidInput, match="key_slice"):
        run(key_slice=key_slice)


@pytest.mark.parametrize("options, name", [
    ({"prompt_mode": 5}, "prompt_mode"), ({"prompt_mode": "all"}, "prompt_mode"),
    ({"multimask": "x"}, "multimask"), ({"max_failures": -1}, "max_failures"),
    ({"max_failures": True}, "max_failures"),
    ({"survey_slices": 10**9}, "survey_slices"), ({"review_slices": 10**30}, "review_slices"),
])
def test_bad_agent_options_are_invalid_input(options, name):
    with pytest.raises(InvalidInput, match=name):
        run(**options)


class BoxThenStop(msagent.Policy):
    """A policy without the ground truth: a box around the image's middle, then stop."""

    def act(self, episode):
        from msagent import protocol

        height, width = episode.image.shape[:2]
        if episode.steps:
            return msagent.Reply(protocol.stop_action("done").raw_text)
        box = msagent.BBox(width // 4, height // 4, 3 * width // 4, 3 * height // 4)
        return msagent.Reply(protocol.bbox_action(box, (height, width), "the tube").raw_text)


def test_the_survey_is_bounded_by_the_slice_count(monkeypatch):
    """Without a key slice or an expert, the survey looks at most every slice once:
    survey_slices=100,000 made np.linspace build 100,000 candidates (10**9: 7.45 GiB)."""
    from msagent.volume import agent

    sizes = []
    real = agent.np.linspace
    monkeypatch.setattr(agent.np, "linspace",
                        lambda *a, **k: (sizes.append(a[2] if len(a) > 2 else k.get("num")),
                                         real(*a, **k))[1])
    volume, _ = tube()
    result = msagent.segment_volume(volume, "tube", backbone=BrightBackbone(),
                                    policy=BoxThenStop(), survey_slices=100_000, window="200/110")
    assert result.trajectory.key_rule == "survey" and result.key_slice in range(4)
    assert sizes and max(sizes) <= 4

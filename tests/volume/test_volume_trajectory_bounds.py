"""VolumeTrajectory.from_json is total and bounded (issue 26, Also): every mask it decodes
(the result's and the episodes') counts against one voxel limit before any is decoded (a
1.8 kB file decoded 2 × the limit: a step mask and the result's, 3 × with an initial mask);
slice numbers outside the run, non-finite spacing, scores and timings are refused."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import msagent
from msagent.testing import BrightBackbone
from msagent.volume.trajectory import InvalidVolumeTrajectory, VolumeTrajectory


def tube(count=4, size=(20, 30)):
    volume = np.full((count, *size), 20.0) + np.arange(count)[:, None, None] * 2.0
    yy, xx = np.mgrid[:size[0], :size[1]]
    mask = np.stack([(yy - size[0] // 2) ** 2 + (xx - size[1] // 2) ** 2 <= (4 + z % 3) ** 2
                     for z in range(count)])
    volume[mask] = 200.0
    return volume, mask


@pytest.fixture(scope="module")
def run() -> dict:
    volume, mask = tube()
    result = msagent.segment_volume(volume, "tube", backbone=BrightBackbone(), policy="expert",
                                    ground_truth=mask, review_slices=1)
    return json.loads(result.trajectory.to_json())


def claim(run: dict, height: int, width: int) -> str:
    """A small file claiming one height × width slice: a result mask, and an episode whose
    step and initial mask are as large."""
    episode, trajectory = run["episodes"][0], run["episodes"][0]["trajectory"]
    rle = {"size": [height, width], "counts": [height * width]}
    step = {**trajectory["steps"][0], "mask": rle}
    return json.dumps({**run, "shape": [1, height, width], "key_slice": 0, "scores": {},
                       "masks": {"0": rle}, "episodes": [{**episode, "slice": 0, "trajectory": {
                           **trajectory, "image_size": [height, width], "steps": [step],
                           "initial": {"mask": rle, "source": "x"}}}]})


def test_all_decoded_masks_count_against_one_limit(run):
    limit = 2**22  # 4 Mi voxels: each mask of the claim alone is within it, together 3 ×
    text = claim(run, 1024, 4096)
    assert len(text) < 4000
    tracemalloc.start()
    try:
        with pytest.raises(InvalidVolumeTrajectory, match="over the limit"):
            VolumeTrajectory.from_json(text, max_voxels=limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit // 4  # refused before any mask was decoded (before: 3 × the limit)
    VolumeTrajectory.from_json(text, max_voxels=3 * 1024 * 4096)  # within the limit: read


@pytest.mark.parametrize("field, value", [
    ("key_slice", -1), ("key_slice", 4), ("key_slice", True), ("key_slice", 1.5),
    ("key_slice", "1"), ("spacing", [float("nan"), 1.0, 1.0]), ("spacing", [1.0, float("inf"), 1.0]),
    ("spacing", [0.0, 1.0, 1.0]), ("spacing", [-2.5, 1.0, 1.0]), ("spacing", ["1", 1.0, 1.0]),
    ("spacing", [True, 1.0, 1.0]), ("scores", {"0": float("nan")}), ("scores", {"0": float("inf")}),
    ("scores", {"0": "0.5"}), ("counts", {"encodes": -1}), ("counts", {"encodes": 1.5}),
    ("timings", {"total": float("nan")}), ("timings", {"total": "1"}),
])
def test_out_of_range_slices_and_non_finite_numbers_are_refused(run, field, value):
    with pytest.raises(InvalidVolumeTrajectory):
        VolumeTrajectory.from_json(json.dumps({**run, field: value}))


@pytest.mark.parametrize("change", [{"slice": 4}, {"slice": -1}, {"slice": True}, {"slice": 1.0},
                                    {"seeded": "yes"}, {"reason": ["x"]}, {"decision": 5}])
def test_an_episode_outside_the_run_is_refused(run, change):
    episodes = [{**run["episodes"][0], **change}, *run["episodes"][1:]]
    with pytest.raises(InvalidVolumeTrajectory):
        VolumeTrajectory.from_json(json.dumps({**run, "episodes": episodes}))


def test_a_run_still_reads_back_exactly(run):
    text = json.dumps(run)
    assert VolumeTrajectory.from_json(text).to_json() == text


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(st.sampled_from(["shape", "spacing", "key_slice", "masks", "scores", "counts",
                                      "timings", "episodes", "0", "trajectory", "steps", "mask",
                                      "size", "counts", "slice", "image_size", "initial", "meta"]),
                     min_size=1, max_size=4), value=_json)
def test_from_json_is_total(run, path, value):
    """Any field replaced by any JSON value: a run or InvalidVolumeTrajectory, nothing else."""
    data = json.loads(json.dumps(run))
    node = data
    for key in path[:-1]:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and node:
            node = node[0]
        else:
            break
    if isinstance(node, dict):
        node[path[-1]] = value
    elif isinstance(node, list) and node:
        node[0] = value
    try:
        VolumeTrajectory.from_json(json.dumps(data), max_voxels=10**6)
    except InvalidVolumeTrajectory:
        pass

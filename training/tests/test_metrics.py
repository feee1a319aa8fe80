"""The per-step metrics msagent adds (reward breakdown, groups with variance, episodes) and the
parser of verl's console step lines that the CPU GRPO test and the learning curve read."""

from __future__ import annotations

import pytest

from msagent_training.episode import CALLS, INVALID, IOUS, SCORES
from msagent_training.metrics import console_steps, episode_metrics, group_metrics


def test_groups_with_variance_counts_groups_whose_scores_differ():
    uids = ["a", "a", "b", "b", "c", "c"]
    metrics = group_metrics(uids, [0.0, 1.0, 0.5, 0.5, None, 0.2])
    assert metrics == {"reward/groups": 3.0, "reward/groups_with_variance": pytest.approx(1 / 3)}
    assert group_metrics([], []) == {}


def test_episode_metrics_from_the_agent_loops_record():
    records = [
        {CALLS: ["add_bbox", "stop_action"], IOUS: [0.6], SCORES: [0.9]},
        {CALLS: [INVALID], IOUS: [], SCORES: []},
        {CALLS: ["add_bbox", "add_point", INVALID], IOUS: [0.2, 0.4], SCORES: [0.5, 0.7]},
        None,  # a padding row
    ]
    metrics = episode_metrics(records)
    assert metrics["episode/valid_call_rate"] == pytest.approx(4 / 6)
    assert metrics["episode/with_valid_call"] == pytest.approx(2 / 3)
    assert metrics["episode/replies/mean"] == pytest.approx(2.0)
    assert metrics["episode/replies/max"] == 3.0
    assert metrics["episode/multi_turn"] == pytest.approx(2 / 3)
    assert metrics["episode/segmenter_calls"] == 3.0
    assert metrics["episode/final_iou/mean"] == pytest.approx((0.6 + 0.0 + 0.4) / 3)
    assert episode_metrics([None, {}]) == {}


def test_console_steps_reads_verls_step_lines():
    log = ("(TaskRunner pid=1) step:1 - actor/grad_norm:0.25 - num_turns/max:np.int32(3) - "
           "training/num_turns/mean:np.float64(2.5) - timing_s/step:12.5 - note:text\n"
           "noise step:x - a:1\n(TaskRunner pid=1) step:2 - critic/advantages/min:-1.5e-01\n")
    steps = console_steps(log)
    assert steps == {1: {"actor/grad_norm": 0.25, "num_turns/max": 3.0,
                         "training/num_turns/mean": 2.5, "timing_s/step": 12.5},
                     2: {"critic/advantages/min": -0.15}}

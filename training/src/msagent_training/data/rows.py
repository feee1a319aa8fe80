"""Dataset rows for verl, from msagent Cases and Trajectories.

The rows are msagent's own verl export (:mod:`msagent.export.verl`): the conversation is
exactly what msagent's inference shows a policy (:func:`msagent.protocol.build_messages`):
the system prompt with the tool schemas inside, the first user turn [image,
``first_user_text(target)``] and, after each executed action, a user turn [overlay,
``FOLLOW_UP_TEXT``], each image a ``<image>`` placeholder plus ``{"bytes": PNG}`` in
``images`` (``policy_image_size`` px, a multiple of 32, so SFT and RL expand every image to the
same number of vision tokens). RL rows carry ``agent_name: msagent`` (our agent loop) and
``extra_info.tools_kwargs`` with the original image and the ground truth for the tools.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from msagent.backbones.segmenter import image_key
from msagent.errors import InvalidInput
from msagent.export import check_size
from msagent.export import verl as export
from msagent.types import Case, Trajectory

AGENT_NAME = "msagent"
TOOL_NAMES = export.TOOL_NAMES


def sft_row(image: np.ndarray, trajectory: Trajectory, *, policy_image_size: int = 512,
            data_source: str = "msagent", key: str | None = None) -> dict[str, Any]:
    """One MultiTurnSFTDataset row (``messages``, ``images``, ``id``, ``data_source``) of a
    trajectory on its original H×W×3 uint8 ``image``. Rejected replies are left out, as in
    inference; the row ends with the trajectory's last valid reply."""
    return export.sft_row(trajectory, image, key=key or trajectory.case_id,
                          data_source=data_source, size=policy_image_size)


def rl_row(case: Case, index: int, *, policy_image_size: int = 512,
           data_source: str = "msagent") -> dict[str, Any]:
    """One RLHFDataset row of ``case`` (which needs a non-empty ground truth: the tools score
    every mask against it for the reward)."""
    check_size(policy_image_size)
    if case.ground_truth is None or not np.asarray(case.ground_truth).any():
        raise InvalidInput(f"case {case.id!r} has no (non-empty) ground truth; the RL reward "
                           "scores masks against it")
    return export.rl_row(index=index, case_id=case.id, target=case.target, image=case.image,
                         ground_truth=case.ground_truth, meta=case.meta or {},
                         image_sha256=image_key(case.image), data_source=data_source,
                         size=policy_image_size, agent_name=AGENT_NAME)


def tools_kwargs(case: Case) -> dict[str, Any]:
    """The ``tools_kwargs`` of ``case``'s RL row (what verl hands the tools)."""
    return rl_row(case, 0)["extra_info"]["tools_kwargs"]


def rl_schema():
    """Arrow schema of the RL rows."""
    return export.rl_schema(agent_name=True)


def sft_schema():
    """Arrow schema of the SFT rows."""
    return export.sft_schema()

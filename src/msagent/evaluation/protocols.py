"""One case under one evaluation protocol → an :class:`Outcome` (final mask and per-step curves).

- ``agent``: a policy drives the backbone through :class:`msagent.Agent` (Dice/IoU/NSD after
  every executed turn; turns; stop reason).
- ``noc`` (RITM): clicks only, no box. Each click is the standard corrective click
  (:func:`ritm_click`, which is :func:`msagent.clicker.next_click`: the interior maximum of
  the larger error region; RITM's tie rule, a tie goes to the false-positive region),
  decoded with all clicks so far and the previous low-res logits. IoU after each of up to
  ``max_clicks`` (20) clicks; NoC@85/90 is the first click reaching the threshold, 20 when
  never reached (:func:`msagent.metrics.noc`).
- ``cvpr`` (CVPR 2025 interactive challenge, 2-D form): a tight ground-truth box, then 5
  corrective clicks (:func:`cvpr_click`: the centre, by Euclidean distance transform, of the
  largest connected error component, components numbered in raster order as cc3d does;
  foreground if it lies in the ground truth), each decoded with the box, all clicks and the
  previous logits. DSC and NSD (2 mm — pixels when the case has no spacing) after each of
  the 6 steps; NSD counts 0 when DSC ≤ 0.2, as in the challenge. DSC_AUC/NSD_AUC: the raw
  trapezoid area over the 5 click steps (0–4), final DSC/NSD.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
from scipy import ndimage

from msagent import clicker, metrics
from msagent.agent import Agent
from msagent.agent.proposal import PROPOSAL, wants_proposal
from msagent.backbones.segmenter import Segmenter
from msagent.errors import InvalidInput
from msagent.policies.expert import mask_bbox
from msagent.types import Case, Point, Prompts, Trajectory

if TYPE_CHECKING:
    from msagent.volume.trajectory import VolumeTrajectory

NOC_THRESHOLDS = (0.85, 0.90)
CVPR_CLICKS = 5
CVPR_NSD_MIN_DICE = 0.2


@attrs.frozen(eq=False)
class Outcome:
    """What a protocol produced for one case. ``values`` holds the protocol's scalars
    (e.g. ``noc90``, ``dsc_auc``), ``curves`` its per-step series (``dice``, ``iou``, ``nsd``)."""

    mask: np.ndarray
    turns: int
    stop_reason: str = ""
    curves: Mapping[str, Sequence[float]] = attrs.field(factory=dict)
    values: Mapping[str, Any] = attrs.field(factory=dict)
    usage: Mapping[str, float] = attrs.field(factory=dict)
    trajectory: Trajectory | VolumeTrajectory | None = None


def ground_truth(case: Case) -> np.ndarray:
    """``case.ground_truth``, which every protocol scores against (:class:`InvalidInput`
    without one, as :func:`msagent.evaluation.units.checked_case` says)."""
    if case.ground_truth is None:
        raise InvalidInput("the case has no ground truth; evaluation needs one")
    return case.ground_truth


def case_spacing(case: Case) -> tuple[float, float]:
    """(row, column) pixel size from ``case.meta["spacing"]`` (mm), else (1, 1): pixels."""
    spacing = case.meta.get("spacing")
    if spacing is None:
        return (1.0, 1.0)
    values = [float(v) for v in (spacing if isinstance(spacing, (list, tuple)) else [spacing] * 2)]
    return (values[0], values[1] if len(values) > 1 else values[0])


def _final_metrics(mask: np.ndarray, gt: np.ndarray, spacing, tolerance: float) -> dict[str, float]:
    return {"dice": metrics.dice(mask, gt), "iou": metrics.iou(mask, gt),
            "nsd": metrics.nsd(mask, gt, tolerance, spacing)}


def agent_outcome(trajectory: Trajectory, gt: np.ndarray, spacing=(1.0, 1.0),
                  tolerance: float = 2.0, *, proposal: bool = False) -> Outcome:
    """Score a finished agent episode against the ground truth. A refining episode's curves
    start with its initial mask (turn 0), and ``values`` gain ``*_before``, ``dice_gain`` and
    ``initial_source``. ``proposal``: the episode asked the backbone for its proposal
    (``refine_from`` "proposal"); ``values`` add ``proposal_matched`` and ``proposal_score``,
    and when nothing matched the target the start was an empty mask: turn 0 scores 0
    (``dice_before`` 0), never a record without its "before"."""
    masks = [s.mask for s in trajectory.executed_steps if s.mask is not None]  # all: executed
    initial = trajectory.initial
    start = initial.mask if initial is not None else np.zeros_like(gt, dtype=bool) if proposal \
        else None
    if start is not None:
        masks.insert(0, start)
    curves = {"dice": [metrics.dice(m, gt) for m in masks],
              "iou": [metrics.iou(m, gt) for m in masks],
              "nsd": [metrics.nsd(m, gt, tolerance, spacing) for m in masks]}
    mask = trajectory.final_mask
    values: dict[str, Any] = _final_metrics(mask, gt, spacing, tolerance)
    if start is not None:
        source = initial.source if initial is not None else \
            f"{PROPOSAL}:{trajectory.meta.get('backbone') or 'backbone'}"
        values.update({f"{k}_before": curves[k][0] for k in ("dice", "iou", "nsd")},
                      dice_gain=values["dice"] - curves["dice"][0], initial_source=source)
    if proposal:
        values.update(proposal_matched=initial is not None,
                      proposal_score=None if initial is None else initial.score)
    values["invalid_replies"] = sum(1 for s in trajectory.steps if s.error is not None)
    return Outcome(mask=mask, turns=trajectory.turns, stop_reason=trajectory.stop_reason,
                   curves=curves, values=values, usage=trajectory.usage, trajectory=trajectory)


def check_answered(trajectory: Trajectory) -> None:
    """A policy that never answered (API down, model missing) left no mask: that case is an
    error (retried on resume, not averaged in), as :func:`msagent.segment` raises
    :class:`~msagent.errors.SegmentationFailed`. A policy that answered without a valid mask
    scores Dice 0 (counted in ``no_mask``): that is its result."""
    if trajectory.turns == 0 and trajectory.stop_reason == "policy_error":
        from msagent.errors import SegmentationFailed
        from msagent.types import failure_message

        raise SegmentationFailed(failure_message(trajectory), trajectory)


#: what the refine protocol starts an episode from: (mask, source), or
#: :data:`~msagent.agent.proposal.PROPOSAL` (the backbone's proposal for the target)
Initial = tuple[np.ndarray, str] | str | None


def _initial_arguments(initial: Initial) -> dict[str, Any]:
    """:meth:`msagent.Agent.run`'s ``initial_mask``/``initial_source`` for ``initial``."""
    if wants_proposal(initial):
        return {"initial_mask": PROPOSAL}
    mask, source = initial if isinstance(initial, tuple) else (None, "")
    return {"initial_mask": mask, "initial_source": source}


def run_agent(agent: Agent, case: Case, tolerance: float = 2.0, initial: Initial = None) -> Outcome:
    """One episode of ``agent`` on ``case`` (the ground truth scores it; experts also read it);
    ``initial``: (mask, source) to refine, or "proposal" (the ``refine`` protocol)."""
    gt = ground_truth(case)
    trajectory = agent.run(case.image, case.target, gt, case_id=case.id,
                           **_initial_arguments(initial))
    check_answered(trajectory)
    return agent_outcome(trajectory, gt, case_spacing(case), tolerance,
                         proposal=wants_proposal(initial))


async def arun_agent(agent: Agent, case: Case, tolerance: float = 2.0,
                     initial: Initial = None) -> Outcome:
    """Async :func:`run_agent` (:meth:`msagent.Agent.arun`): for API policies."""
    import asyncio

    gt = ground_truth(case)
    trajectory = await agent.arun(case.image, case.target, gt, case_id=case.id,
                                  **_initial_arguments(initial))
    check_answered(trajectory)
    return await asyncio.to_thread(agent_outcome, trajectory, gt, case_spacing(case), tolerance,
                                   proposal=wants_proposal(initial))


ritm_click = clicker.next_click  # one rule: RITM's click (a tie goes to the false positives)


def run_noc(segmenter: Segmenter, case: Case, max_clicks: int = 20,
            thresholds: Sequence[float] = NOC_THRESHOLDS, multimask: bool | None = None,
            stop_iou: float | None = None, tolerance: float = 2.0) -> Outcome:
    """The RITM click protocol on ``case``; see the module docstring."""
    gt = ground_truth(case)
    multimask = segmenter.multimask_default if multimask is None else multimask
    embedding = segmenter.encode(case.image)
    clicks: list[Point] = []
    mask, logits = np.zeros_like(gt), None
    ious: list[float] = []
    dices: list[float] = []
    stop = "max_clicks"
    while len(clicks) < max_clicks:
        click = ritm_click(gt, mask, clicks)
        if click is None:  # no error left (or only pixels clicked before)
            stop = "perfect" if not (mask != gt).any() else "no_click_left"
            break
        clicks.append(click)
        prediction = segmenter.decode(embedding, Prompts(points=tuple(clicks)), logits,
                                      multimask=multimask)
        mask, logits = prediction.mask, prediction.low_res_logits
        ious.append(metrics.iou(mask, gt))
        dices.append(metrics.dice(mask, gt))
        if stop_iou is not None and ious[-1] >= stop_iou:
            stop = "target_iou"
            break
    values = _final_metrics(mask, gt, case_spacing(case), tolerance)
    for threshold in thresholds:
        values[f"noc{round(threshold * 100)}"] = metrics.noc(ious, threshold, max_clicks)
    return Outcome(mask=mask, turns=len(clicks), stop_reason=stop,
                   curves={"iou": ious, "dice": dices}, values=values)


_EIGHT = np.ones((3, 3), dtype=bool)


def cvpr_click(gt: np.ndarray, pred: np.ndarray) -> Point | None:
    """The CVPR 2025 challenge's click: the centre of the largest connected error component
    (8-connected), i.e. its Euclidean-distance-transform maximum; positive if the pixel
    belongs to the ground truth. As the challenge's script: components are numbered in raster
    order (cc3d; here ``scipy.ndimage.label``), the first of equal size wins (``np.argmax``
    over the sizes), and ties of the maximum are drawn with seed 42 among the candidates in
    raster order."""
    gt, pred = clicker.as_masks(gt, pred)
    error = gt != pred
    if not error.any():
        return None
    labels, _ = ndimage.label(error, structure=_EIGHT)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    distance = clicker.inner_distance(labels == int(np.argmax(sizes)))
    candidates = np.argwhere(distance == distance.max())
    y, x = candidates[np.random.RandomState(42).choice(len(candidates))]
    return Point(int(x), int(y), bool(gt[y, x]))


def run_cvpr(segmenter: Segmenter, case: Case, clicks: int = CVPR_CLICKS,
             multimask: bool | None = None, tolerance: float = 2.0) -> Outcome:
    """The CVPR 2025 interactive protocol on ``case``; see the module docstring."""
    gt = ground_truth(case)
    spacing = case_spacing(case)
    multimask = segmenter.multimask_default if multimask is None else multimask
    embedding = segmenter.encode(case.image)
    prompts = Prompts(box=mask_bbox(gt))
    prediction = segmenter.decode(embedding, prompts, None, multimask=multimask)
    mask, logits = prediction.mask, prediction.low_res_logits
    dscs, nsds, ious = [], [], []
    for step in range(clicks + 1):
        if step > 0:
            click = cvpr_click(gt, mask)
            if click is not None:  # a perfect mask gets no click and stays as it is
                prompts = prompts.add(click)
                prediction = segmenter.decode(embedding, prompts, logits, multimask=multimask)
                mask, logits = prediction.mask, prediction.low_res_logits
        dsc = metrics.dice(mask, gt)
        dscs.append(dsc)
        ious.append(metrics.iou(mask, gt))
        nsds.append(metrics.nsd(mask, gt, tolerance, spacing) if dsc > CVPR_NSD_MIN_DICE else 0.0)
    values = {"dice": dscs[-1], "iou": ious[-1], "nsd": nsds[-1],
              "dsc_auc": metrics.curve_auc(dscs[-clicks:], normalize=False),
              "nsd_auc": metrics.curve_auc(nsds[-clicks:], normalize=False)}
    return Outcome(mask=mask, turns=len(prompts.points) + 1, stop_reason="protocol",
                   curves={"dice": dscs, "nsd": nsds, "iou": ious}, values=values)

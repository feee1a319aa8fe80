"""Protocols on a whole volume: a 3-D agent run, and the CVPR 2025 challenge in its 3-D form.

Both score the 3-D result against the ground truth with the voxel spacing (Dice, IoU, NSD at
``tolerance`` mm: :func:`msagent.metrics.volume_metrics`) and return an
:class:`~msagent.evaluation.protocols.Outcome` whose ``mask`` is the slices × H × W result
in display order.

- ``agent``: :class:`msagent.VolumeAgent` (key slice, propagation, review); curves after the
  key episode's propagation and after each correction; ``trajectory`` is the
  :class:`~msagent.VolumeTrajectory`.
- ``cvpr`` (3-D): as ``CVPR25_iter_eval.py`` on a volume. Step 0 is the challenge's box
  prompt (:func:`msagent.clicker.cvpr_initial_box_3d`: a box on the key slice ``z_mid`` and
  the slice range): the box is decoded on ``z_mid`` and propagated, within the slice range
  (the box's extent is part of the prompt). Then ``clicks`` (5) corrective clicks
  (:func:`msagent.clicker.cvpr_click_3d`: the centre of the largest 26-connected 3-D error
  component, the challenge's tie rule): each is added to the prompts of its slice (the
  slice's box, or its propagated mask's box, plus its clicks so far; the slice's current
  logits as the mask input) and decoded; under ``correction="local"`` (the default) the
  slice keeps only the parts of that decode's change that reach the click
  (:func:`msagent.volume.propagation.click_correction`; a decode that changes nothing there,
  or, under generic propagation, one whose predicted score falls more than 0.1 below the
  slice's, is no correction), and the slice is made a seed and re-propagated by the
  propagator's correction rule (:mod:`msagent.volume.propagation`); ``"nearest"``: the
  whole decode is the seed and its walks replace the slices up to the midpoints with the
  other seeds. DSC and NSD after each of the 6 steps, NSD 0 when DSC ≤ 0.2; DSC_AUC/NSD_AUC
  the raw trapezoid over the 5 click steps; final DSC/NSD.
"""

from __future__ import annotations

import math

import numpy as np

from msagent import clicker, metrics
from msagent.agent.refine import mask_box
from msagent.backbones.propagation import Seed, SliceStack
from msagent.backbones.segmenter import Segmenter
from msagent.evaluation.protocols import CVPR_CLICKS, CVPR_NSD_MIN_DICE, Outcome
from msagent.types import Prompts
from msagent.volume.agent import VolumeAgent
from msagent.volume.embeddings import EmbeddingStore
from msagent.volume.propagation import (
    CORRECTIONS,
    METHODS,
    SCORE_DROP,
    GenericPropagator,
    click_correction,
    propagator_for,
)


def run_volume_agent(agent: VolumeAgent, stack: SliceStack, target: str, gt: np.ndarray, *,
                     case_id: str = "", tolerance: float = 2.0) -> Outcome:
    """A 3-D agent run on ``stack`` scored against ``gt`` (slices × H × W, display order)."""
    trajectory = agent.run(stack, target, gt, case_id=case_id)
    return score_volume_run(trajectory, stack, gt, tolerance)


def score_volume_run(trajectory, stack: SliceStack, gt: np.ndarray,
                     tolerance: float = 2.0) -> Outcome:
    """An :class:`Outcome` for a finished 3-D run (its final masks against ``gt``)."""
    mask = trajectory.final_masks()
    values = metrics.volume_metrics(mask, gt, stack.spacing, tolerance)
    values["key_slice"] = trajectory.key_slice
    values["reviews"] = sum(1 for e in trajectory.episodes if e.role == "review")
    values.update({f"count_{k}": v for k, v in trajectory.counts.items()})
    turns = int(trajectory.counts.get("turns", 0))
    return Outcome(mask=mask, turns=turns, stop_reason="volume", values=values,
                   curves={"dice": [values["dice"]], "nsd": [values["nsd"]], "iou": [values["iou"]]},
                   trajectory=trajectory)


def run_cvpr_3d(segmenter: Segmenter, stack: SliceStack, gt: np.ndarray, *,
                clicks: int = CVPR_CLICKS, propagation: str = "auto",
                multimask: bool | None = None, tolerance: float = 2.0,
                correction: str = "local") -> Outcome:
    """The CVPR 2025 interactive protocol on a volume; see the module docstring."""
    if propagation not in METHODS:
        raise ValueError(f"unknown propagation {propagation!r}")
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction rule {correction!r}")
    gt = np.asarray(gt, bool)
    box = clicker.cvpr_initial_box_3d(gt)
    store = EmbeddingStore(segmenter, stack)
    extent = (box.z_min, box.z_max)
    propagator = propagator_for(segmenter, stack, propagation, store=store, multimask=multimask,
                                correction=correction)
    if isinstance(propagator, GenericPropagator):  # a native one is limited afterwards
        propagator.extent = extent
    slice_prompts: dict[int, Prompts] = {}
    try:
        first = segmenter.decode(store[box.z_mid], Prompts(box=box.box), None, multimask=multimask)
        slice_prompts[box.z_mid] = Prompts(box=box.box)
        propagator.add_seed(box.z_mid, Seed(first.mask, slice_prompts[box.z_mid], first.low_res_logits))
        mask = _within(propagator, extent)
        dscs, nsds, ious = [], [], []
        for step in range(clicks + 1):
            if step > 0:
                click = clicker.cvpr_click_3d(gt, mask)
                if click is not None:  # a perfect result gets no click and stays as it is
                    _correct(segmenter, store, propagator, slice_prompts, click, multimask,
                             correction)
                    mask = _within(propagator, extent)
            scores = metrics.volume_metrics(mask, gt, stack.spacing, tolerance,
                                            nsd_min_dice=CVPR_NSD_MIN_DICE)
            dscs.append(scores["dice"])
            ious.append(scores["iou"])
            nsds.append(scores["nsd"])
        encodes = store.encodes + (propagator.encodes if propagator.method != "generic" else 0)
        values = {"dice": dscs[-1], "iou": ious[-1], "nsd": nsds[-1],
                  "dsc_auc": metrics.curve_auc(dscs[-clicks:], normalize=False),
                  "nsd_auc": metrics.curve_auc(nsds[-clicks:], normalize=False),
                  "key_slice": box.z_mid, "propagation": propagator.method,
                  "count_encodes": encodes, "count_propagation_decodes": propagator.decodes}
    finally:
        propagator.close()
        store.close()
    turns = 1 + sum(len(p.points) for p in slice_prompts.values())
    return Outcome(mask=mask, turns=turns, stop_reason="protocol",
                   curves={"dice": dscs, "nsd": nsds, "iou": ious}, values=values)


def _within(propagator, extent: tuple[int, int]) -> np.ndarray:
    """The propagated result, limited to the box prompt's slice range."""
    propagator.propagate()
    mask = propagator.masks()
    mask[:extent[0]] = False
    mask[extent[1] + 1:] = False
    return mask


def _correct(segmenter: Segmenter, store: EmbeddingStore, propagator, slice_prompts: dict,
             click: clicker.VoxelClick, multimask: bool | None, correction: str) -> None:
    """Add ``click`` to its slice's prompts, decode there, seed and (at the next
    propagate) propagate the corrected slice (see the module docstring)."""
    index = click.z
    current = propagator.results.get(index)
    prompts = slice_prompts.get(index)
    if prompts is None:  # a slice propagation reached: its mask's box is its prompt
        prompts = Prompts(box=mask_box(current.mask)) if current is not None else Prompts()
    prompts = prompts.add(click.point)
    logits = None if current is None else current.low_res_logits
    if segmenter.input_geometry(store.stack.image_size) is None:
        logits = None
    prediction = segmenter.decode(store[index], prompts, logits, multimask=multimask)
    slice_prompts[index] = prompts
    if correction == "local":
        generic = isinstance(propagator, GenericPropagator)
        # a native propagator's scores are its own (SAM2's memory, SAM 3's presence), not
        # comparable to a 2-D decode's: no score refusal there
        kept = click_correction(segmenter, current, prediction, (click.x, click.y),
                                propagator.reach if generic else 0,
                                SCORE_DROP if generic else math.inf)
        if kept is None:
            return  # the decode changed nothing where the click is: no correction
        prediction = kept
    propagator.add_seed(index, Seed(prediction.mask, prompts, prediction.low_res_logits))

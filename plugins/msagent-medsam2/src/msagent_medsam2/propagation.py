"""Native 3-D propagation for ``medsam2`` and ``sam2``: SAM2's video memory over a slice stack.

The slices of a :class:`~msagent.backbones.SliceStack` are the frames of a video, run through
sam2's own ``SAM2VideoPredictor`` the way MedSAM2's 3-D inference runs it
(``medsam2_infer_CT_lesion_npz_recist.py``): each seed is a conditioning frame given as its
mask (``add_new_mask``); a *forward* inference state tracks from the first seed to the last
slice and a separate *backward* state from the first seed to slice 0 (MedSAM2 resets the state
between the two passes, so the backward pass never sees the forward pass's memory). A later
seed is added to both existing states and both passes run again (SAM2's way of taking a
correction: the new conditioning frame joins the memory of every frame).

Frames are preprocessed as sam2's frame loader (``load_video_frames``) does: PIL resize to
S×S, /255, ImageNet mean/std, so results equal ``SAM2VideoPredictor`` run on a folder of the
same frames. Each slice is encoded once per propagator (sam2 keeps one frame's features; we
keep all, see :class:`FrameFeatures`).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from PIL import Image
from sam2.sam2_video_predictor import SAM2VideoPredictor

from msagent.backbones import (
    LOW_RES,
    MaskPrediction,
    Propagator,
    Seed,
    SliceStack,
    check_prev_logits,
)

from .decoding import LOGIT_CLAMP, resize_logits

OBJ_ID = 1  # the one object a propagator tracks
IMG_MEAN = (0.485, 0.456, 0.406)  # load_video_frames' defaults
IMG_STD = (0.229, 0.224, 0.225)
#: frames whose features stay on the model's device (older ones move to CPU memory)
DEVICE_FRAMES = 64
SEED_MODES = ("mask", "prompts")
_FRAMES = "msagent_frames"  # the inference-state keys we add
_SCORES = "msagent_scores"
_IOUS = threading.local()  # the predicted IoUs of this thread's latest SAM-head run


def video_frame(image: np.ndarray, size: int) -> torch.Tensor:
    """An H×W×3 uint8 slice as ``load_video_frames`` makes a JPEG frame: 3×S×S float32, resized
    with PIL (its default filter), scaled to [0, 1] and normalised by ImageNet mean/std."""
    resized = np.array(Image.fromarray(image).resize((size, size)))
    frame = torch.from_numpy(resized / 255.0).permute(2, 0, 1).float()
    mean = torch.tensor(IMG_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMG_STD, dtype=torch.float32)[:, None, None]
    return (frame - mean) / std


class FrameFeatures:
    """The image-encoder output of each slice, computed the first time a slice is needed and
    kept until :meth:`clear` (``encodes`` counts the encoder runs, ``decodes`` the tracking
    steps of the video states that read it).

    Memory policy: the ``device_frames`` most recently used slices keep their features on the
    model's device; older ones move to CPU memory and come back when used again (a tracking
    step needs only the current slice's features; other slices enter as the video state's
    small memory features). Per slice that is the three FPN levels, 32×(S/4)² + 64×(S/8)² +
    256×(S/16)² values (≈ 17 MB at S = 1024, 4 MB at 512, in float32); the position encodings
    depend on the feature size only, so one copy serves every slice. Also a sequence of the
    preprocessed frames (``inference_state["images"]`` upstream), made on demand.
    """

    def __init__(self, model: SAM2VideoPredictor, stack: SliceStack,
                 device_frames: int = DEVICE_FRAMES) -> None:
        self.model = model
        self.stack = stack
        self.device_frames = max(1, int(device_frames))
        self.encodes = 0
        self.decodes = 0
        # one entry per slice of this stack (bounded by it, so not an LRU that drops): the
        # order only decides which device_frames stay on the accelerator (least recent first)
        self._fpn: OrderedDict[int, list[torch.Tensor]] = OrderedDict()
        self._pos: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.stack.count

    def __getitem__(self, index: int) -> torch.Tensor:
        return video_frame(self.stack.image(index), self.model.image_size)

    def backbone_out(self, index: int) -> dict[str, list[torch.Tensor]]:
        """``forward_image``'s output for slice ``index`` (1×C×h×w maps on the model's device)."""
        device = self.model.device
        if index in self._fpn:
            self._fpn.move_to_end(index)
            self._fpn[index] = [f.to(device) for f in self._fpn[index]]
        else:
            out = self.model.forward_image(self[index].to(device)[None])
            self.encodes += 1
            self._fpn[index] = list(out["backbone_fpn"])
            if self._pos is None:
                self._pos = list(out["vision_pos_enc"])
        self._offload(device)
        return {"backbone_fpn": list(self._fpn[index]), "vision_pos_enc": list(self._pos)}

    def _offload(self, device: torch.device) -> None:
        if device.type == "cpu":
            return
        on_device = [i for i, fpn in self._fpn.items() if fpn[0].device == device]
        for index in on_device[:max(0, len(on_device) - self.device_frames)]:
            self._fpn[index] = [f.to("cpu") for f in self._fpn[index]]

    def clear(self) -> None:
        self._fpn.clear()
        self._pos = None


class StackVideoPredictor(SAM2VideoPredictor):
    """sam2's ``SAM2VideoPredictor``, able to run on slices held in memory (the model class of
    the ``medsam2`` and ``sam2`` backbones; see :mod:`msagent_medsam2.model`).

    :meth:`init_stack_state` builds the inference state ``init_state`` builds, over a
    :class:`FrameFeatures` store instead of a folder of JPEGs. For such a state,
    ``_get_image_feature`` reads the store (sam2 caches one frame and re-encodes the others);
    ``_run_single_frame_inference`` counts the tracking steps and records each frame's
    predicted IoU. Nothing else is overridden, no result changes, and a state made by
    ``init_state`` runs exactly as upstream.
    """

    @torch.inference_mode()
    def init_stack_state(self, frames: FrameFeatures, offload_state_to_cpu: bool = False) -> dict:
        """``init_state`` for the slices of ``frames.stack`` (no warm-up encode of slice 0)."""
        height, width = frames.stack.image_size
        device = self.device
        return {
            "images": frames, "num_frames": len(frames), "offload_video_to_cpu": False,
            "offload_state_to_cpu": offload_state_to_cpu, "video_height": height,
            "video_width": width, "device": device,
            "storage_device": torch.device("cpu") if offload_state_to_cpu else device,
            "point_inputs_per_obj": {}, "mask_inputs_per_obj": {}, "cached_features": {},
            "constants": {}, "obj_id_to_idx": OrderedDict(), "obj_idx_to_id": OrderedDict(),
            "obj_ids": [], "output_dict_per_obj": {}, "temp_output_dict_per_obj": {},
            "frames_tracked_per_obj": {},
            _FRAMES: frames, _SCORES: {},
        }

    def _get_image_feature(self, inference_state, frame_idx, batch_size):
        frames = inference_state.get(_FRAMES)
        if frames is None:
            return super()._get_image_feature(inference_state, frame_idx, batch_size)
        out = frames.backbone_out(frame_idx)
        expanded = {key: [x.expand(batch_size, -1, -1, -1) for x in maps]
                    for key, maps in out.items()}
        # upstream puts the frame first; every caller discards it, so it is not kept
        return (None,) + self._prepare_backbone_features(expanded)

    def _run_single_frame_inference(self, inference_state, output_dict, frame_idx, batch_size,
                                    is_init_cond_frame, point_inputs, mask_inputs, reverse,
                                    run_mem_encoder, prev_sam_mask_logits=None):
        _IOUS.value = None
        result = super()._run_single_frame_inference(
            inference_state=inference_state, output_dict=output_dict, frame_idx=frame_idx,
            batch_size=batch_size, is_init_cond_frame=is_init_cond_frame,
            point_inputs=point_inputs, mask_inputs=mask_inputs, reverse=reverse,
            run_mem_encoder=run_mem_encoder, prev_sam_mask_logits=prev_sam_mask_logits)
        frames = inference_state.get(_FRAMES)
        if frames is not None:
            frames.decodes += 1
            # a mask input is taken as the output, with SAM2's dummy IoU of 1
            ious = None if mask_inputs is not None else _IOUS.value
            inference_state[_SCORES][frame_idx] = 1.0 if ious is None \
                else float(ious.float().max(dim=-1).values[0])
        return result

    def _forward_sam_heads(self, *args, **kwargs):
        outputs = super()._forward_sam_heads(*args, **kwargs)
        _IOUS.value = outputs[2]
        return outputs


class Sam2VideoPropagator(Propagator):
    """One target through a :class:`~msagent.backbones.SliceStack` with SAM2's video memory
    (see the module docstring), for a ``medsam2`` or ``sam2`` segmenter.

    ``seed_with``: ``"mask"`` (default) gives each seed as its mask (``add_new_mask``), as
    MedSAM2's CT-lesion inference does after making the key slice's mask from its prompt — and
    a seed that came out of an agent's refinement episode is its mask, whatever prompts made
    it; ``"prompts"`` gives the seed's box and clicks (``add_new_points_or_box``, as MedSAM2's
    ``medsam2_infer_3D_CT.py`` does with its box), falling back to the mask where a seed has
    none. ``device_frames``: see :class:`FrameFeatures`. ``offload_state_to_cpu``: keep the
    video memory on the CPU (sam2's ``init_state`` option).

    Results: a seed's slice holds the seed's own mask (its logits, else the conditioning
    frame's); every other slice holds the tracked mask, the 256×256 low-res logits (the
    model's S/4 logits clamped to ±32 and resized as the image path does) and the predicted
    IoU; slices whose mask is empty are absent. Every propagation re-decodes every slice (a
    new conditioning frame changes every frame's memory); a call with no new seed does
    nothing.

    It calls :meth:`~msagent.backbones.Propagator.checkpoint` after each tracked frame, so
    :meth:`~msagent.backbones.Propagator.propagate_until` stops it between frames (then its
    video states are partial: the caller closes it and starts a new one).
    """

    method = "native"
    bool_seed_masks = True

    def __init__(self, segmenter: Any, stack: SliceStack, *, seed_with: str = "mask",
                 device_frames: int = DEVICE_FRAMES, offload_state_to_cpu: bool = False) -> None:
        super().__init__(stack)
        if seed_with not in SEED_MODES:
            raise ValueError(f"seed_with must be one of {', '.join(SEED_MODES)}, not "
                             f"{seed_with!r}")
        self.segmenter = segmenter
        self.model: StackVideoPredictor = segmenter.model
        self.seed_with = seed_with
        self.offload_state_to_cpu = offload_state_to_cpu
        self._frames = FrameFeatures(self.model, stack, device_frames)
        self._states: dict[bool, dict] = {}  # reverse → inference state
        self._added: dict[int, Seed] = {}  # the seeds the states hold


    def propagate(self) -> dict[int, MaskPrediction]:
        pending = sorted(i for i, seed in self.seeds.items() if self._added.get(i) is not seed)
        if not pending:
            return self.results
        tracked: dict[int, MaskPrediction] = {}
        with torch.inference_mode(), self.segmenter._autocast():
            for reverse in (False, True):
                state = self._state(reverse)
                for index in pending:
                    self._condition(state, index, self.seeds[index])
                for index, _, masks in self.model.propagate_in_video(state, reverse=reverse):
                    self.checkpoint()  # between frames: propagate_until may stop here
                    tracked[index] = self._prediction(state, index, masks)
        self._added.update((i, self.seeds[i]) for i in pending)
        for index, seed in self.seeds.items():
            tracked[index] = self._seed_result(index, seed, tracked.get(index))
        self.results = {i: p for i, p in sorted(tracked.items()) if p.mask.any()}
        self.encodes, self.decodes = self._frames.encodes, self._frames.decodes
        return self.results

    def close(self) -> None:
        """Drop the video states and the slices' features (a later :meth:`propagate` starts
        over, encoding again)."""
        self._states.clear()
        self._frames.clear()
        self._added.clear()

    # -- helpers ------------------------------------------------------------------
    def _state(self, reverse: bool) -> dict:
        if reverse not in self._states:
            self._states[reverse] = self.model.init_stack_state(self._frames,
                                                                self.offload_state_to_cpu)
        return self._states[reverse]

    def _condition(self, state: dict, index: int, seed: Seed) -> None:
        """Make slice ``index`` a conditioning frame of ``state`` (the seed rule above)."""
        prompts = seed.prompts
        if self.seed_with == "mask" or prompts.empty:
            self.model.add_new_mask(state, index, OBJ_ID, seed.mask)
            return
        points = labels = None
        if prompts.points:
            points = np.array([[p.x, p.y] for p in prompts.points], np.float32)
            labels = np.array([p.label for p in prompts.points], np.int32)
        box = None if prompts.box is None else np.array(prompts.box.as_tuple(), np.float32)
        self.model.add_new_points_or_box(state, index, OBJ_ID, points=points, labels=labels,
                                         box=box)

    def _prediction(self, state: dict, index: int, video_masks: torch.Tensor) -> MaskPrediction:
        """Slice ``index``'s result from the yielded H×W logits and the state's S/4 logits."""
        mask = (video_masks[0, 0] > 0).cpu().numpy()
        return MaskPrediction(mask=mask, low_res_logits=_low_res(state, index),
                              score=state[_SCORES].get(index, math.nan))

    def _seed_result(self, index: int, seed: Seed,
                     tracked: MaskPrediction | None) -> MaskPrediction:
        logits = check_prev_logits(seed.logits) if seed.logits is not None else \
            _low_res(self._states[False], index)
        score = tracked.score if tracked is not None else math.nan
        return MaskPrediction(mask=seed.mask.copy(), low_res_logits=logits, score=score)


def _low_res(state: dict, index: int) -> np.ndarray:
    """The S/4 logits the state holds for slice ``index`` as 256×256 float32 (clamped to ±32,
    widened by repetition at 512 px, as :mod:`msagent_medsam2.decoding` carries them)."""
    outputs = state["output_dict_per_obj"][0]
    out = outputs["cond_frame_outputs"].get(index) or outputs["non_cond_frame_outputs"][index]
    logits = out["pred_masks"].float().clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
    return resize_logits(logits, LOW_RES)[0, 0].cpu().numpy().astype(np.float32)

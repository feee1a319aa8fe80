"""Native 3-D propagation for ``sam3``: ``Sam3TrackerVideoModel``'s memory over a slice stack.

The slices of a :class:`~msagent.backbones.SliceStack` are the frames of a video, run through
transformers' ``Sam3TrackerVideoModel`` the documented way: each seed is given to the
inference session as its mask (``Sam3TrackerVideoProcessor.add_inputs_to_inference_session(
input_masks=...)``), the model runs on the seed's frame, then ``propagate_in_video_iterator``
tracks forward from the first seed to the last slice and backward from the first seed to
slice 0, in the same session (as transformers' SAM 3 tracker examples do). Masks are
``post_process_masks``' (the frame's logits upscaled bilinearly, > 0).

A seed added later starts a new session holding every seed as a conditioning frame (a seed on
an already tracked slice would otherwise be taken as a correction of that slice, not as a
fixed frame), and both passes run again; the slices' features are kept, so nothing is encoded
again. Frames are preprocessed as the image path does (the official image and video
processors give identical pixels: stretch to S×S, mean = std = 0.5), so each slice is encoded
once, by the segmenter. In a 3-D run the frames come from the run's embedding store (the
embeddings the key and review episodes and the key-slice proposals use), so a slice the agent
already encoded is not encoded again; alone, the propagator encodes through the segmenter's
cache.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
    Sam3TrackerVideoInferenceCache,
    Sam3TrackerVideoInferenceSession,
)

from msagent.backbones import MaskPrediction, Propagator, Seed, SliceStack, check_prev_logits

from .segmenter import resize_logits, upscale_masks

OBJ_ID = 1  # the one object a propagator tracks


class StackFeatures(Sam3TrackerVideoInferenceCache):
    """The session's vision-feature cache, answered from the slices' encodings: a slice is
    encoded by the segmenter the first time the tracker asks for it (``encode`` goes through
    the segmenter's embedding cache) and kept for the propagator's life."""

    def __init__(self, propagator: Sam3VideoPropagator, device: torch.device) -> None:
        super().__init__(inference_device=device, inference_state_device=device,
                         max_vision_features_cache_size=1)
        self.propagator = propagator

    def cache_vision_features(self, frame_idx: int, features: dict) -> None:
        """Never called: every frame's features come from :meth:`get_vision_features`."""

    def get_vision_features(self, frame_idx: int) -> dict:
        return self.propagator.frame_features(frame_idx)


class StackSession(Sam3TrackerVideoInferenceSession):
    """An inference session over a slice stack whose frames are never decoded as pixels by
    the tracker (their features come from :class:`StackFeatures`)."""

    def __init__(self, propagator: Sam3VideoPropagator, device: torch.device) -> None:
        height, width = propagator.stack.image_size
        super().__init__(video=None, video_height=height, video_width=width,
                         inference_device=device, inference_state_device=device,
                         video_storage_device=device, dtype=torch.float32)
        self.cache = StackFeatures(propagator, device)
        self._count = propagator.stack.count

    @property
    def num_frames(self) -> int:
        return self._count

    def get_frame(self, frame_idx: int) -> torch.Tensor:
        raise RuntimeError("slice features come from the propagator, not from pixels")


class Sam3VideoPropagator(Propagator):
    """One target through a :class:`~msagent.backbones.SliceStack` with SAM 3's tracker memory
    (see the module docstring), for a ``sam3`` segmenter.

    Results: a seed's slice holds the seed's own mask (its logits, else the conditioning
    frame's); every other slice holds the tracked mask, the 256×256 low-res logits (the
    frame's S/3.5 logits resized) and, as score, the tracker's object-presence probability
    (sigmoid of its object score; the video tracker predicts no IoU per frame). Slices whose
    mask is empty are absent. ``encodes`` counts the slices this propagator had encoded (a
    slice already in the segmenter's cache costs none); in a 3-D run the frames come from the
    run's embedding store instead (:attr:`embeddings`, set by ``propagator_for``), which
    counts them, so each slice is encoded once per run. ``decodes`` counts the tracking steps.
    """

    method = "native"
    bool_seed_masks = True
    #: its frames are the segmenter's own encodes: a 3-D run's store serves them
    shares_embeddings = True

    def __init__(self, segmenter: Any, stack: SliceStack) -> None:
        super().__init__(stack)
        from transformers import Sam3TrackerVideoProcessor
        from transformers.models.sam2_video.video_processing_sam2_video import (
            Sam2VideoVideoProcessor,
        )

        self.segmenter = segmenter
        self.model = segmenter.tracker
        size = {"height": segmenter.image_size, "width": segmenter.image_size}
        self.processor = Sam3TrackerVideoProcessor(
            segmenter.image_processor,
            Sam2VideoVideoProcessor(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3))
        self._features: dict[int, tuple[torch.Tensor, ...]] = {}
        self._added: dict[int, Seed] = {}


    def frame_features(self, index: int) -> dict:
        """Slice ``index``'s tracker features (encoded on first use, then kept)."""
        if index not in self._features:
            if self.embeddings is not None:  # the 3-D run's store: it counts the encodes
                embedding = self.embeddings(index)
            else:
                before = self.segmenter.encodes
                embedding = self.segmenter.encode(self.stack.image(index))
                self.encodes += self.segmenter.encodes - before
            self._features[index] = embedding.features.tracker
        return {"vision_feats": list(self._features[index]),
                "vision_pos_embeds": list(self.segmenter.tracker_positions())}

    def propagate(self) -> dict[int, MaskPrediction]:
        if all(self._added.get(i) is seed for i, seed in self.seeds.items()):
            return self.results
        session = StackSession(self, self.segmenter.device)
        tracked: dict[int, MaskPrediction] = {}
        first = min(self.seeds)
        with torch.inference_mode(), self.segmenter._autocast():
            for index in sorted(self.seeds):
                self.processor.add_inputs_to_inference_session(
                    session, frame_idx=index, obj_ids=OBJ_ID, input_masks=self.seeds[index].mask)
                self.model(inference_session=session, frame_idx=index)
                self.decodes += 1
            for reverse in (False, True):
                for output in self.model.propagate_in_video_iterator(
                        session, start_frame_idx=first, reverse=reverse):
                    self.checkpoint()  # between frames: propagate_until may stop here
                    self.decodes += 1
                    tracked[output.frame_idx] = self._prediction(output)
        self._added = dict(self.seeds)
        for index, seed in self.seeds.items():
            tracked[index] = self._seed_result(index, seed, tracked.get(index))
        self.results = {i: p for i, p in sorted(tracked.items()) if p.mask.any()}
        return self.results

    def close(self) -> None:
        """Drop the slices' features (a later :meth:`propagate` starts over)."""
        self._features.clear()
        self._added.clear()

    # -- helpers ----------------------------------------------------------------------
    def _prediction(self, output) -> MaskPrediction:
        logits = output.pred_masks[:, 0].float()  # 1 × h × w, the object's frame logits
        score = float(torch.sigmoid(output.object_score_logits.float().reshape(-1)[0]))
        return MaskPrediction(mask=upscale_masks(logits, self.stack.image_size)[0],
                              low_res_logits=resize_logits(logits)[0].cpu().numpy(),
                              score=score)

    def _seed_result(self, index: int, seed: Seed,
                     tracked: MaskPrediction | None) -> MaskPrediction:
        logits = check_prev_logits(seed.logits) if seed.logits is not None else \
            (tracked.low_res_logits if tracked is not None
             else np.full((256, 256), -10.0, np.float32))
        score = tracked.score if tracked is not None else math.nan
        return MaskPrediction(mask=seed.mask.copy(), low_res_logits=logits, score=score)

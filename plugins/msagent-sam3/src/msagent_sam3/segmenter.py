"""SAM 3 as an msagent Segmenter, on transformers' implementation.

One checkpoint (``Sam3VideoModel``'s layout, as ``facebook/sam3`` is published) holds SAM 3's
three parts: the *detector* (``Sam3Model``: concept prompts, every matching instance), the
*tracker* (``Sam3TrackerVideoModel``: boxes, clicks, mask input, video memory) and the
tracker's own FPN neck. Both heads read one vision backbone (the detector's ViT), so
:meth:`Sam3Segmenter.encode_image` runs that ViT once per image and keeps its output plus the
tracker's feature maps; the detector's neck runs when a proposal needs it.

- :meth:`~Sam3Segmenter.decode_prompts` runs the tracker head exactly as
  ``Sam3TrackerModel.forward`` does given image embeddings (prompts scaled per axis to the
  S×S input as ``Sam3TrackerProcessor`` does; masks upscaled as its ``post_process_masks``);
- :meth:`~Sam3Segmenter.propose_masks` runs ``Sam3Model.forward`` on the kept features and a
  tokenised concept, post-processed by ``Sam3Processor.post_process_instance_segmentation``;
- :meth:`~Sam3Segmenter.native_propagator` carries a target through a volume with
  ``Sam3TrackerVideoModel`` (:mod:`msagent_sam3.propagation`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from msagent.backbones import (
    LOW_RES,
    BoundedLRU,
    Embedding,
    InputGeometry,
    MaskPrediction,
    Prompts,
    Propagator,
    Segmenter,
    SliceStack,
)
from msagent.backbones.sam import resolve_device, resolve_dtype
from msagent.errors import SegmenterError, WeightsNotFound

from .weights import HINT, load_model, resolve_checkpoint

log = logging.getLogger(__name__)

#: tokens SAM 3's text encoder reads (``Sam3Processor`` pads every text to 32)
TEXT_TOKENS = 32


@attrs.frozen(eq=False)
class Sam3Features:
    """One image, encoded once. ``vision``: the ViT's last hidden state, 1 × (S/14)² × C (what
    the detector's neck reads when a proposal is asked); ``tracker``: the tracker's three FPN
    levels as ``Sam3TrackerVideoModel.get_image_features`` returns them (HW × 1 × C, levels 0
    and 1 already through the mask decoder's ``conv_s0``/``conv_s1``)."""

    vision: torch.Tensor
    tracker: tuple[torch.Tensor, ...]


def resize_logits(logits: torch.Tensor, size: int = LOW_RES) -> torch.Tensor:
    """N × h × w logits → N × size × size (bilinear, antialiased, as the tracker itself resizes a
    mask input); the tracker's and detector's S/3.5 logits (288 at 1008 px) enter msagent's
    256×256 contract this way and the tracker resizes them back when they come in."""
    if logits.shape[-2:] == (size, size):
        return logits.float()
    return F.interpolate(logits[:, None].float(), size=(size, size), mode="bilinear",
                         align_corners=False, antialias=True)[:, 0]


def upscale_masks(logits: torch.Tensor, image_size: tuple[int, int]) -> np.ndarray:
    """N × h × w logits → N × H × W bool (``post_process_masks``: bilinear, threshold 0)."""
    full = F.interpolate(logits[:, None].float(), size=tuple(image_size), mode="bilinear",
                         align_corners=False)
    return (full[:, 0] > 0).cpu().numpy()


class Sam3Segmenter(Segmenter):
    """SAM 3 (Meta, 2025) through transformers: boxes, clicks and mask input through the tracker
    head, concept proposals from text (:meth:`propose`), native 3-D propagation.

    Options: ``checkpoint`` (a directory with ``config.json`` and ``model.safetensors`` as
    transformers saves SAM 3, or a file in it), ``device`` (CUDA if available), ``dtype``
    (``"bfloat16"``/``"float16"``: autocast on CUDA; float32 on CPU), ``threshold`` (the score a
    proposal needs, 0.5), ``mask_threshold`` (a proposal's mask probability threshold, 0.5),
    ``cache_size``. Weights resolve from ``checkpoint``, ``$MSAGENT_SAM3_CHECKPOINT`` or the
    Hugging Face cache (``facebook/sam3``, gated).
    """

    name = "sam3"
    multimask_default = True
    can_propose = True

    def __init__(self, checkpoint: str | os.PathLike | None = None, device: str | None = None,
                 dtype: str | None = None, threshold: float = 0.5, mask_threshold: float = 0.5,
                 cache_size: int = 16) -> None:
        super().__init__(cache_size=cache_size)
        from transformers import Sam3ImageProcessor

        self.checkpoint = resolve_checkpoint(checkpoint)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = load_model(self.checkpoint).to(self.device)
        self.detector = self.model.detector_model
        self.tracker = self.model.tracker_model
        self.image_size = int(self.model.config.image_size)
        self.threshold = float(threshold)
        self.mask_threshold = float(mask_threshold)
        try:
            self.image_processor = Sam3ImageProcessor.from_pretrained(self.checkpoint,
                                                                      local_files_only=True)
        except OSError:  # no processor files: the official defaults at the model's size
            self.image_processor = Sam3ImageProcessor(
                size={"height": self.image_size, "width": self.image_size})
        self._tokenizer: Any = None
        self._texts: BoundedLRU = BoundedLRU(64)
        self._tracker_pos: list[torch.Tensor] | None = None
        self._lock = threading.Lock()
        #: ViT passes run (one per image encoded; the heads share it)
        self.encodes = 0
        #: concept proposals run
        self.proposals = 0
        log.info("loaded SAM 3 (%d px) from %s on %s", self.image_size, self.checkpoint,
                 self.device)

    def _autocast(self):
        if self.device.type == "cuda" and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    # -- encode ---------------------------------------------------------------------
    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """``Sam3ImageProcessor``'s input: B×3×S×S, stretched to S×S, (x/255 − 0.5)/0.5."""
        return self.image_processor(images=list(images), return_tensors="pt").pixel_values \
            .to(self.device)

    @torch.inference_mode()
    def encode_image(self, image: np.ndarray) -> Sam3Features:
        return self.encode_images([image])[0]

    @torch.inference_mode()
    def encode_images(self, images: Sequence[np.ndarray]) -> list[Sam3Features]:
        """One ViT pass per image (batched), then the tracker's neck on its output."""
        pixels = self.preprocess(images)
        with self._autocast():
            hidden = self.detector.vision_encoder.backbone(pixels).last_hidden_state
            maps, positions = self.model.get_vision_features_for_tracker(
                SimpleNamespace(last_hidden_state=hidden))
        with self._lock:
            self.encodes += len(images)
            if self._tracker_pos is None:  # the same for every image (they depend on the size)
                self._tracker_pos = [p[:, :1] for p in positions]
        return [Sam3Features(vision=hidden[i:i + 1],
                             tracker=tuple(m[:, i:i + 1] for m in maps))
                for i in range(len(images))]

    def tracker_positions(self) -> list[torch.Tensor]:
        """The tracker's FPN position encodings (HW × 1 × C; one copy for all images)."""
        if self._tracker_pos is None:
            raise SegmenterError("encode an image first")
        return self._tracker_pos

    def input_geometry(self, image_size: tuple[int, int]) -> InputGeometry:
        """Each axis stretched to S×S (``Sam3ImageProcessor``); prompts scaled per axis."""
        return InputGeometry(image_size, self.image_size, mode="stretch")

    # -- decode: the tracker head ----------------------------------------------------
    def image_embeddings(self, features: Sam3Features, batch: int = 1) -> list[torch.Tensor]:
        """The tracker's image embeddings as ``Sam3TrackerModel.forward`` shapes them
        (B × C × h × w per level)."""
        sizes = self.tracker.backbone_feature_sizes
        return [feat.permute(1, 2, 0).reshape(1, -1, *size).expand(batch, -1, -1, -1)
                for feat, size in zip(features.tracker, sizes)]

    def prompt_tensors(self, image_size: tuple[int, int], prompt_sets: Sequence[Prompts]
                       ) -> dict[str, torch.Tensor | None]:
        """Prompt sets of one structure as ``Sam3TrackerProcessor`` makes them: points
        B×1×N×2 and labels B×1×N, boxes B×1×4, pixel XY scaled per axis to S×S (float32)."""
        height, width = image_size
        scale = self.image_size
        out: dict[str, torch.Tensor | None] = {"input_points": None, "input_labels": None,
                                               "input_boxes": None}
        if prompt_sets[0].points:
            coords = torch.tensor([[[p.x, p.y] for p in s.points] for s in prompt_sets],
                                  dtype=torch.float32)
            coords[..., 0] = coords[..., 0] * (scale / width)
            coords[..., 1] = coords[..., 1] * (scale / height)
            out["input_points"] = coords[:, None].to(self.device)
            out["input_labels"] = torch.tensor([[[p.label for p in s.points]] for s in prompt_sets],
                                               dtype=torch.int64, device=self.device)
        if prompt_sets[0].box is not None:
            boxes = torch.tensor([s.box.as_tuple() for s in prompt_sets],  # type: ignore[union-attr]
                                 dtype=torch.float32).reshape(-1, 2, 2)
            boxes[..., 0] = boxes[..., 0] * (scale / width)
            boxes[..., 1] = boxes[..., 1] * (scale / height)
            out["input_boxes"] = boxes.reshape(-1, 1, 4).to(self.device)
        return out

    @torch.inference_mode()
    def decode_prompts(self, embedding: Embedding, prompt_sets: Sequence[Prompts],
                       prev_logits: Sequence[np.ndarray | None], *,
                       multimask: bool) -> list[MaskPrediction]:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for index, prompts in enumerate(prompt_sets):
            groups[(prompts.box is not None, len(prompts.points),
                    prev_logits[index] is not None)].append(index)
        results: list[MaskPrediction | None] = [None] * len(prompt_sets)
        for (_, _, has_mask), indices in groups.items():
            masks = None
            if has_mask:
                masks = torch.as_tensor(np.stack([prev_logits[i] for i in indices]),
                                        device=self.device)[:, None]
            with self._autocast():
                logits, scores = self.run_tracker(embedding.features, embedding.image_size,
                                                  [prompt_sets[i] for i in indices], masks,
                                                  multimask)
            full = upscale_masks(logits, embedding.image_size)
            low = resize_logits(logits).cpu().numpy()
            for row, index in enumerate(indices):
                results[index] = MaskPrediction(mask=full[row], low_res_logits=low[row],
                                                score=float(scores[row]))
        return cast(list[MaskPrediction], results)

    def run_tracker(self, features: Sam3Features, image_size: tuple[int, int],
                    prompt_sets: Sequence[Prompts], input_masks: torch.Tensor | None,
                    multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``Sam3TrackerModel.forward`` from the image embeddings on: the prompt encoder, the
        mask decoder, then the best candidate by predicted IoU. Returns the kept S/3.5 logits
        (B × h × w, float32) and their predicted IoUs (B)."""
        tracker = self.tracker
        batch = len(prompt_sets)
        embeddings = self.image_embeddings(features, batch)
        positional = tracker.get_image_wide_positional_embeddings().repeat(batch, 1, 1, 1)
        if input_masks is not None and input_masks.shape[-2:] != tracker.prompt_encoder.mask_input_size:
            input_masks = F.interpolate(input_masks.float(), size=tracker.prompt_encoder.mask_input_size,
                                        align_corners=False, mode="bilinear", antialias=True
                                        ).to(input_masks.dtype)
        sparse, dense = tracker.prompt_encoder(input_masks=input_masks,
                                               **self.prompt_tensors(image_size, prompt_sets))
        low_res, iou, _, _ = tracker.mask_decoder(
            image_embeddings=embeddings[-1], image_positional_embeddings=positional,
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            multimask_output=multimask, high_resolution_features=embeddings[:-1])
        low_res, iou = low_res[:, 0].float(), iou[:, 0].float()  # one mask per prompt set
        best = iou.argmax(dim=1)
        rows = torch.arange(batch, device=low_res.device)
        return low_res[rows, best], iou[rows, best]

    # -- propose: the concept (detector) head -------------------------------------------
    @property
    def tokenizer(self):
        """The checkpoint's own tokenizer (CLIP BPE), loaded at the first proposal."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            found = (self.checkpoint / "tokenizer.json").is_file() or all(
                (self.checkpoint / name).is_file() for name in ("vocab.json", "merges.txt"))
            if not found:
                raise WeightsNotFound(
                    f"{self.checkpoint} has no tokenizer files (tokenizer.json, or vocab.json + "
                    "merges.txt), which proposals from text need: copy them from facebook/sam3's "
                    f"snapshot into that directory. {HINT}")
            self._tokenizer = AutoTokenizer.from_pretrained(self.checkpoint, local_files_only=True)
        return self._tokenizer

    def text_features(self, text: str) -> tuple[Any, torch.Tensor]:
        """(``get_text_features`` output, attention mask) for ``text``, tokenised as
        ``Sam3Processor`` does (padded to 32 tokens); kept for the 64 latest texts."""
        def compute():
            tokens = self.tokenizer(text, return_tensors="pt", padding="max_length",
                                    max_length=TEXT_TOKENS)
            count = int(tokens["attention_mask"].sum())
            if tokens["input_ids"].shape[1] > TEXT_TOKENS:
                raise SegmenterError(f"{text!r} is {count} tokens; SAM 3 reads at most "
                                     f"{TEXT_TOKENS} (start and end included): name the "
                                     "target in a few words")
            ids = tokens["input_ids"].to(self.device)
            mask = tokens["attention_mask"].to(self.device)
            with torch.inference_mode(), self._autocast():
                return self.detector.get_text_features(input_ids=ids, attention_mask=mask,
                                                       return_dict=True), mask

        return self._texts.get_or_compute(text, compute)

    def detector_vision(self, features: Sam3Features):
        """The detector's vision output (``Sam3VisionModel.forward`` after its ViT): the
        detector's neck on the kept ViT output."""
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        hidden = features.vision
        side = self.image_size // self.detector.config.vision_config.backbone_config.patch_size
        spatial = hidden.view(hidden.shape[0], side, side, -1).permute(0, 3, 1, 2)
        maps, positions = self.detector.vision_encoder.neck(spatial)
        return Sam3VisionEncoderOutput(last_hidden_state=hidden, fpn_hidden_states=maps,
                                       fpn_position_encoding=positions)

    @torch.inference_mode()
    def detect(self, features: Sam3Features, text: str):
        """``Sam3Model.forward`` for ``text`` on an encoded image (its raw output)."""
        text_out, mask = self.text_features(text)
        with self._autocast():
            return self.detector(vision_embeds=self.detector_vision(features),
                                 text_embeds=text_out, attention_mask=mask)

    @torch.inference_mode()
    def propose_masks(self, embedding: Embedding, text: str, *,
                      max_candidates: int) -> list[MaskPrediction]:
        """Every instance of ``text`` scoring above ``threshold``, best first: masks and scores
        as ``Sam3Processor.post_process_instance_segmentation`` gives them (score = query
        probability × presence probability; mask = upscaled probability > ``mask_threshold``),
        low-res logits the query's mask logits resized to 256×256. Empty masks are dropped."""
        outputs = self.detect(embedding.features, text)
        with self._lock:
            self.proposals += 1
        found = self.image_processor.post_process_instance_segmentation(
            outputs, threshold=self.threshold, mask_threshold=self.mask_threshold,
            target_sizes=[tuple(embedding.image_size)])[0]
        scores = outputs.pred_logits.float().sigmoid()
        if outputs.presence_logits is not None:
            scores = scores * outputs.presence_logits.float().sigmoid()
        kept = torch.nonzero(scores[0] > self.threshold)[:, 0]
        low = resize_logits(outputs.pred_masks[0, kept]).cpu().numpy()
        masks = found["masks"].bool().cpu().numpy()
        values = found["scores"].float().cpu().numpy()
        order = sorted(range(len(values)), key=lambda i: -float(values[i]))
        predictions = [MaskPrediction(mask=masks[i], low_res_logits=low[i], score=float(values[i]))
                       for i in order if masks[i].any()]
        return predictions[:max_candidates]

    # -- 3-D ----------------------------------------------------------------------------
    def native_propagator(self, stack: SliceStack) -> Propagator:
        """``Sam3TrackerVideoModel`` through ``stack``
        (:class:`~msagent_sam3.propagation.Sam3VideoPropagator`): seeds as conditioning
        masks, tracked forward and backward from the first seed; each slice encoded once, by
        this segmenter (its cache is reused)."""
        from .propagation import Sam3VideoPropagator

        return Sam3VideoPropagator(self, stack)

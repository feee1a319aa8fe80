"""The episode core: one state per episode and the one rule for a step.

Everything that runs an episode uses it: :class:`msagent.Agent`, the server's sessions, the
web page's runs and the training tools. The rule, in one place:

- a pixel prompt (box or click) joins the prompts in force: ``accumulate`` keeps the latest box
  and every click (SAM's interactive protocol); ``latest`` keeps only the newest prompt (the
  previous mask carries the rest, as upstream MedSAM-Agent's server does);
- the decode gets those prompts, the previous prediction's low-res logits as mask input (the
  initial mask's, before the first prompt), and the target text for backbones that take one;
- the new state holds the prompts and the prediction.

States are immutable values, so an undo stack is a list of states and a preview is a decode
whose state is not kept. How the decode runs is the caller's: :func:`step` calls the
segmenter; the server awaits its micro-batching engine on :meth:`EpisodeState.request`.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import numpy as np

from msagent.backbones.segmenter import Embedding, Segmenter
from msagent.types import BBox, MaskPrediction, Point, Prompts

PROMPT_MODES = ("accumulate", "latest")


@attrs.frozen(eq=False)
class DecodeRequest:
    """What a step decodes: the prompts in force (with the text, for text-prompted backbones)
    and the previous low-res logits (None on a first decode without an initial mask)."""

    prompts: Prompts
    prev_logits: np.ndarray | None


@attrs.frozen(eq=False)
class EpisodeState:
    """One episode's state on one encoded image.

    ``text`` is the target sent with every decode (None for backbones that take no text);
    ``prediction`` the last decode (or the initial mask's prediction); ``added`` the prompt
    the last step added (None before the first).
    """

    embedding: Embedding
    prompt_mode: str = attrs.field(default="accumulate", validator=attrs.validators.in_(PROMPT_MODES))
    text: str | None = None
    prompts: Prompts = attrs.field(factory=Prompts)
    prediction: MaskPrediction | None = None
    added: BBox | Point | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        return self.embedding.image_size

    def next_prompts(self, prompt: BBox | Point) -> Prompts:
        """The prompts in force once ``prompt`` is added (by the episode's prompt mode)."""
        prompts = self.prompts.latest_only(prompt) if self.prompt_mode == "latest" \
            else self.prompts.add(prompt)
        return attrs.evolve(prompts, text=self.text)

    def request(self, prompt: BBox | Point) -> DecodeRequest:
        """What decoding ``prompt`` on top of this state sends to the backbone."""
        prev = None if self.prediction is None else self.prediction.low_res_logits
        return DecodeRequest(self.next_prompts(prompt), prev)

    def after(self, prompt: BBox | Point, prediction: MaskPrediction) -> "EpisodeState":
        """The state once ``prompt`` was decoded to ``prediction``."""
        return attrs.evolve(self, prompts=self.next_prompts(prompt), prediction=prediction,
                            added=prompt)


def start(embedding: Embedding, *, prompt_mode: str = "accumulate", text: str | None = None,
          initial: MaskPrediction | None = None, prompts: Prompts | None = None) -> EpisodeState:
    """A fresh state. ``initial`` is the prediction the episode starts from (a mask to refine,
    see :func:`msagent.agent.refine.initial_state`): its logits enter the first decode as the mask
    input; ``prompts`` are prompts already in force (the initial mask's box, for a backbone
    without a mask input)."""
    return EpisodeState(embedding, prompt_mode, text, prompts=prompts or Prompts(),
                        prediction=initial)


Decoder = Callable[[Embedding, Prompts, "np.ndarray | None"], MaskPrediction]


def segmenter_decoder(segmenter: Segmenter, multimask: bool | None = None) -> Decoder:
    """A decoder that runs ``segmenter.decode`` (with ``multimask``; None: its default); the
    target text travels in ``prompts.text``."""

    def decode(embedding: Embedding, prompts: Prompts, prev: np.ndarray | None) -> MaskPrediction:
        return segmenter.decode(embedding, prompts, prev, multimask=multimask)

    return decode


def preview(decode: Decoder, state: EpisodeState, prompt: BBox | Point) -> MaskPrediction:
    """Decode ``prompt`` on top of ``state`` without moving the episode on."""
    request = state.request(prompt)
    return decode(state.embedding, request.prompts, request.prev_logits)


def step(decode: Decoder, state: EpisodeState, prompt: BBox | Point) -> EpisodeState:
    """Decode ``prompt`` on top of ``state``; the new state (its ``prediction`` is the result)."""
    return state.after(prompt, preview(decode, state, prompt))

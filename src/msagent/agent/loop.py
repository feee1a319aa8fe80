"""The episode loop: observe → act → parse → segment → overlay → repeat.

One episode keeps one state (accumulated prompts and the previous low-res logits) for all
tools; the image is encoded once (through the segmenter's cache). Rules (as the released
checkpoint's inference): at most ``max_turns`` executed actions; an invalid reply, or a
stop before any mask exists, is retried once — two failures in a row end the episode;
a valid action resets the count. Rejected replies are recorded on the trajectory but not
shown to the policy again (a retry sees the same conversation; LLM policies sample on retries,
``episode.feedback`` says what was wrong).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import numpy as np

from msagent import metrics, protocol
from msagent.agent import episode as episode_core
from msagent.agent.episode import PROMPT_MODES, EpisodeState
from msagent.agent.proposal import Proposal, check_can_propose, propose, wants_proposal
from msagent.agent.refine import check_initial_mask, initial_state
from msagent.backbones.segmenter import Embedding, Segmenter
from msagent.errors import InvalidInput, PolicyError, PolicyOutputError
from msagent.io.images import to_mask
from msagent.policies.base import Episode, Policy, Reply
from msagent.types import Action, InitialMask, MaskPrediction, Step, Trajectory

log = logging.getLogger(__name__)

#: ``on_step(step)``: called with each step as the episode records it
OnStep = Callable[[Step], None]


@attrs.define
class Agent:
    """Runs episodes of ``policy`` driving ``segmenter``.

    ``multimask``: keep the best of the decoder's candidate masks (default: the backbone's
    choice). ``prompt_mode``: "accumulate" sends the box and every click so far with the previous
    logits (SAM's interactive protocol, our default); "latest" sends only the newest prompt
    with the previous logits (upstream MedSAM-Agent's server).
    """

    policy: Policy
    segmenter: Segmenter
    max_turns: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    multimask: bool | None = None  # None: the segmenter's multimask_default
    prompt_mode: str = attrs.field(default="accumulate", validator=attrs.validators.in_(PROMPT_MODES))
    max_failures: int = 2

    @property
    def use_multimask(self) -> bool:
        return self.segmenter.multimask_default if self.multimask is None else self.multimask

    def run(self, image: np.ndarray, target: str, ground_truth: np.ndarray | None = None, *,
            case_id: str = "", meta: Mapping[str, Any] | None = None,
            initial_mask: Any = None, initial_source: str = "",
            embedding: Embedding | None = None, on_step: OnStep | None = None,
            cancel: threading.Event | None = None) -> Trajectory:
        """Run one episode. ``image`` is H×W×3 uint8 RGB (see :func:`msagent.io.to_rgb_uint8`);
        ``ground_truth`` an optional H×W bool mask used for per-step IoU/Dice (and by experts).

        ``initial_mask`` (H×W, binary) is a prediction to refine: turn 0 of the trajectory
        (``trajectory.initial``, with its IoU/Dice), shown to the policy first and given to the
        backbone as the first decode's mask input (see :mod:`msagent.agent.refine`). An empty one is
        no initial mask. With it, stopping at once is allowed: the result is then that mask.
        ``initial_mask="proposal"`` starts from the backbone's best mask for ``target`` instead
        (a backbone with ``can_propose``; see :mod:`msagent.agent.proposal`); a
        :class:`~msagent.agent.proposal.Proposal` the caller already made (the server makes it
        in its decode pool) starts from that one.

        ``embedding`` is ``image``'s embedding when the caller already holds it (a 3-D run
        keeps one per slice); by default the image is encoded through the backbone's cache.

        ``on_step(step)`` is called with each reply's step as it is recorded (executed or
        rejected), in order, from the thread that handles the reply. ``cancel``: once set, the
        episode ends before the next policy call with stop reason ``cancelled``. Neither
        touches the policy object; an exception raised by ``on_step`` ends the run (the policy's
        ``end_episode`` still runs).
        """
        runner = self._runner(image, target, ground_truth, case_id, meta, initial_mask,
                              initial_source, on_step, cancel)
        if embedding is not None and tuple(embedding.image_size) != tuple(np.shape(image)[:2]):
            raise ValueError(f"the embedding is of a {embedding.image_size} image, not "
                             f"{np.shape(image)[:2]}")
        runner.start(embedding if embedding is not None else self.segmenter.encode(image))
        try:
            while runner.active and not runner.cancelled():
                runner.handle(self._ask(runner, self.policy.act))
        finally:
            self.policy.end_episode(runner.episode)
        return runner.trajectory()

    async def arun(self, image: np.ndarray, target: str, ground_truth: np.ndarray | None = None,
                   *, case_id: str = "", meta: Mapping[str, Any] | None = None,
                   initial_mask: Any = None, initial_source: str = "",
                   on_step: OnStep | None = None,
                   cancel: threading.Event | None = None) -> Trajectory:
        """Async :meth:`run`: the policy is awaited, the image encoded through the backbone's
        ``aencode`` (native I/O for a remote backbone); each reply is handled (parsed, decoded)
        in a worker thread, since a policy such as the expert previews decodes synchronously
        (``on_step`` is called there)."""
        runner = self._runner(image, target, ground_truth, case_id, meta, initial_mask,
                              initial_source, on_step, cancel)
        runner.start(await self.segmenter.aencode(image))
        try:
            while runner.active and not runner.cancelled():
                try:
                    reply: Reply | PolicyError = await self.policy.aact(runner.episode)
                except PolicyError as exc:
                    reply = exc
                await asyncio.to_thread(runner.handle, reply)
        finally:
            self.policy.end_episode(runner.episode)
        return runner.trajectory()

    def _ask(self, runner: "_Runner", act) -> Reply | PolicyError:
        try:
            return act(runner.episode)
        except PolicyError as exc:
            return exc

    def _runner(self, image, target, ground_truth, case_id, meta, initial_mask=None,
                initial_source="", on_step=None, cancel=None) -> "_Runner":
        if self.policy.needs_ground_truth and ground_truth is None:
            raise PolicyError(f"policy {self.policy.name!r} simulates an expert and needs "
                              "ground_truth=")
        if ground_truth is not None:  # bool or numeric, the image's size (InvalidMask otherwise)
            ground_truth = to_mask(ground_truth, np.shape(image)[:2], allow_empty=True)
        if cancel is not None and not callable(getattr(cancel, "is_set", None)):
            raise InvalidInput(f"cancel must be a threading.Event (or anything with is_set()), "
                               f"got {type(cancel).__name__}")
        if on_step is not None and not callable(on_step):
            raise InvalidInput(f"on_step must be callable, got {type(on_step).__name__}")
        start_from_proposal = wants_proposal(initial_mask)
        if start_from_proposal:
            check_can_propose(self.segmenter)  # before anything is encoded
        made = initial_mask if isinstance(initial_mask, Proposal) else None  # proposed already
        initial = None if start_from_proposal or made is not None else \
            check_initial_mask(initial_mask, np.shape(image)[:2])
        if made is not None and made.mask is not None:
            check_initial_mask(made.mask, np.shape(image)[:2])
        episode = Episode(id=uuid.uuid4().hex, image=image, target=target,
                          max_turns=self.max_turns, ground_truth=ground_truth, initial_mask=initial)
        info = {"backbone": self.segmenter.name, "policy": self.policy.name,
                "max_turns": self.max_turns, "prompt_mode": self.prompt_mode,
                "multimask": self.use_multimask, **(meta or {})}
        return _Runner(self, episode, case_id, info, initial_source=initial_source,
                       on_step=on_step, cancel=cancel, propose=start_from_proposal, proposal=made)


@attrs.define(eq=False)
class _Runner:
    """The policy side of one episode; its segmentation state is one
    :class:`~msagent.agent.episode.EpisodeState` (one per episode, never one per tool)."""

    agent: Agent
    episode: Episode
    case_id: str
    meta: dict
    initial_source: str = ""
    on_step: OnStep | None = None
    cancel: threading.Event | None = None
    propose: bool = False  # start from the backbone's proposal for the target
    proposal: Proposal | None = None  # ... or from one the caller already made (the server)
    initial_score: float | None = None
    state: EpisodeState | None = None
    decode: episode_core.Decoder | None = None
    failures: int = 0
    stop_reason: str = ""
    last_preview: tuple | None = None  # ((executed turns, prompt), prediction)

    @property
    def active(self) -> bool:
        return not self.stop_reason

    def cancelled(self) -> bool:
        """Whether ``cancel`` is set; then the episode ends here (stop reason ``cancelled``)."""
        if self.cancel is None or not self.cancel.is_set():
            return False
        self.stop_reason = "cancelled"
        return True

    def start(self, embedding: Embedding) -> None:
        segmenter = self.agent.segmenter
        proposal = self.proposal
        if self.propose:  # on this embedding: no second encode
            proposal = propose(segmenter, embedding, self.episode.target)
        if proposal is not None:
            self.meta["proposal"] = proposal.note(self.episode.target)
            if proposal.mask is not None:
                self.episode.initial_mask = proposal.mask
                self.initial_source, self.initial_score = proposal.source, proposal.score
        initial = prompts = None
        if self.episode.initial_mask is not None:
            initial, prompts = initial_state(segmenter, self.episode.initial_mask)
            self.episode.prediction = initial
        self.state = episode_core.start(
            embedding, prompt_mode=self.agent.prompt_mode,
            text=self.episode.target if segmenter.accepts_text else None, initial=initial,
            prompts=prompts)
        self.decode = episode_core.segmenter_decoder(segmenter, self.agent.use_multimask)
        self.episode.preview = self.preview

    def preview(self, action: Action) -> MaskPrediction:
        """Decode ``action`` on top of the current state without committing it. The latest
        preview is remembered until the state changes, so executing the action a policy just
        previewed (the expert's accepted candidate) costs no second decode."""
        prompt = protocol.action_to_prompt(action, self.episode.image_size)
        key = (self.episode.executed_turns, prompt)
        if self.last_preview is not None and self.last_preview[0] == key:
            return self.last_preview[1]
        assert self.decode is not None and self.state is not None, "start() comes first"
        prediction = episode_core.preview(self.decode, self.state, prompt)
        self.last_preview = (key, prediction)
        return prediction

    def handle(self, reply: Reply | PolicyError) -> None:
        index = len(self.episode.steps)
        if isinstance(reply, PolicyError):
            self._record(Step(index, "", error=f"policy failed: {reply}"))
            self.stop_reason = "policy_error"
            return
        try:
            action = protocol.parse_action(reply.text, self.episode.image_size)
        except PolicyOutputError as exc:
            self._fail(Step(index, reply.text, error=str(exc), usage=reply.usage), str(exc))
            return
        if action.is_stop:
            if self.episode.prediction is None:  # no mask yet: neither executed nor initial
                error = "stop_action before any mask exists; make a first action"
                self._fail(Step(index, reply.text, action, error=error, usage=reply.usage), error)
            else:
                self._record(Step(index, reply.text, action, usage=reply.usage))
                self.stop_reason = "stop"
            return
        self._execute(index, action, reply)

    def _execute(self, index: int, action: Action, reply: Reply) -> None:
        prediction = self.preview(action)
        prompt = protocol.action_to_prompt(action, self.episode.image_size)
        assert self.state is not None, "start() comes first"
        self.state = self.state.after(prompt, prediction)
        gt = self.episode.ground_truth
        step = Step(index, reply.text, action, mask=prediction.mask, score=float(prediction.score),
                    iou=None if gt is None else metrics.iou(prediction.mask, gt),
                    dice=None if gt is None else metrics.dice(prediction.mask, gt),
                    usage=reply.usage, prompt=prompt,
                    prompts=attrs.evolve(self.state.prompts, text=None))
        self.episode.prediction = prediction
        self._record(step)
        self.failures = 0
        self.episode.feedback = None
        if self.episode.executed_turns >= self.agent.max_turns:
            self.stop_reason = "max_turns"

    def _fail(self, step: Step, why: str) -> None:
        self._record(step)
        self.failures += 1
        self.episode.feedback = why
        log.debug("episode %s: rejected reply (%s)", self.episode.id, why)
        if self.failures >= self.agent.max_failures:
            self.stop_reason = "invalid_output" if step.action is None else "stopped_without_mask"

    def _record(self, step: Step) -> None:
        self.episode.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)

    def trajectory(self) -> Trajectory:
        assert self.state is not None, "start() comes first"
        height, width = self.episode.image_size
        return Trajectory(target=self.episode.target, image_size=(height, width),
                          steps=tuple(self.episode.steps), stop_reason=self.stop_reason,
                          case_id=self.case_id, image_sha256=self.state.embedding.key, meta=self.meta,
                          initial=self._initial())

    def _initial(self) -> InitialMask | None:
        mask, gt = self.episode.initial_mask, self.episode.ground_truth
        if mask is None:
            return None
        return InitialMask(mask, None if gt is None else metrics.iou(mask, gt),
                           None if gt is None else metrics.dice(mask, gt), self.initial_source,
                           self.initial_score)

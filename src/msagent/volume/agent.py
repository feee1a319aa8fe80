"""The agent in 3-D: a key slice, propagation through the volume, a review pass.

A run (:meth:`VolumeAgent.run`) on a :class:`~msagent.backbones.propagation.SliceStack`:

1. **Key slice.** Given, or for a policy that reads the ground truth (the expert) the slice
   of largest target area, or else a survey: a first action on ``survey_slices`` evenly
   spaced slices (20 %–80 % of the stack), keeping the slice whose first prediction has the
   best predicted score (a tie to the one nearest the middle). ``key_rule="proposal"`` (a
   backbone that proposes from text, e.g. ``sam3``) picks the slice whose proposal for the
   target scores best instead (:func:`proposal_search`: ``proposal_slices`` evenly spaced
   slices, then halving steps around the best), without reading the ground truth. The rule is
   recorded (``key_rule``; the proposal search's scores in ``meta["key_proposals"]``).
2. **Key episode.** A full agent episode there; its result is the first seed. Under the
   proposal rule it starts from that slice's proposal (turn 0, source and score).
3. **Propagation** (:func:`msagent.volume.propagation.propagator_for`: native for backbones with a
   3-D memory, else slice by slice).
4. **Review.** ``review_slices`` corrections: the slice with the most expected wrong voxels
   (:func:`~msagent.volume.reviews.rank_reviews`, from the result alone, the same ranking
   for every policy: the expert reads the ground truth only to act) gets a refinement
   episode starting from its propagated mask (:mod:`msagent.agent.refine`; from nothing on a
   slice just beyond the result's extent). A correction that changed the mask becomes a seed and is propagated
   again by the propagator's correction rule (:mod:`msagent.volume.propagation`); a review
   that changes nothing does not count against ``review_slices`` (at most as many again are
   looked at). The expert settles a review slice where the ground truth is empty without an
   episode: it marks the slice as having no target (an empty seed: propagation ends there).
   ``review_rank="dice"`` is the ranking before it: for the expert the worst Dice (under
   ``review_below``), otherwise :func:`~msagent.volume.reviews.pick_suspicious`, every
   review counted.

Each slice is encoded once per run (:class:`msagent.volume.embeddings.EmbeddingStore`); the
episodes, the key-slice proposals, generic propagation and a native propagator that shares
embeddings (``sam3``) use the same embeddings. A native propagator with preprocessing of its
own (SAM2's video predictor: ``medsam2``) encodes its frames itself, so there the key and
review slices are encoded once more.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import numpy as np

from msagent import metrics
from msagent.agent import Agent
from msagent.agent.episode import PROMPT_MODES
from msagent.agent.proposal import Proposal, check_can_propose, propose
from msagent.backbones.propagation import Propagator, Seed, SliceStack
from msagent.backbones.segmenter import Segmenter
from msagent.errors import InvalidInput, InvalidMask, SegmentationFailed
from msagent.policies.base import Policy
from msagent.types import Trajectory
from msagent.volume.embeddings import EmbeddingStore
from msagent.volume.propagation import CORRECTIONS, METHODS, propagator_for
from msagent.volume.reviews import pick_suspicious, rank_reviews, results_dice, same_prediction
from msagent.volume.trajectory import VolumeEpisode, VolumeTrajectory

#: how the key slice of a run was chosen (``VolumeTrajectory.key_rule``)
KEY_RULES = ("given", "largest_gt_area", "survey", "proposal")
#: ``VolumeAgent.key_rule``: "auto" (largest_gt_area for a policy that reads the ground truth,
#: else survey), "survey" or "proposal"
KEY_CHOICES = ("auto", "survey", "proposal")
#: flat options that go to each slice's :class:`msagent.Agent` (a VolumeAgent's agent_options)
AGENT_OPTIONS = ("prompt_mode", "multimask", "max_failures")
#: ``VolumeAgent.review_rank``: "expected" (expected wrong voxels,
#: :func:`~msagent.volume.reviews.rank_reviews`) or "dice" (the expert's worst Dice, else
#: :func:`~msagent.volume.reviews.pick_suspicious`)
REVIEW_RANKS = ("expected", "dice")
#: the most slices ``survey_slices`` and ``review_slices`` may name (more is a mistake)
MAX_SLICE_OPTION = 100_000


@attrs.define
class VolumeAgent:
    """Runs 3-D episodes of ``policy`` driving ``segmenter`` (see the module docstring).

    ``agent_options`` go to each slice's :class:`msagent.Agent` (``prompt_mode``,
    ``multimask``, ...); ``min_area``/``min_score`` end generic propagation (see
    :mod:`msagent.volume.propagation`); ``max_in_memory`` bounds the embeddings kept in memory.
    ``key_rule`` ("auto", "survey", "proposal") chooses the key slice when none is given;
    ``proposal_slices`` is the proposal search's first, evenly spaced round."""

    policy: Policy
    segmenter: Segmenter
    max_turns: int = 5
    propagation: str = "auto"
    review_slices: int = 3
    survey_slices: int = 5
    review_below: float = 0.9
    min_area: int = 1
    min_score: float = 0.0
    max_in_memory: int = 64
    key_rule: str = "auto"
    proposal_slices: int = 8
    correction: str = "local"
    review_rank: str = "expected"
    agent_options: Mapping[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        check_options(self.max_turns, self.propagation, self.review_slices, self.survey_slices,
                      self.review_below, self.min_area, self.min_score, self.max_in_memory,
                      self.key_rule, self.proposal_slices, self.correction, self.review_rank)
        if self.key_rule == "proposal":  # before any slice is encoded
            check_can_propose(self.segmenter)

    def run(self, stack: SliceStack, target: str, ground_truth: np.ndarray | None = None, *,
            key_slice: int | None = None, case_id: str = "", meta: Mapping[str, Any] | None = None,
            where: str = "", progress: Callable[[str], None] | None = None) -> VolumeTrajectory:
        """Segment ``target`` through ``stack``. ``ground_truth`` (count × H × W, display order)
        adds per-slice Dice and drives the expert; ``key_slice`` skips the key-slice choice."""
        say = progress or (lambda text: None)
        gt = self._check(stack, ground_truth, key_slice)
        started = time.perf_counter()
        store = EmbeddingStore(self.segmenter, stack, max_in_memory=self.max_in_memory)
        propagator = propagator_for(self.segmenter, stack, self.propagation, store=store,
                                    min_area=self.min_area, min_score=self.min_score,
                                    multimask=self.agent_options.get("multimask"),
                                    correction=self.correction)
        run = _Run(self, stack, target, gt, store, propagator, case_id, say)
        try:
            key, rule = run.choose_key(key_slice)
            timings = {"key": time.perf_counter() - started}
            run.key_episode(key)
            timings["propagation"] = time.perf_counter() - started - timings["key"]
            run.review()
            timings["total"] = time.perf_counter() - started
            timings["review"] = timings["total"] - timings["key"] - timings["propagation"]
        finally:
            propagator.close()
            store.close()
        native_encodes = propagator.encodes if propagator.method != "generic" else 0
        counts = {"encodes": store.encodes + native_encodes,
                  "propagation_decodes": propagator.decodes,
                  "episodes": len(run.episodes),
                  "turns": sum(e.trajectory.turns for e in run.episodes if e.trajectory)}
        searched: dict[str, Any] = {}
        if run.proposals:  # the proposal search: every slice it looked at, its best score
            counts["proposals"] = len(run.proposals)
            searched["key_proposals"] = {str(i): p.score for i, p in sorted(run.proposals.items())}
        return VolumeTrajectory(
            target=target, shape=stack.gray.shape, where=where, spacing=stack.spacing,
            key_slice=key, key_rule=rule, propagation=propagator.method,
            episodes=tuple(run.episodes),
            masks={i: p.mask for i, p in sorted(propagator.results.items())},
            scores={i: float(p.score) for i, p in sorted(propagator.results.items())},
            counts=counts, timings=timings, case_id=case_id,
            meta={"backbone": self.segmenter.name, "policy": self.policy.name,
                  "max_turns": self.max_turns, "review_slices": self.review_slices,
                  **searched, **(meta or {})})

    def _check(self, stack: SliceStack, ground_truth, key_slice) -> np.ndarray | None:
        if not isinstance(stack, SliceStack):
            raise InvalidInput(f"VolumeAgent.run needs a SliceStack (see msagent.volume.stack), "
                               f"got {type(stack).__name__}")
        gt = None
        if ground_truth is not None:
            gt = np.asarray(ground_truth)
            if gt.shape != stack.gray.shape:
                raise InvalidMask(f"the ground truth has shape {gt.shape} but the slices are "
                                  f"{stack.gray.shape}")
            gt = gt.astype(bool)
        if self.policy.needs_ground_truth and gt is None:
            raise InvalidInput(f"the {self.policy.name!r} policy simulates an expert from the "
                               "ground truth: pass ground_truth= (a label volume on the image's grid)")
        if gt is not None and self.policy.needs_ground_truth and not gt.any():
            raise InvalidMask("the ground truth is empty in every slice: nothing for the expert "
                              "to segment")
        if key_slice is not None:
            if isinstance(key_slice, (bool, np.bool_)) or not isinstance(key_slice, (int, np.integer)) \
                    or not 0 <= key_slice < stack.count:
                raise InvalidInput(f"key_slice {key_slice!r} is outside the volume's slices "
                                   f"0..{stack.count - 1}")
            if gt is not None and not gt[key_slice].any():
                raise InvalidInput(f"the ground truth is empty on key slice {key_slice}; pick a "
                                   "slice with target, or leave key_slice unset")
        return gt


def check_options(max_turns: Any = 5, propagation: Any = "auto", review_slices: Any = 3,
                  survey_slices: Any = 5, review_below: Any = 0.9, min_area: Any = 1,
                  min_score: Any = 0.0, max_in_memory: Any = 64, key_rule: Any = "auto",
                  proposal_slices: Any = 8, correction: Any = "local",
                  review_rank: Any = "expected") -> None:
    """Refuse :class:`VolumeAgent` options it cannot run with (:class:`InvalidInput`, naming
    the option), so a bad count is one clear error before any work, not a stray exception.
    Slice counts (``survey_slices``, ``proposal_slices``, ``review_slices``) are at most
    :data:`MAX_SLICE_OPTION`; the survey and the proposal search never look at more slices
    than the volume has."""
    for name, value, least, most in (
            ("max_turns", max_turns, 1, None), ("review_slices", review_slices, 0, MAX_SLICE_OPTION),
            ("survey_slices", survey_slices, 1, MAX_SLICE_OPTION),
            ("proposal_slices", proposal_slices, 1, MAX_SLICE_OPTION), ("min_area", min_area, 0, None),
            ("max_in_memory", max_in_memory, 1, None)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
                or value < least or (most is not None and value > most):
            bound = f"from {least} to {most:,}" if most is not None else f"of at least {least}"
            raise InvalidInput(f"{name} must be a whole number {bound}, got {value!r:.40}")
    for name, value in (("review_below", review_below), ("min_score", min_score)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                or not np.isfinite(value):
            raise InvalidInput(f"{name} must be a finite number, got {value!r}")
    if propagation not in METHODS:
        raise InvalidInput(f"unknown propagation {propagation!r}; use one of {', '.join(METHODS)}")
    if not isinstance(key_rule, str) or key_rule not in KEY_CHOICES:
        raise InvalidInput(f"unknown key_rule {key_rule!r:.40}; use one of {', '.join(KEY_CHOICES)}")
    for name, value, known in (("correction", correction, CORRECTIONS),
                               ("review_rank", review_rank, REVIEW_RANKS)):
        if not isinstance(value, str) or value not in known:
            raise InvalidInput(f"unknown {name} {value!r:.40}; use one of {', '.join(known)}")


def split_options(options: Mapping[str, Any], *, caller: str = "segment_volume",
                  **named: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Flat keyword ``options`` for a :class:`VolumeAgent`, checked before any work: (its own
    options, its ``agent_options``). The Agent's options (:data:`AGENT_OPTIONS`) are split
    off, an unknown name is refused (:class:`InvalidInput` naming ``caller`` and the known
    names), and the values are checked by :func:`check_options`, with the ``named`` ones
    (``max_turns``, ``propagation``, ``review_slices``) that the caller takes itself."""
    agent_options = {k: v for k, v in options.items() if k in AGENT_OPTIONS}
    own = {k: v for k, v in options.items() if k not in AGENT_OPTIONS}
    known = {field.name for field in attrs.fields(VolumeAgent)} - {"policy", "segmenter",
                                                                   "agent_options"}
    unknown = sorted(set(own) - known)
    if unknown:
        raise InvalidInput(f"unknown option(s) {', '.join(unknown)} for {caller}; known: "
                           f"{', '.join(sorted(known | set(AGENT_OPTIONS)))}")
    check_options(**named, **own)
    _check_agent_options(**agent_options)
    return own, agent_options


def _check_agent_options(prompt_mode: Any = "accumulate", multimask: Any = None,
                         max_failures: Any = 2) -> None:
    """The :class:`msagent.Agent` options a 3-D run passes on, checked as :class:`InvalidInput`."""
    if prompt_mode not in PROMPT_MODES:
        raise InvalidInput(f"prompt_mode must be one of {', '.join(PROMPT_MODES)}, got "
                           f"{prompt_mode!r:.40}")
    if multimask is not None and not isinstance(multimask, (bool, np.bool_)):
        raise InvalidInput(f"multimask must be true, false or None (the backbone's choice), got "
                           f"{multimask!r:.40}")
    if isinstance(max_failures, (bool, np.bool_)) or not isinstance(max_failures, (int, np.integer)) \
            or max_failures < 0:
        raise InvalidInput(f"max_failures must be a whole number of at least 0, got {max_failures!r:.40}")


@attrs.define(eq=False)
class _Run:
    """The state of one 3-D run: its episodes, seeds and propagator."""

    owner: VolumeAgent
    stack: SliceStack
    target: str
    gt: np.ndarray | None
    store: EmbeddingStore
    propagator: Propagator
    case_id: str
    say: Callable[[str], None]
    episodes: list[VolumeEpisode] = attrs.field(factory=list)
    reviewed: set[int] = attrs.field(factory=set)
    proposals: dict[int, Proposal] = attrs.field(factory=dict)  # the key-slice search's
    key_proposal: Proposal | None = None  # the key episode starts from it (key_rule "proposal")

    @property
    def expert_gt(self) -> np.ndarray | None:
        """The ground truth when the policy reads it (the expert), else None."""
        return self.gt if self.owner.policy.needs_ground_truth else None

    def episode(self, index: int, role: str, *, max_turns: int | None = None,
                initial: np.ndarray | Proposal | None = None) -> Trajectory:
        agent = Agent(self.owner.policy, self.owner.segmenter,
                      max_turns=max_turns or self.owner.max_turns, **self.owner.agent_options)
        gt = None if self.gt is None else self.gt[index]
        return agent.run(self.stack.image(index), self.target, gt,
                         case_id=f"{self.case_id}{'/' if self.case_id else ''}slice-{index}",
                         meta={"slice": index, "role": role}, initial_mask=initial,
                         initial_source="propagated" if isinstance(initial, np.ndarray) else "",
                         embedding=self.store[index])

    # -- 1. the key slice ----------------------------------------------------------
    def choose_key(self, given: int | None) -> tuple[int, str]:
        if given is not None:
            return int(given), "given"
        rule = self.owner.key_rule
        if rule == "proposal" and (index := self.proposal_key()) is not None:
            return index, "proposal"
        # no proposal matched anywhere it looked: the rule a run would use without it
        if rule != "survey" and (gt := self.expert_gt) is not None:
            areas = gt.reshape(self.stack.count, -1).sum(axis=1)
            return int(np.argmax(areas)), "largest_gt_area"
        count, middle = self.stack.count, (self.stack.count - 1) / 2
        candidates = sorted({int(round(f * (count - 1)))  # at most every slice once
                             for f in np.linspace(0.2, 0.8, min(self.owner.survey_slices, count))})
        best, best_score = None, -np.inf
        for index in candidates:
            self.say(f"survey: slice {index}")
            trajectory = self.episode(index, "survey", max_turns=1)
            self.episodes.append(VolumeEpisode(index, "survey", trajectory))
            steps = trajectory.executed_steps
            last = steps[-1] if steps else None
            if last is None or last.mask is None or not last.mask.any():
                score = -np.inf
            else:  # a score unknown (None) counts as not finite
                score = np.nan if last.score is None else float(last.score)
            score = score if np.isfinite(score) or score == -np.inf else 0.0
            if score > best_score or (score == best_score and best is not None
                                      and abs(index - middle) < abs(best - middle)):
                best, best_score = index, score
        if best is None or best_score == -np.inf:
            raise SegmentationFailed(f"no survey slice ({', '.join(map(str, candidates))}) gave "
                                     "a mask; pass key_slice= (a slice showing the target)")
        return best, "survey"

    def proposal_key(self) -> int | None:
        """The slice whose proposal for the target scores best (:func:`proposal_search` on the
        run's embeddings), or None when none matched."""
        def at(index: int) -> Proposal:
            self.say(f"proposal: slice {index}")
            return propose(self.owner.segmenter, self.store[index], self.target)

        best, self.proposals = proposal_search(at, self.stack.count, self.owner.proposal_slices)
        self.key_proposal = None if best is None else self.proposals[best]
        return best

    # -- 2-3. the key episode and the first propagation -----------------------------
    def key_episode(self, index: int) -> None:
        self.say(f"key slice {index}: episode")
        trajectory = self.episode(index, "key", initial=self.key_proposal)
        self.reviewed.add(index)
        if not trajectory.final_mask.any():
            from msagent.types import failure_message

            raise SegmentationFailed(f"key slice {index}: {failure_message(trajectory)}", trajectory)
        effect = self.seed(index, trajectory)
        self.episodes.append(VolumeEpisode(index, "key", trajectory, True, **effect))

    def seed(self, index: int, trajectory: Trajectory | None) -> dict[str, Any]:
        """Seed ``index`` with the episode's mask (none: no target there) and propagate; what
        that did to the volume (:class:`VolumeEpisode`'s ``slices_changed`` and ``dice_after``)."""
        if trajectory is None:
            seed = Seed(np.zeros(self.stack.image_size, bool))
        else:
            steps = trajectory.executed_steps
            prompts = steps[-1].prompts if steps and steps[-1].prompts is not None else None
            seed = Seed(trajectory.final_mask, prompts) if prompts else Seed(trajectory.final_mask)
        before = dict(self.propagator.results)
        self.propagator.add_seed(index, seed)
        self.say(f"propagating from slice {index} ({self.propagator.method})")
        after = self.propagator.propagate()
        changed = sum(1 for i in before.keys() | after.keys()
                      if not same_prediction(before.get(i), after.get(i)))
        return {"slices_changed": changed,
                "dice_after": None if self.gt is None else results_dice(after, self.gt)}

    # -- 4. review -------------------------------------------------------------------
    def review(self) -> None:
        gt = self.expert_gt
        budget = self.owner.review_slices
        free = self.owner.review_rank == "expected"  # reviews that change nothing are free
        counted = looked = 0
        while counted < budget and looked < (2 * budget if free else budget):
            pick = self.pick_review()
            if pick is None:
                return
            index, reason = pick
            looked += 1
            self.reviewed.add(index)
            current = self.propagator.results.get(index)
            if gt is not None and not gt[index].any():  # the expert marks "no target here"
                changed = current is not None or not free
                self.say(f"review slice {index} ({reason}): no target")
                effect = self.seed(index, None) if changed else {}
                self.episodes.append(VolumeEpisode(index, "review", None, changed, reason,
                                                   "no_target", **effect))
                counted += 1 if changed else 0
                continue
            self.say(f"review slice {index} ({reason}): episode")
            before = None if current is None else current.mask
            trajectory = self.episode(index, "review", initial=before)
            after = trajectory.final_mask
            changed = bool(after.any()) and (before is None or not np.array_equal(after, before))
            effect = self.seed(index, trajectory) if changed else {}
            self.episodes.append(VolumeEpisode(index, "review", trajectory, changed, reason,
                                               **effect))
            counted += 1 if changed or not free else 0

    def pick_review(self) -> tuple[int, str] | None:
        results = self.propagator.results
        if self.owner.review_rank == "expected":
            ranked = rank_reviews(results, self.reviewed, self.propagator.seeds, self.stack.count)
            return None if not ranked else (ranked[0][0], ranked[0][1])
        if (gt := self.expert_gt) is not None:
            candidates = {i for i in results} | set(np.flatnonzero(
                gt.reshape(self.stack.count, -1).any(axis=1)).tolist())
            worst = None
            for index in sorted(candidates - self.reviewed):
                mask = results[index].mask if index in results else np.zeros_like(gt[index])
                value = metrics.dice(mask, gt[index])
                if value < self.owner.review_below and (worst is None or value < worst[1]):
                    worst = (index, value)
            return None if worst is None else (worst[0], f"dice {worst[1]:.3f}")
        return pick_suspicious(results, self.reviewed)


def proposal_search(propose_at: Callable[[int], Proposal], count: int,
                    first: int = 8) -> tuple[int | None, dict[int, Proposal]]:
    """The slice of ``count`` whose proposal scores best, looking at a bounded set of slices:
    ``first`` evenly spaced ones (slice centres of ``first`` equal parts; every slice when the
    stack has no more), then, around the best so far, the two slices half the spacing away,
    halving again until neighbours: at most ``first`` + 2·⌈log2(count / first)⌉ proposals
    (8 + 10 for 200 slices), each slice at most once. Best: the highest score among proposals
    that matched (a tie to the larger mask, then to the slice nearer the middle). Returns
    (best or None when nothing matched in the first round, every proposal made by slice)."""
    tried: dict[int, Proposal] = {}
    parts = min(int(first), count)

    def look(index: int) -> None:
        if 0 <= index < count and index not in tried:
            tried[index] = propose_at(index)

    for part in range(parts):
        look(int((part + 0.5) * count / parts))
    step, best = count / parts, _best_proposal(tried, count)
    while best is not None and step > 1:
        step /= 2
        offset = max(1, int(round(step)))
        look(best - offset)
        look(best + offset)
        best = _best_proposal(tried, count)
    return best, tried


def _best_proposal(tried: Mapping[int, Proposal], count: int) -> int | None:
    middle = (count - 1) / 2
    matched = [(float(p.score) if p.score is not None and np.isfinite(p.score) else 0.0,
                int(np.count_nonzero(p.mask)), -abs(i - middle), i)
               for i, p in tried.items() if p.mask is not None]
    return max(matched)[3] if matched else None

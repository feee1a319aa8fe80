"""The ``hybrid`` trajectory generator: Box-to-Point and Sequential-Click expert episodes.

Each trajectory is one episode of :class:`msagent.Agent` (the loop used for inference) driven
by :class:`msagent.policies.expert.ExpertPolicy`:

- **strategy**: Box-to-Point (first ``add_bbox`` at the jittered ground-truth box, then
  corrective clicks) with probability ``box_ratio``, else Sequential-Click (a positive click
  at the interior maximum of the ground truth, then corrective clicks); drawn per
  (seed, case id, sample), so it does not depend on the order of the cases;
- **box jitter**: each side moves by up to ``box_jitter`` × the box's side length;
- **acceptance**: an action is taken only if it raises IoU by at least ``tau`` (the first
  action: IoU ≥ ``tau``); otherwise up to ``resamples`` more candidates are tried (new jittered
  boxes; other clicks from :func:`msagent.clicker.click_candidates`, the standard corrective
  click first);
- **stop rules**: IoU ≥ ``target_iou``, no accepted candidate, or ``max_actions`` executed
  actions; with ``end_with_stop`` every trajectory ends with a ``stop_action`` turn;
- **filter**: trajectories whose final IoU is below ``min_final_iou`` are dropped;
- **fallback**: with ``click_fallback``, a Sequential-Click case whose first click is never
  accepted (box-only backbones such as LiteMedSAM return an empty mask for one click) runs
  as Box-to-Point instead; its meta records ``requested_strategy: "click"``;
- **refine** (with probability ``refine_ratio``, drawn after the box/click choice so that
  ``refine_ratio=0`` gives the same trajectories as before): the episode starts from a seeded
  degradation of the ground truth (:mod:`msagent.agent.refine`, one of ``refine_kinds`` at
  ``refine_strength``) and the expert corrects it — by redrawing the box or clicking, each
  action kept only if it gains ``tau`` — or stops at once when nothing improves it (that
  teaches stopping on a good mask). Its meta records ``degradation``. With
  ``refine_from="proposal"`` the refine episode starts from the backbone's own proposal for
  the case's target instead (:mod:`msagent.agent.proposal`; a backbone that proposes from
  text, e.g. ``sam3``; on the episode's own embedding): trajectories that refine proposals,
  turn 0 the proposal with its source and score. When no candidate matches, the episode runs
  from nothing as Box-to-Point; its meta records ``requested_strategy: "refine"`` and the
  agent's ``proposal`` note.

Everything is deterministic for a seed (see :func:`msagent.policies.expert.episode_rng`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import cast

import attrs
import numpy as np

from msagent.agent import Agent
from msagent.agent.episode import PROMPT_MODES
from msagent.agent.proposal import PROPOSAL, check_can_propose
from msagent.agent.refine import DEGRADATIONS, Degradation
from msagent.backbones.segmenter import Segmenter
from msagent.errors import InvalidInput
from msagent.generation.base import Attempt, TrajectoryGenerator
from msagent.policies.expert import ExpertPolicy
from msagent.types import Case, InitialMask, Trajectory

#: what a refine episode starts from: a degraded ground truth, or the backbone's proposal
REFINE_FROM = ("degrade", PROPOSAL)
_unit = attrs.validators.and_(attrs.validators.ge(0.0), attrs.validators.le(1.0))


@attrs.frozen
class HybridConfig:
    """All parameters of the hybrid generator, with their defaults.

    ``box_ratio``: probability of Box-to-Point (else Sequential-Click), default 0.5.
    ``box_jitter``: maximal move of each box side as a fraction of the side, default 0.1.
    ``tau``: minimal IoU gain of an accepted action, default 0.01.
    ``resamples``: extra candidates tried when one fails the ΔIoU test (N), default 5.
    ``max_actions``: executed add_* calls per trajectory, default 5.
    ``target_iou``: stop once the IoU reaches it, default 0.9.
    ``min_final_iou``: drop trajectories ending below it, default 0.5.
    ``end_with_stop``: end every trajectory with a stop_action turn, default True.
    ``click_fallback``: run Box-to-Point when Sequential-Click cannot start, default True.
    ``per_case``: trajectories per case (strategies drawn independently), default 1.
    ``seed``: the seed, default 0.
    ``prompt_mode``, ``multimask``: as :class:`msagent.Agent` (default "accumulate", the
    backbone's choice).
    ``refine_ratio``: probability of the refine strategy, default 0; ``refine_kinds``: the
    degradations it draws from (default all: erode, dilate, shift, drop, add);
    ``refine_strength``: their size as a fraction of the target's diameter, default 0.15.
    ``refine_from``: what a refine episode starts from, "degrade" (default: a degradation of
    the ground truth) or "proposal" (the backbone's proposal for the target; needs
    ``refine_ratio`` > 0 and a backbone that proposes).
    """

    box_ratio: float = attrs.field(default=0.5, validator=_unit)
    box_jitter: float = attrs.field(default=0.1, validator=_unit)
    tau: float = attrs.field(default=0.01, validator=attrs.validators.ge(0.0))
    resamples: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    max_actions: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    target_iou: float = attrs.field(default=0.9, validator=_unit)
    min_final_iou: float = attrs.field(default=0.5, validator=_unit)
    end_with_stop: bool = True
    click_fallback: bool = True
    per_case: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    seed: int = 0
    prompt_mode: str = attrs.field(default="accumulate", validator=attrs.validators.in_(PROMPT_MODES))
    multimask: bool | None = None
    refine_ratio: float = attrs.field(default=0.0, validator=_unit)
    refine_kinds: tuple[str, ...] = attrs.field(
        default=DEGRADATIONS, converter=lambda v: tuple(v.split(",")) if isinstance(v, str) else tuple(v),
        validator=attrs.validators.deep_iterable(attrs.validators.in_(DEGRADATIONS)))
    refine_strength: float = attrs.field(default=0.15, validator=_unit)
    refine_from: str = attrs.field(default="degrade", validator=attrs.validators.in_(REFINE_FROM))

    def __attrs_post_init__(self) -> None:
        if self.refine_from == PROPOSAL and not self.refine_ratio:
            raise ValueError("refine_from=proposal starts the refine strategy's episodes from "
                             "proposals: set refine_ratio too (1 for every episode)")


def make_config(config: HybridConfig | None = None, **options) -> HybridConfig:
    """``config`` (or the defaults) with ``options`` replacing fields; unknown names raise."""
    base = config or HybridConfig()
    fields = {f.name for f in attrs.fields(HybridConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise InvalidInput(f"unknown hybrid generator option(s) {unknown}; "
                           f"the options are {', '.join(sorted(fields))}")
    try:
        return attrs.evolve(base, **options)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"invalid hybrid generator option: {exc}") from None


class HybridGenerator(TrajectoryGenerator):
    """Box-to-Point / Sequential-Click expert trajectories (see the module docstring)."""

    def __init__(self, config: HybridConfig | None = None, **options) -> None:
        self.config = make_config(config, **options)

    def options(self) -> dict:
        """The options as JSON values (the job manifest's ``generator_options``): the refine
        options only when the strategy is on, so that sets made without it still resume;
        ``refine_from`` only when it is "proposal" (then without the degradations' options,
        which do not apply)."""
        options = json.loads(json.dumps(attrs.asdict(self.config)))
        if not self.config.refine_ratio:
            drop: tuple[str, ...] = ("refine_ratio", "refine_kinds", "refine_strength", "refine_from")
        elif self.config.refine_from == PROPOSAL:
            drop = ("refine_kinds", "refine_strength")
        else:
            drop = ("refine_from",)
        for name in drop:
            options.pop(name)
        return options

    def check_backbone(self, segmenter: Segmenter | str) -> None:
        """Refuse a backbone that cannot propose when refine episodes start from proposals
        (:class:`InvalidInput` naming those that can; a registered name is checked without
        loading it)."""
        if self.config.refine_ratio and self.config.refine_from == PROPOSAL:
            check_can_propose(segmenter)

    def strategy(self, case_id: str, sample: int = 0) -> str:
        """"box" (Box-to-Point), "click" (Sequential-Click) or "refine" for this case and sample."""
        rng = np.random.default_rng(_seed_words(self.config.seed, case_id, sample))
        first = "box" if rng.random() < self.config.box_ratio else "click"
        if self.config.refine_ratio and rng.random() < self.config.refine_ratio:
            return "refine"
        return first

    def policy(self, strategy: str, sample: int = 0) -> ExpertPolicy:
        """The expert that runs one trajectory of ``strategy``."""
        cfg = self.config
        policy = ExpertPolicy(first=strategy, box_jitter=cfg.box_jitter, tau=cfg.tau,
                              candidates=cfg.resamples + 1, target_iou=cfg.target_iou,
                              seed=_seed_int(cfg.seed, sample), first_tries=cfg.resamples + 1,
                              max_actions=cfg.max_actions if cfg.end_with_stop else None)
        policy.name = "expert"
        return policy

    def attempt(self, case: Case, segmenter: Segmenter) -> Iterator[Attempt]:
        gt = None if case.ground_truth is None else np.asarray(case.ground_truth, dtype=bool)
        for sample in range(self.config.per_case):
            strategy = self.strategy(case.id, sample)
            meta = {**case.meta, "strategy": strategy, "sample": sample, "generator": "hybrid",
                    "seed": self.config.seed}
            if gt is None or not gt.any():
                yield Attempt(Trajectory(case.target, case.image.shape[:2], case_id=case.id,
                                         stop_reason="empty_ground_truth", meta=meta),
                              False, "empty_ground_truth")
                continue
            trajectory = self._run(case, gt, strategy, sample, segmenter, meta)
            if strategy == "click" and not trajectory.executed_steps and self.config.click_fallback:
                meta = {**meta, "strategy": "box", "requested_strategy": "click"}
                trajectory = self._run(case, gt, "box", sample, segmenter, meta)
            kept, reason = self.verdict(trajectory)
            yield Attempt(trajectory, kept, reason)

    def _run(self, case: Case, gt: np.ndarray, strategy: str, sample: int,
             segmenter: Segmenter, meta: dict) -> Trajectory:
        if strategy == "refine" and self.config.refine_from == PROPOSAL:
            trajectory = self._agent("box", sample, segmenter).run(
                case.image, case.target, gt, case_id=case.id, meta=meta, initial_mask=PROPOSAL)
            if trajectory.initial is None:  # nothing matched: Box-to-Point from nothing
                trajectory = attrs.evolve(trajectory, meta={
                    **trajectory.meta, "strategy": "box", "requested_strategy": "refine"})
            return trajectory
        if strategy == "refine":
            rng = np.random.default_rng(_seed_words(self.config.seed + 1, case.id, sample))
            kind = self.config.refine_kinds[int(rng.integers(len(self.config.refine_kinds)))]
            initial = Degradation(kind, self.config.refine_strength).apply(gt, rng)
            meta["degradation"] = kind
            return self._agent("box", sample, segmenter).run(
                case.image, case.target, gt, case_id=case.id, meta=meta, initial_mask=initial,
                initial_source=f"degraded:{kind}")
        return self._agent(strategy, sample, segmenter).run(case.image, case.target, gt,
                                                            case_id=case.id, meta=meta)

    def generate(self, case: Case, segmenter: Segmenter) -> Iterator[Trajectory]:
        for attempt in self.attempt(case, segmenter):
            if attempt.kept:
                yield attempt.trajectory

    def verdict(self, trajectory: Trajectory) -> tuple[bool, str]:
        """(kept, reason): dropped without a mask or below ``min_final_iou``."""
        steps = trajectory.executed_steps
        if not steps and trajectory.initial is None:
            return False, "no_first_action"
        final_iou = steps[-1].iou if steps else cast(InitialMask, trajectory.initial).iou
        if final_iou is None or final_iou < self.config.min_final_iou:
            return False, "low_final_iou"
        return True, ""

    def _agent(self, strategy: str, sample: int, segmenter: Segmenter) -> Agent:
        cfg = self.config
        turns = cfg.max_actions + (1 if cfg.end_with_stop else 0)
        # one failure ends the episode: the expert already resampled its first action
        return Agent(self.policy(strategy, sample), segmenter, max_turns=turns,
                     multimask=cfg.multimask, prompt_mode=cfg.prompt_mode, max_failures=1)


def _seed_words(seed: int, case_id: str, sample: int) -> list[int]:
    digest = hashlib.sha256(f"{case_id}\x00{sample}".encode()).digest()
    return [int(seed) & 0xFFFFFFFF, int.from_bytes(digest[:8], "little"), int(sample)]


def _seed_int(seed: int, sample: int) -> int:
    """The expert's seed for sample ``sample`` (sample 0 uses ``seed`` itself)."""
    if sample == 0:
        return int(seed)
    digest = hashlib.sha256(f"{seed}\x00{sample}".encode()).digest()
    return int.from_bytes(digest[:7], "little")

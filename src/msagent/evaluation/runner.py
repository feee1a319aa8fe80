"""The evaluation job: cases × backbones × methods → records, masks and overlays on disk.

Work is case-major (each image is encoded once per backbone and shared by all methods). Every
finished unit is stored at once (see :mod:`msagent.evaluation.records`), so an interrupted
run resumes where it stopped. A case that fails (API error, unreadable file, bad mask) is
recorded with its error and the run goes on. ``concurrency > 1`` runs episodes concurrently
on an asyncio loop (:meth:`msagent.Agent.arun`, for API policies); ``ray_address`` sends
cases to a Ray cluster (:mod:`msagent.evaluation.distributed`).

Whole-volume cases (:class:`msagent.datasets.VolumeCase`, e.g. ``msagent eval --volumes``) run
the 3-D protocols (:mod:`msagent.evaluation.volume_protocols`): ``agent`` through
:class:`msagent.VolumeAgent` (key slice, propagation, ``review_slices`` reviews) and ``cvpr``
in its 3-D form; ``noc`` has no 3-D form, so a volume under it is recorded as skipped (its
volume is not read for that). One record per volume, scored in 3-D with the voxel spacing;
its mask is written as NIfTI on the input's grid (``.npz`` for an array without geometry),
its overlay is the key slice, its trajectory the :class:`msagent.VolumeTrajectory`.

Which units are left and how a case is loaded and checked: :mod:`msagent.evaluation.units`;
what a unit leaves on disk: :mod:`msagent.evaluation.storage`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from msagent.agent import Agent
from msagent.agent.proposal import check_can_propose
from msagent.backbones.segmenter import Segmenter
from msagent.datasets.volumes import LoadedVolume
from msagent.errors import InvalidInput
from msagent.evaluation import protocols, volume_protocols
from msagent.evaluation.config import EvalConfig, Method
from msagent.evaluation.records import CaseRecord, RecordStore
from msagent.evaluation.storage import UnitResult, package, store_result
from msagent.evaluation.units import case_kind, checked_case, checked_volume, pending_units, volume_skip
from msagent.io.atomic import atomic_write, read_json_file
from msagent.plugins.loading import instance_of, name_of
from msagent.policies.base import Policy
from msagent.types import Case
from msagent.volume.agent import VolumeAgent
from msagent.volume.trajectory import VolumeTrajectory

log = logging.getLogger(__name__)


@attrs.define
class Evaluation:
    """An evaluation directory and what to run in it (see :func:`msagent.evaluation.evaluate`)."""

    out_dir: Path | None = attrs.field(converter=attrs.converters.optional(Path))
    backbones: Sequence[Any]
    methods: Sequence[Method]
    config: EvalConfig = EvalConfig()
    backbone_options: Mapping[str, Any] = attrs.field(factory=dict)
    concurrency: int = 1
    retry_errors: bool = True
    save_masks: bool = True
    save_trajectories: bool = True
    store: RecordStore | None = attrs.field(init=False, default=None)
    _segmenters: dict = attrs.field(init=False, factory=dict)
    _agents: dict = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        if not self.backbones or not self.methods:
            raise InvalidInput("an evaluation needs at least one backbone and one policy or protocol")
        self._check_proposals()
        if self.out_dir is None:  # a compute-only worker (Ray)
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._check_run_file()
        self.store = RecordStore(self.out_dir / "records.jsonl")

    def record_store(self) -> RecordStore:
        """The records in ``out_dir``; a compute-only evaluation (no ``out_dir``) keeps none."""
        if self.store is None:
            raise InvalidInput("this evaluation has no output directory (a compute-only worker): "
                               "it keeps no records")
        return self.store

    # -- setup -----------------------------------------------------------------
    def _check_run_file(self) -> None:
        assert self.out_dir is not None  # called by __attrs_post_init__ when there is one
        path = self.out_dir / "run.json"
        config = _config_dict(self.config)
        names = {"backbones": [name_of(b) for b in self.backbones],
                 "methods": [m.name for m in self.methods]}
        if path.exists():
            previous = read_json_file(path, "evaluation settings file",
                                      f"delete {path} (the records are kept) or use another folder")
            if isinstance(previous.get("config"), dict):  # settings added since: their defaults
                previous["config"] = {**_config_dict(EvalConfig()), **previous["config"]}
            if previous.get("config") != config:
                raise InvalidInput(
                    f"{self.out_dir} holds results made with other settings "
                    f"({previous.get('config')}); use another output directory or the same settings")
            for key in names:
                names[key] = list(dict.fromkeys(previous.get(key, []) + names[key]))
        atomic_write(path, json.dumps({"config": config, **names}, indent=1).encode())

    def _check_proposals(self, loaded: bool = False) -> None:
        """Under ``refine_from="proposal"`` every backbone must propose (``can_propose``):
        refused before any case runs (names are checked without loading them; ``loaded``:
        the loaded instances, once :meth:`prepare` has them)."""
        if not self.config.refines_proposals or not any(m.protocol == "agent" for m in self.methods):
            return
        for backbone in self.backbones:
            check_can_propose(self.segmenter(backbone) if loaded else backbone)

    def segmenter(self, backbone: Any) -> Segmenter:
        name = name_of(backbone)
        if name not in self._segmenters:
            self._segmenters[name] = instance_of("segmenter", backbone, self.backbone_options)
        return self._segmenters[name]

    def agent(self, backbone: Any, method: Method) -> Agent:
        key = (name_of(backbone), method.name)
        if key not in self._agents:
            policy = instance_of("policy", method.policy, method.options)
            if not isinstance(policy, Policy):
                raise InvalidInput(f"{policy!r} is not a Policy or a registered policy name")
            self._agents[key] = Agent(policy, self.segmenter(backbone), max_turns=self.config.max_turns,
                                      multimask=self.config.multimask, prompt_mode=self.config.prompt_mode)
        return self._agents[key]

    def volume_agent(self, backbone: Any, method: Method) -> VolumeAgent:
        """The 3-D agent of an agent method: its policy and backbone, this config's turns,
        prompt mode, multimask, review slices and propagation."""
        key = (name_of(backbone), method.name, "volume")
        if key not in self._agents:
            cfg = self.config
            self._agents[key] = VolumeAgent(
                self.agent(backbone, method).policy, self.segmenter(backbone),
                max_turns=cfg.max_turns, propagation=cfg.propagation,
                review_slices=cfg.review_slices,
                agent_options={"prompt_mode": cfg.prompt_mode, "multimask": cfg.multimask})
        return self._agents[key]

    def prepare(self) -> None:
        """Load every backbone and policy now, so a bad name fails before any case runs."""
        for backbone in self.backbones:
            self.segmenter(backbone)
            for method in self.methods:
                if method.protocol == "agent":
                    self.agent(backbone, method)
        self._check_proposals(loaded=True)

    # -- the units of work -----------------------------------------------------
    def units(self, cases: Iterable[Any], limit: int | None = None) -> Iterator[tuple[Any, Any, Method]]:
        """(case, backbone, method) triples still to run, case-major; skips done keys
        (:func:`msagent.evaluation.units.pending_units`)."""
        return pending_units(cases, self.backbones, self.methods, self.config,
                             self.record_store().done(self.retry_errors), name_of, limit)

    def compute(self, case: Any, backbone: Any, method: Method) -> tuple[CaseRecord, Any]:
        """Run one unit; never raises for a case's own failure (the record says why)."""
        start = time.perf_counter()
        base = self._base_record(case, backbone, method)
        skip = volume_skip(method, self.config) if base.kind == "volume" else None
        if skip is not None:
            return attrs.evolve(base, status="skipped", error=skip), None
        try:
            checked = checked_volume(case) if base.kind == "volume" else checked_case(case)
            outcome = None if checked is None else self._outcome(checked, backbone, method)
        except Exception as exc:  # noqa: BLE001 - a failing case is recorded, the run goes on
            return self._settle(base, start, error=exc)
        return self._settle(base, start, outcome)

    async def acompute(self, case: Any, backbone: Any, method: Method) -> tuple[CaseRecord, Any]:
        """:meth:`compute` with agent episodes on the event loop (others in a thread)."""
        if method.protocol != "agent" or not isinstance(case, Case):  # volumes, failed loads
            return await asyncio.to_thread(self.compute, case, backbone, method)
        start = time.perf_counter()
        base = self._base_record(case, backbone, method)
        try:
            checked = await asyncio.to_thread(checked_case, case)
            outcome = None if checked is None else await protocols.arun_agent(
                self.agent(backbone, method), checked, self.config.nsd_tolerance,
                self.config.initial(checked))
        except Exception as exc:  # noqa: BLE001 - a failing case is recorded, the run goes on
            return self._settle(base, start, error=exc)
        return self._settle(base, start, outcome)

    def _settle(self, base: CaseRecord, start: float, outcome: protocols.Outcome | None = None,
                error: Exception | None = None) -> tuple[CaseRecord, Any]:
        """A unit's record and outcome: an error (logged, the run goes on), skipped for an
        empty ground truth (no outcome), or the outcome's scores."""
        if error is not None:
            log.warning("case %s (%s/%s) failed: %s", base.case_id, base.backbone, base.method, error)
            return attrs.evolve(base, status="error", error=f"{type(error).__name__}: {error}",
                                seconds=time.perf_counter() - start), None
        if outcome is None:
            return attrs.evolve(base, status="skipped", error="empty ground truth"), None
        return self._record(base, outcome, time.perf_counter() - start), outcome

    def _outcome(self, case: Case | LoadedVolume, backbone: Any, method: Method) -> protocols.Outcome:
        cfg = self.config
        if isinstance(case, LoadedVolume):
            return self._volume_outcome(case, backbone, method)
        if method.protocol == "agent":
            return protocols.run_agent(self.agent(backbone, method), case, cfg.nsd_tolerance,
                                       cfg.initial(case))
        segmenter = self.segmenter(backbone)
        if method.protocol == "noc":
            return protocols.run_noc(segmenter, case, cfg.max_clicks, cfg.noc_thresholds,
                                     cfg.multimask, cfg.noc_stop_iou, cfg.nsd_tolerance)
        return protocols.run_cvpr(segmenter, case, cfg.cvpr_clicks, cfg.multimask, cfg.nsd_tolerance)

    def _volume_outcome(self, case: LoadedVolume, backbone: Any, method: Method) -> protocols.Outcome:
        cfg, stack = self.config, case.sliced.slices
        if method.protocol == "agent":
            outcome = volume_protocols.run_volume_agent(
                self.volume_agent(backbone, method), stack, case.target, case.ground_truth,
                case_id=case.id, tolerance=cfg.nsd_tolerance)
            trajectory = outcome.trajectory
            assert isinstance(trajectory, VolumeTrajectory)  # run_volume_agent's: the 3-D run
            values = {**outcome.values, "propagation": trajectory.propagation}
            return attrs.evolve(outcome, values=values)
        return volume_protocols.run_cvpr_3d(
            self.segmenter(backbone), stack, case.ground_truth, clicks=cfg.cvpr_clicks,
            propagation=cfg.propagation, multimask=cfg.multimask, tolerance=cfg.nsd_tolerance)

    def _base_record(self, case: Any, backbone: Any, method: Method) -> CaseRecord:
        meta = getattr(case, "meta", {}) or {}
        target = getattr(case, "target", "") or ""
        image = getattr(case, "image", None)
        height, width = (image.shape[:2] if isinstance(image, np.ndarray) and image.ndim >= 2 else (0, 0))
        kind, slices = case_kind(case), 0
        if isinstance(case, LoadedVolume):
            slices, (height, width) = case.sliced.slices.count, case.sliced.slices.image_size
        # a volume's label value is a number: its class names it
        label = (meta.get("class") if kind == "volume" else None) or meta.get("label") \
            or meta.get("class") or target
        return CaseRecord(
            backbone=name_of(backbone), method=method.name, case_id=str(case.id),
            protocol=method.protocol, dataset=str(meta.get("dataset", "")),
            modality=str(meta.get("modality", "")), label=str(label), target=target,
            height=int(height), width=int(width), kind=kind, slices=int(slices))

    def _record(self, base: CaseRecord, outcome: protocols.Outcome, seconds: float) -> CaseRecord:
        values = dict(outcome.values)
        if base.protocol == "noc":
            values["max_clicks"] = self.config.max_clicks
        return attrs.evolve(
            base, dice=values.pop("dice"), iou=values.pop("iou"), nsd=values.pop("nsd"),
            turns=outcome.turns, stop_reason=outcome.stop_reason,
            curves={k: [float(v) for v in c] for k, c in outcome.curves.items()},
            values=values, usage=dict(outcome.usage), seconds=seconds)

    # -- storing (msagent.evaluation.storage) -----------------------------------
    def package(self, case: Any, record: CaseRecord, outcome: Any) -> UnitResult:
        """What gets stored for a unit: the record, mask, overlay thumbnail and trajectory."""
        return package(case, record, outcome, save_masks=self.save_masks,
                       save_trajectories=self.save_trajectories)

    def store_result(self, result: UnitResult) -> CaseRecord:
        """Write the unit's files, then its record (so a record never lacks its files)."""
        store = self.record_store()
        assert self.out_dir is not None  # the store is made in out_dir
        return store_result(result, self.out_dir, store, save_masks=self.save_masks)

    def run_unit(self, case: Any, backbone: Any, method: Method) -> UnitResult:
        record, outcome = self.compute(case, backbone, method)
        return self.package(case, record, outcome)


def _config_dict(config: EvalConfig) -> dict[str, Any]:
    """``config`` as stored in ``run.json``."""
    out = attrs.asdict(config)
    out["noc_thresholds"] = list(out["noc_thresholds"])
    return out

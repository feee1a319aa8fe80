"""The evaluation job: cases × backbones × methods → records, masks and overlays on disk.

Work is case-major (each image is encoded once per backbone and shared by all methods). Every
finished unit is stored at once (see :mod:`msagent.evaluation.records`), so an interrupted
run resumes where it stopped. A case that fails (API error, unreadable file, bad mask) is
recorded with its error and the run goes on. ``concurrency > 1`` runs episodes concurrently
on an asyncio loop (:meth:`msagent.Agent.arun`, for API policies); ``ray_address`` sends
cases to a Ray cluster (:mod:`msagent.evaluation.distributed`).
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

from ..agent import Agent
from ..api import load_backbone, load_policy
from ..errors import InvalidInput
from ..io.atomic import atomic_write, read_json_file
from ..policy import Policy
from ..segmenter import Segmenter
from ..types import Case
from . import protocols
from .records import CaseRecord, RecordStore, safe_name

log = logging.getLogger(__name__)
PROTOCOLS = ("agent", "noc", "cvpr")


@attrs.frozen
class Method:
    """What drives the backbone: ``protocol`` "agent" with a ``policy`` (name or instance),
    or the click protocols "noc" / "cvpr" (no policy)."""

    protocol: str = attrs.field(validator=attrs.validators.in_(PROTOCOLS))
    policy: Any = None
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=dict, hash=False)

    @property
    def name(self) -> str:
        if self.protocol != "agent":
            return self.protocol
        return self.policy if isinstance(self.policy, str) else (self.policy.name or "policy")


def methods_from(policies: Sequence[Any] = (), protocols_: Sequence[str] = (),
                 policy_options: Mapping[str, Any] | None = None) -> list[Method]:
    """Agent methods for ``policies`` plus the click ``protocols_`` ("noc", "cvpr")."""
    out = [Method("agent", p, policy_options or {}) for p in policies]
    for name in protocols_:
        if name not in ("noc", "cvpr"):
            raise InvalidInput(f"unknown protocol {name!r}; use noc (RITM NoC@85/90) or cvpr "
                               "(CVPR 2025: box + 5 clicks)")
        out.append(Method(name))
    return out


@attrs.frozen
class EvalConfig:
    """Settings that change results (stored in ``run.json``; a resume must match them)."""

    max_turns: int = 5
    prompt_mode: str = "accumulate"
    multimask: bool | None = None
    max_clicks: int = 20
    noc_thresholds: tuple[float, ...] = attrs.field(default=protocols.NOC_THRESHOLDS, converter=tuple)
    noc_stop_iou: float | None = None
    cvpr_clicks: int = protocols.CVPR_CLICKS
    nsd_tolerance: float = 2.0
    # the refine protocol: agent episodes start from an initial mask (msagent.refine)
    refine_from: str | None = None  # "degrade:erode,dilate,..." or a folder of predictions
    refine_strength: float = 0.15
    refine_seed: int = 0

    def initial(self, case: Case) -> tuple[np.ndarray, str] | None:
        """The initial mask of ``case`` under the refine protocol (None without it)."""
        if self.refine_from is None:
            return None
        from ..refine import initial_for_case

        return initial_for_case(case, self.refine_from, self.refine_strength, self.refine_seed)


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
        if self.out_dir is None:  # a compute-only worker (Ray)
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._check_run_file()
        self.store = RecordStore(self.out_dir / "records.jsonl")

    # -- setup -----------------------------------------------------------------
    def _check_run_file(self) -> None:
        path = self.out_dir / "run.json"
        config = attrs.asdict(self.config)
        config["noc_thresholds"] = list(config["noc_thresholds"])
        names = {"backbones": [self._backbone_name(b) for b in self.backbones],
                 "methods": [m.name for m in self.methods]}
        if path.exists():
            previous = read_json_file(path, "evaluation settings file",
                                      f"delete {path} (the records are kept) or use another folder")
            if previous.get("config") != config:
                raise InvalidInput(
                    f"{self.out_dir} holds results made with other settings "
                    f"({previous.get('config')}); use another output directory or the same settings")
            for key in names:
                names[key] = list(dict.fromkeys(previous.get(key, []) + names[key]))
        atomic_write(path, json.dumps({"config": config, **names}, indent=1).encode())

    @staticmethod
    def _backbone_name(backbone: Any) -> str:
        return backbone if isinstance(backbone, str) else (backbone.name or type(backbone).__name__)

    def segmenter(self, backbone: Any) -> Segmenter:
        name = self._backbone_name(backbone)
        if name not in self._segmenters:
            self._segmenters[name] = (load_backbone(backbone, **self.backbone_options)
                                      if isinstance(backbone, str) else backbone)
        return self._segmenters[name]

    def agent(self, backbone: Any, method: Method) -> Agent:
        key = (self._backbone_name(backbone), method.name)
        if key not in self._agents:
            policy = method.policy
            if isinstance(policy, str):
                policy = load_policy(policy, **method.options)
            if not isinstance(policy, Policy):
                raise InvalidInput(f"{policy!r} is not a Policy or a registered policy name")
            self._agents[key] = Agent(policy, self.segmenter(backbone), max_turns=self.config.max_turns,
                                      multimask=self.config.multimask, prompt_mode=self.config.prompt_mode)
        return self._agents[key]

    def prepare(self) -> None:
        """Load every backbone and policy now, so a bad name fails before any case runs."""
        for backbone in self.backbones:
            self.segmenter(backbone)
            for method in self.methods:
                if method.protocol == "agent":
                    self.agent(backbone, method)

    # -- the units of work -----------------------------------------------------
    def units(self, cases: Iterable[Any], limit: int | None = None) -> Iterator[tuple[Any, Any, Method]]:
        """(case, backbone, method) triples still to run, case-major; skips done keys."""
        done = self.store.done(self.retry_errors)
        seen: set[str] = set()
        for index, item in enumerate(cases):
            if limit is not None and index >= limit:
                break
            case_id = str(getattr(item, "id", index))
            if case_id in seen:
                log.warning("duplicate case id %r: only its first occurrence is evaluated", case_id)
                continue
            seen.add(case_id)
            todo = [(b, m) for b in self.backbones for m in self.methods
                    if (self._backbone_name(b), m.name, case_id) not in done]
            if not todo:
                continue
            case = _load(item)
            for backbone, method in todo:
                yield case, backbone, method

    def compute(self, case: Any, backbone: Any, method: Method) -> tuple[CaseRecord, Any]:
        """Run one unit; never raises for a case's own failure (the record says why)."""
        start = time.perf_counter()
        base = self._base_record(case, backbone, method)
        try:
            case = _checked(case)
            if case is None:
                return attrs.evolve(base, status="skipped", error="empty ground truth"), None
            outcome = self._outcome(case, backbone, method)
        except Exception as exc:  # noqa: BLE001 - a failing case is recorded, the run goes on
            log.warning("case %s (%s/%s) failed: %s", base.case_id, base.backbone, base.method, exc)
            return attrs.evolve(base, status="error", error=f"{type(exc).__name__}: {exc}",
                                seconds=time.perf_counter() - start), None
        return self._record(base, outcome, time.perf_counter() - start), outcome

    async def acompute(self, case: Any, backbone: Any, method: Method) -> tuple[CaseRecord, Any]:
        """:meth:`compute` with agent episodes on the event loop (others in a thread)."""
        if method.protocol != "agent" or isinstance(case, _Failed):
            return await asyncio.to_thread(self.compute, case, backbone, method)
        start = time.perf_counter()
        base = self._base_record(case, backbone, method)
        try:
            checked = await asyncio.to_thread(_checked, case)
            if checked is None:
                return attrs.evolve(base, status="skipped", error="empty ground truth"), None
            outcome = await protocols.arun_agent(self.agent(backbone, method), checked,
                                                 self.config.nsd_tolerance,
                                                 self.config.initial(checked))
        except Exception as exc:  # noqa: BLE001
            log.warning("case %s (%s/%s) failed: %s", base.case_id, base.backbone, base.method, exc)
            return attrs.evolve(base, status="error", error=f"{type(exc).__name__}: {exc}",
                                seconds=time.perf_counter() - start), None
        return self._record(base, outcome, time.perf_counter() - start), outcome

    def _outcome(self, case: Case, backbone: Any, method: Method) -> protocols.Outcome:
        cfg = self.config
        if method.protocol == "agent":
            return protocols.run_agent(self.agent(backbone, method), case, cfg.nsd_tolerance,
                                       cfg.initial(case))
        segmenter = self.segmenter(backbone)
        if method.protocol == "noc":
            return protocols.run_noc(segmenter, case, cfg.max_clicks, cfg.noc_thresholds,
                                     cfg.multimask, cfg.noc_stop_iou, cfg.nsd_tolerance)
        return protocols.run_cvpr(segmenter, case, cfg.cvpr_clicks, cfg.multimask, cfg.nsd_tolerance)

    def _base_record(self, case: Any, backbone: Any, method: Method) -> CaseRecord:
        meta = getattr(case, "meta", {}) or {}
        target = getattr(case, "target", "") or ""
        image = getattr(case, "image", None)
        height, width = (image.shape[:2] if isinstance(image, np.ndarray) and image.ndim >= 2 else (0, 0))
        return CaseRecord(
            backbone=self._backbone_name(backbone), method=method.name, case_id=str(case.id),
            protocol=method.protocol, dataset=str(meta.get("dataset", "")),
            modality=str(meta.get("modality", "")),
            label=str(meta.get("label") or meta.get("class") or target), target=target,
            height=int(height), width=int(width))

    def _record(self, base: CaseRecord, outcome: protocols.Outcome, seconds: float) -> CaseRecord:
        values = dict(outcome.values)
        if base.protocol == "noc":
            values["max_clicks"] = self.config.max_clicks
        return attrs.evolve(
            base, dice=values.pop("dice"), iou=values.pop("iou"), nsd=values.pop("nsd"),
            turns=outcome.turns, stop_reason=outcome.stop_reason,
            curves={k: [float(v) for v in c] for k, c in outcome.curves.items()},
            values=values, usage=dict(outcome.usage), seconds=seconds)

    # -- storing ---------------------------------------------------------------
    def package(self, case: Any, record: CaseRecord, outcome: Any) -> "UnitResult":
        """What gets stored for a unit: the record, mask, overlay thumbnail and trajectory."""
        from .report import case_overlay

        if outcome is None:
            return UnitResult(record)
        checked = _checked(case)
        overlay = case_overlay(checked.image, checked.ground_truth, outcome.mask,
                               trajectory=getattr(outcome, "trajectory", None))
        trajectory = outcome.trajectory if self.save_trajectories else None
        return UnitResult(record, outcome.mask, overlay,
                          None if trajectory is None else trajectory.to_json())

    def store_result(self, result: "UnitResult") -> CaseRecord:
        """Write the unit's files, then its record (so a record never lacks its files)."""
        from ..io import save_mask_png, save_png

        record = result.record
        folder = Path(safe_name(record.backbone)) / safe_name(record.method)
        stem = safe_name(record.case_id)
        changes: dict[str, str] = {}
        if result.mask is not None and self.save_masks:
            changes["mask_file"] = str(Path("masks") / folder / f"{stem}.png")
            save_mask_png(result.mask, self.out_dir / changes["mask_file"])
        if result.overlay is not None:
            changes["overlay_file"] = str(Path("overlays") / folder / f"{stem}.png")
            save_png(result.overlay, self.out_dir / changes["overlay_file"])
        if result.trajectory_json is not None:
            changes["trajectory_file"] = str(Path("trajectories") / folder / f"{stem}.json")
            atomic_write(self.out_dir / changes["trajectory_file"], result.trajectory_json.encode())
        record = attrs.evolve(record, **changes)
        self.store.append(record)
        return record

    def run_unit(self, case: Any, backbone: Any, method: Method) -> "UnitResult":
        record, outcome = self.compute(case, backbone, method)
        return self.package(case, record, outcome)


@attrs.frozen(eq=False)
class UnitResult:
    """A computed unit, ready to store (picklable: what Ray workers send back)."""

    record: CaseRecord
    mask: np.ndarray | None = None
    overlay: np.ndarray | None = None
    trajectory_json: str | None = None


@attrs.frozen(eq=False)
class _Failed:
    """A case that could not be loaded: keeps its id and the error for the record."""

    id: str
    error: Exception
    target: str = ""
    meta: Mapping[str, Any] = attrs.field(factory=dict)


def _load(item: Any) -> Any:
    """A Case, or the result of ``item.load()`` for lazy items; a failing load is kept."""
    if isinstance(item, Case) or not hasattr(item, "load"):
        return item
    try:
        return item.load()
    except Exception as exc:  # noqa: BLE001
        return _Failed(str(item.id), exc)


def _checked(case: Any) -> Case | None:
    """The case if it can be evaluated, None if its ground truth is empty; raises otherwise."""
    from ..io import to_mask, to_rgb_uint8

    if isinstance(case, _Failed):
        raise case.error
    if not isinstance(case, Case):
        raise InvalidInput(f"expected a msagent.Case, got {type(case).__name__}")
    if case.ground_truth is None:
        raise InvalidInput("the case has no ground truth; evaluation needs one")
    image = to_rgb_uint8(case.image)
    gt = to_mask(case.ground_truth, image.shape[:2], allow_empty=True)
    if not gt.any():
        return None
    return attrs.evolve(case, image=image, ground_truth=gt)

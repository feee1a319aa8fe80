"""The units of an evaluation: which (case, backbone, method) triples are still to run, and
the case loading and checks a unit needs before it is computed.

A case that cannot be loaded becomes a :class:`Failed` placeholder (its id and error), so its
units are recorded as errors and the run goes on. A volume under a method with no 3-D form
(:func:`volume_skip`) is recorded as skipped, without reading the volume when no other
method needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from msagent.datasets.volumes import LoadedVolume
from msagent.errors import InvalidInput
from msagent.types import Case

if TYPE_CHECKING:
    from msagent.evaluation.config import EvalConfig, Method

log = logging.getLogger(__name__)
NOC_ON_VOLUME = "noc has no 3-D form: run it on slice cases (without --volumes)"
REFINE_ON_VOLUME = "the refine protocol (refine_from) has no 3-D form: run volumes without it"


@attrs.frozen(eq=False)
class Failed:
    """A case that could not be loaded: keeps its id and the error for the record."""

    id: str
    error: Exception
    target: str = ""
    meta: Mapping[str, Any] = attrs.field(factory=dict)
    kind: str = "image"


def case_kind(case: Any) -> str:
    """"volume" for a whole-volume case (loaded or not, or failed to load), else "image"."""
    return getattr(case, "kind", "image")


def volume_skip(method: Method, config: EvalConfig) -> str | None:
    """Why ``method`` does not run on a volume case (None: it does)."""
    if method.protocol == "noc":
        return NOC_ON_VOLUME
    if method.protocol == "agent" and config.refine_from is not None:
        return REFINE_ON_VOLUME
    return None


def pending_units(cases: Iterable[Any], backbones: Sequence[Any], methods: Sequence[Method],
                  config: EvalConfig, done: Container[tuple[str, str, str]],
                  backbone_name: Callable[[Any], str],
                  limit: int | None = None) -> Iterator[tuple[Any, Any, Method]]:
    """(case, backbone, method) triples whose (backbone name, method name, case id) key is not
    in ``done``, case-major; each case is loaded once, for all of its units."""
    seen: set[str] = set()
    for index, item in enumerate(cases):
        if limit is not None and index >= limit:
            break
        case_id = str(getattr(item, "id", index))
        if case_id in seen:
            log.warning("duplicate case id %r: only its first occurrence is evaluated", case_id)
            continue
        seen.add(case_id)
        todo = [(b, m) for b in backbones for m in methods
                if (backbone_name(b), m.name, case_id) not in done]
        if not todo:
            continue
        # a volume under noc only is skipped without reading it
        skip_only = case_kind(item) == "volume" and all(volume_skip(m, config) for _, m in todo)
        case = item if skip_only else load_case(item)
        for backbone, method in todo:
            yield case, backbone, method


def load_case(item: Any) -> Any:
    """A Case, or the result of ``item.load()`` for lazy items; a failing load is kept."""
    if isinstance(item, Case) or not hasattr(item, "load"):
        return item
    try:
        return item.load()
    except Exception as exc:  # noqa: BLE001
        if case_kind(item) != "volume":
            return Failed(str(item.id), exc)
        return Failed(str(item.id), exc, item.target, item.meta, "volume")


def checked_volume(case: Any) -> LoadedVolume | None:
    """A loaded volume case, None if its label is absent from the volume; raises otherwise."""
    if isinstance(case, Failed):
        raise case.error
    if not isinstance(case, LoadedVolume):
        raise InvalidInput(f"expected a loaded volume case, got {type(case).__name__}")
    return case if case.ground_truth.any() else None


def checked_case(case: Any) -> Case | None:
    """The case if it can be evaluated, None if its ground truth is empty; raises otherwise."""
    from msagent.io import to_mask, to_rgb_uint8

    if isinstance(case, Failed):
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

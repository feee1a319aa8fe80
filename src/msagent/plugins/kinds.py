"""The kinds of things plugins provide, and what a registration and a plugin failure are.

Each kind has a hook (``msagent_register_<kind>s``), a base class its instances must subclass
and a user-facing label (the segmenter kind is a *backbone* everywhere users see it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import attrs

from msagent.errors import PluginError

KINDS = ("segmenter", "policy", "reward", "trajectory_generator")
#: What users call each kind (the segmenter kind is a *backbone* everywhere users see it).
LABELS = {"segmenter": "backbone", "policy": "policy", "reward": "reward",
          "trajectory_generator": "trajectory generator"}
ALIASES = {"backbone": "segmenter"}
HOOKS = {
    "segmenter": "msagent_register_segmenters",
    "policy": "msagent_register_policies",
    "reward": "msagent_register_rewards",
    "trajectory_generator": "msagent_register_trajectory_generators",
}
_BASES = {
    "segmenter": ("msagent.backbones.segmenter", "Segmenter"),
    "policy": ("msagent.policies.base", "Policy"),
    "reward": ("msagent.reward", "Reward"),
    "trajectory_generator": ("msagent.generation.base", "TrajectoryGenerator"),
}


@attrs.frozen
class Registration:
    """One registered name: what it is, who provides it, and how to build it."""

    name: str
    kind: str
    factory: Callable[..., Any]
    plugin: str  # the plugin (entry point or module) that registered it
    package: str  # the distribution that ships it
    version: str
    description: str = ""


@attrs.frozen
class Failure:
    """A plugin that raised: importing its entry point (``hook`` None) or in one hook."""

    plugin: str
    package: str
    hook: str | None
    error: PluginError
    names: tuple[str, ...] = ()  # what it had registered before it raised


def canonical_kind(kind: str) -> str:
    """``kind`` with its alias resolved ("backbone" -> "segmenter"); ValueError if unknown."""
    kind = ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}; kinds are {', '.join(KINDS)}")
    return kind


def base_class(kind: str) -> type:
    """The class every instance of ``kind`` must be (imported on first use)."""
    module, attr = _BASES[kind]
    return getattr(importlib.import_module(module), attr)

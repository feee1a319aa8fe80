"""Lazy factories: register ``"package.module:Class"`` without importing it (so registering a
torch-based backbone does not import torch), and find the class a registration builds."""

from __future__ import annotations

import importlib
from typing import Any

import attrs

from msagent.errors import PluginError
from msagent.plugins.kinds import Registration


@attrs.frozen
class LazyFactory:
    """A factory for ``"package.module:Class"`` that imports it only when called, so that
    registering a torch-based backbone does not import torch. ``target`` names what it builds;
    :meth:`resolve` imports it without building one."""

    target: str

    @property
    def __name__(self) -> str:
        return f"lazy({self.target})"

    def resolve(self) -> Any:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def __call__(self, **options: Any) -> Any:
        return self.resolve()(**options)


def lazy(target: str) -> LazyFactory:
    """A :class:`LazyFactory` for ``"package.module:Class"``."""
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise PluginError(f"lazy() expects 'module:attribute', got {target!r}")
    return LazyFactory(target)


def factory_class(registration: Registration) -> type | None:
    """The class a registration builds, importing its module if lazy; None for a plain
    function (its class is unknown until it is called) or a module that fails to import."""
    factory = registration.factory
    if isinstance(factory, type):
        return factory
    if isinstance(factory, LazyFactory):
        try:
            built = factory.resolve()
        except Exception:  # a broken plugin is reported when it is loaded, not when listed
            return None
        return built if isinstance(built, type) else None
    return None

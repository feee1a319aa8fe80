"""Plugin discovery (pluggy + the ``msagent`` entry-point group) and the registries.

Plugins load once, lazily, on the first list/load call, never at ``import msagent``.
``MSAGENT_LOAD_PLUGINS`` (comma-separated entry-point names; empty for none) limits which
installed plugins load; the built-in plugin always loads.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .errors import DuplicateRegistration, PluginError, PluginNotFound

KINDS = ("segmenter", "policy", "reward", "trajectory_generator")
_HOOKS = {
    "segmenter": "msagent_register_segmenters",
    "policy": "msagent_register_policies",
    "reward": "msagent_register_rewards",
    "trajectory_generator": "msagent_register_trajectory_generators",
}
_BASES = {
    "segmenter": ("msagent.segmenter", "Segmenter"),
    "policy": ("msagent.policy", "Policy"),
    "reward": ("msagent.reward", "Reward"),
    "trajectory_generator": ("msagent.trajectories", "TrajectoryGenerator"),
}
# Names we know of but that live in separate packages: used to say what to install.
KNOWN_PROVIDERS = {
    ("segmenter", "litemedsam"): "msagent-litemedsam",
    ("segmenter", "sam"): "msagent-sam",
    ("segmenter", "medsam2"): "msagent-medsam2",
    ("segmenter", "sam2"): "msagent-medsam2",
    ("segmenter", "imisnet"): "msagent-imisnet",
    ("policy", "qwen"): "msagent-qwen",
    ("policy", "gpt"): "msagent-gpt",
}
BUILTIN_PLUGIN = "msagent.builtin_plugins"


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


class Registry:
    """All registrations of one PluginManager, per kind, built on first use."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._by_kind: dict[str, dict[str, Registration]] | None = None
        self._lock = threading.Lock()

    def registrations(self, kind: str) -> dict[str, Registration]:
        if kind not in KINDS:
            raise ValueError(f"unknown plugin kind {kind!r}; kinds are {', '.join(KINDS)}")
        with self._lock:
            if self._by_kind is None:
                self._by_kind = {k: self._collect(k) for k in KINDS}
        return self._by_kind[kind]

    def _collect(self, kind: str) -> dict[str, Registration]:
        found: dict[str, Registration] = {}
        distinfo = {id(plugin): dist for plugin, dist in self.pm.list_plugin_distinfo()}
        for impl in getattr(self.pm.hook, _HOOKS[kind]).get_hookimpls():
            dist = distinfo.get(id(impl.plugin))
            package = dist.project_name if dist else "msagent"
            version = dist.version if dist else _core_version()
            register = _make_register(kind, found, impl.plugin_name, package, version)
            impl.function(register=register)
        return found

    def get(self, kind: str, name: str) -> Registration:
        registrations = self.registrations(kind)
        if name in registrations:
            return registrations[name]
        raise PluginNotFound(_not_found_message(kind, name, registrations))

    def load(self, kind: str, name: str, **options: Any) -> Any:
        registration = self.get(kind, name)
        instance = registration.factory(**options)
        base = _base_class(kind)
        if not isinstance(instance, base):
            raise PluginError(
                f"{kind} {name!r} from plugin {registration.plugin!r} built a "
                f"{type(instance).__name__}, which is not a {base.__name__}")
        if not getattr(instance, "name", ""):
            instance.name = name
        return instance


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


def _make_register(kind: str, found: dict, plugin: str, package: str, version: str):
    base = _base_class(kind)

    def register(name: str, factory: Callable[..., Any], description: str = "") -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {kind} with an invalid name {name!r}")
        if isinstance(factory, type) and not issubclass(factory, base):
            raise PluginError(f"plugin {plugin!r} registered {kind} {name!r} as "
                              f"{factory.__name__}, which does not subclass {base.__name__}")
        if not callable(factory):
            raise PluginError(f"plugin {plugin!r} registered {kind} {name!r} with a "
                              "factory that is not callable")
        if name in found:
            raise DuplicateRegistration(
                f"{kind} {name!r} is registered twice: by plugin {found[name].plugin!r} "
                f"(package {found[name].package}) and by plugin {plugin!r} (package {package}); "
                "uninstall one, or limit loading with MSAGENT_LOAD_PLUGINS")
        found[name] = Registration(name, kind, factory, plugin, package, version,
                                   description or _first_doc_line(factory))

    return register


def _first_doc_line(factory: Callable[..., Any]) -> str:
    if isinstance(factory, LazyFactory):  # its docstring is LazyFactory's, not the plugin's
        return ""
    return (factory.__doc__ or "").strip().split("\n")[0]


def _not_found_message(kind: str, name: str, registrations: dict[str, Registration]) -> str:
    available = ", ".join(sorted(registrations)) or "none"
    message = f"no {kind} named {name!r} is installed; available: {available}."
    provider = KNOWN_PROVIDERS.get((kind, name))
    if provider:
        message += f" {name!r} is provided by the package {provider}: pip install {provider}"
        message += " (in this repository: pip install ./plugins/" + provider + ")."
    if os.environ.get("MSAGENT_LOAD_PLUGINS") is not None:
        message += " Note: MSAGENT_LOAD_PLUGINS limits which plugins load."
    return message


def _base_class(kind: str) -> type:
    module, attr = _BASES[kind]
    return getattr(importlib.import_module(module), attr)


def _core_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("msagent")
    except PackageNotFoundError:
        return "0+unknown"


def make_plugin_manager(*, load_entrypoints: bool = True) -> pluggy.PluginManager:
    """A fresh PluginManager with the hookspecs, the built-in plugin and (optionally) the
    installed entry points, filtered by ``MSAGENT_LOAD_PLUGINS``."""
    pm = pluggy.PluginManager("msagent")
    pm.add_hookspecs(hookspecs)
    pm.register(importlib.import_module(BUILTIN_PLUGIN), name="msagent.builtins")
    if load_entrypoints:
        _load_entrypoints(pm)
    return pm


def _load_entrypoints(pm: pluggy.PluginManager) -> None:
    allowed = os.environ.get("MSAGENT_LOAD_PLUGINS")
    if allowed is None:
        pm.load_setuptools_entrypoints("msagent")
        return
    names = {n.strip() for n in allowed.split(",") if n.strip()}
    for name in sorted(names):
        pm.load_setuptools_entrypoints("msagent", name=name)


_registry: Registry | None = None
_registry_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry (built once, lazily)."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = Registry(make_plugin_manager())
        return _registry


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (tests use this; None rebuilds on next use)."""
    global _registry
    with _registry_lock:
        _registry = registry

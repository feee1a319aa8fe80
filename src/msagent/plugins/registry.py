"""Plugin discovery (pluggy + the ``msagent`` entry-point group) and the registries.

Plugins load once, lazily, never at ``import msagent``: the entry points are imported on the
first list/load call, and each kind's hook is called the first time that kind is listed or
loaded. ``MSAGENT_LOAD_PLUGINS`` (comma-separated entry-point names; empty for none) limits
which installed plugins load; the built-in plugin always loads.

A plugin that raises, in its entry point or in one of its hooks, is reported as a
:class:`~msagent.errors.PluginError` naming the plugin and the hook, as a
:class:`~msagent.errors.PluginWarning` when listing, and does not hide the other plugins.

The kinds and their base classes: :mod:`msagent.plugins.kinds`; what a missing name's error
says: :mod:`msagent.plugins.messages`.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

import pluggy

from msagent.errors import DuplicateRegistration, PluginError, PluginNotFound, PluginWarning
from msagent.plugins import hookspecs
from msagent.plugins.factories import LazyFactory
from msagent.plugins.kinds import HOOKS, LABELS, Failure, Registration, base_class, canonical_kind
from msagent.plugins.messages import failed_provider, not_found_message

BUILTIN_PLUGIN = "msagent.plugins.builtin"


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus what explains a missing name: the installed entry points
    (``installed``: name -> package), those ``MSAGENT_LOAD_PLUGINS`` left out, the
    distribution of each loaded plugin, and the entry points that failed to import."""

    def __init__(self) -> None:
        super().__init__("msagent")
        self.installed: dict[str, str] = {}
        self.left_out: set[str] = set()
        self.packages: dict[str, tuple[str, str]] = {}
        self.failures: list[Failure] = []


class Registry:
    """All registrations of one PluginManager, per kind, each kind collected on first use."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._by_kind: dict[str, dict[str, Registration]] = {}
        self._failures: dict[str, list[Failure]] = {}
        self._lock = threading.Lock()

    def registrations(self, kind: str) -> dict[str, Registration]:
        """Name -> :class:`Registration` of one kind; calls that kind's hook the first time."""
        kind = canonical_kind(kind)
        with self._lock:
            if kind not in self._by_kind:
                self._by_kind[kind] = self._collect(kind)
        return self._by_kind[kind]

    def failures(self, kind: str) -> list[Failure]:
        """The plugins that raised while providing ``kind``: broken entry points and hooks."""
        kind = canonical_kind(kind)
        self.registrations(kind)
        return [*getattr(self.pm, "failures", ()), *self._failures.get(kind, ())]

    def _collect(self, kind: str) -> dict[str, Registration]:
        found: dict[str, Registration] = {}
        self._failures[kind] = []
        for impl in getattr(self.pm.hook, HOOKS[kind]).get_hookimpls():
            package, version = self._provenance(impl.plugin, impl.plugin_name)
            mine: dict[str, Registration] = {}
            refusals: list[PluginError] = []
            register = _make_register(kind, found, mine, refusals, impl.plugin_name, package, version)
            try:
                impl.function(register=register)
            except Exception as exc:
                if any(exc is refusal for refusal in refusals):
                    raise  # register() refused a registration: a contract error, raised at once
                failure = _hook_failure(kind, impl.plugin_name, package, exc, tuple(mine))
                self._failures[kind].append(failure)
                warnings.warn(str(failure.error), PluginWarning, stacklevel=4)
                continue
            found.update(mine)
        return found

    def _provenance(self, plugin: object, plugin_name: str) -> tuple[str, str]:
        packages = getattr(self.pm, "packages", {})
        if plugin_name in packages:
            return packages[plugin_name]
        for loaded, dist in self.pm.list_plugin_distinfo():
            if loaded is plugin:
                return dist.project_name, dist.version
        return "msagent", _core_version()

    def get(self, kind: str, name: str) -> Registration:
        """The registration of ``name``; :class:`PluginNotFound` lists what is available,
        and :class:`PluginError` when the plugin that provides it is broken."""
        kind = canonical_kind(kind)
        registrations = self.registrations(kind)
        if name in registrations:
            return registrations[name]
        failures = self.failures(kind)
        broken = failed_provider(kind, name, failures)
        if broken is not None:
            raise PluginError(f"{LABELS[kind]} {name!r} is provided by plugin {broken.plugin!r}, "
                              f"which is broken: {broken.error}") from broken.error.__cause__
        raise PluginNotFound(not_found_message(kind, name, registrations, self.pm, failures))

    def load(self, kind: str, name: str, **options: Any) -> Any:
        """Build ``name`` with ``options``; the instance is checked against the kind's base."""
        kind = canonical_kind(kind)
        registration = self.get(kind, name)
        instance = registration.factory(**options)
        base: type[Any] = base_class(kind)
        if not isinstance(instance, base):
            raise PluginError(
                f"{LABELS[kind]} {name!r} from plugin {registration.plugin!r} built a "
                f"{type(instance).__name__}, which is not a {base.__name__}")
        if not getattr(instance, "name", ""):
            instance.name = name
        return instance


def _make_register(kind: str, found: dict, mine: dict, refusals: list, plugin: str,
                   package: str, version: str) -> Callable[..., None]:
    base = base_class(kind)
    label = LABELS[kind]

    def refuse(error: PluginError) -> None:
        refusals.append(error)
        raise error

    def register(name: str, factory: Callable[..., Any], description: str = "") -> None:
        if not isinstance(name, str) or not name:
            refuse(PluginError(f"plugin {plugin!r} registered a {label} with an invalid name {name!r}"))
        if isinstance(factory, type) and not issubclass(factory, base):
            refuse(PluginError(f"plugin {plugin!r} registered {label} {name!r} as "
                               f"{factory.__name__}, which does not subclass {base.__name__}"))
        if not callable(factory):
            refuse(PluginError(f"plugin {plugin!r} registered {label} {name!r} with a "
                               "factory that is not callable"))
        if name in found or name in mine:
            first = found.get(name) or mine[name]
            refuse(DuplicateRegistration(
                f"{label} {name!r} is registered twice: by plugin {first.plugin!r} "
                f"(package {first.package}) and by plugin {plugin!r} (package {package}); "
                "uninstall one, or limit loading with MSAGENT_LOAD_PLUGINS"))
        mine[name] = Registration(name, kind, factory, plugin, package, version,
                                  description or _first_doc_line(factory))

    return register


def _hook_failure(kind: str, plugin: str, package: str, exc: Exception,
                  names: tuple[str, ...]) -> Failure:
    hook = HOOKS[kind]
    error = PluginError(
        f"plugin {plugin!r} (package {package}) raised {type(exc).__name__} in its {hook} hook: "
        f"{exc}; its {LABELS[kind]}s are not available. Fix or reinstall {package}, or leave it "
        "out with MSAGENT_LOAD_PLUGINS")
    error.__cause__ = exc
    return Failure(plugin, package, hook, error, names)


def _first_doc_line(factory: Callable[..., Any]) -> str:
    if isinstance(factory, LazyFactory):  # its docstring is LazyFactory's, not the plugin's
        return ""
    return (factory.__doc__ or "").strip().split("\n")[0]


def _core_version() -> str:
    from msagent._version import __version__

    return __version__


def make_plugin_manager(*, load_entrypoints: bool = True) -> PluginManager:
    """A fresh PluginManager with the hookspecs, the built-in plugin and (optionally) the
    installed entry points, filtered by ``MSAGENT_LOAD_PLUGINS``."""
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    pm.register(importlib.import_module(BUILTIN_PLUGIN), name="msagent.builtins")
    if load_entrypoints:
        _load_entrypoints(pm)
    return pm


def _load_entrypoints(pm: PluginManager) -> None:
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group="msagent")}
    pm.installed = {name: _dist_name(ep) for name, ep in found.items()}
    wanted = _wanted(set(found))
    pm.left_out = set(found) - wanted
    for name in sorted(wanted):
        if pm.get_plugin(name) is not None or pm.is_blocked(name):
            continue
        _load_entrypoint(pm, found[name])


def _load_entrypoint(pm: PluginManager, ep: Any) -> None:
    package = _dist_name(ep)
    try:
        pm.register(ep.load(), name=ep.name)
    except Exception as exc:
        error = PluginError(
            f"plugin {ep.name!r} (package {package}) raised {type(exc).__name__} when its entry "
            f"point {ep.value!r} was imported: {exc}; nothing it provides is available. Fix or "
            "reinstall it, or leave it out with MSAGENT_LOAD_PLUGINS")
        error.__cause__ = exc
        pm.failures.append(Failure(ep.name, package, None, error))
        warnings.warn(str(error), PluginWarning, stacklevel=5)
        return
    pm.packages[ep.name] = (package, ep.dist.version if ep.dist else "0+unknown")


def _dist_name(ep: Any) -> str:
    return ep.dist.name if ep.dist is not None else ep.value.partition(":")[0]


def _wanted(installed: set[str]) -> set[str]:
    allowed = os.environ.get("MSAGENT_LOAD_PLUGINS")
    if allowed is None:
        return installed
    names = {n.strip() for n in allowed.split(",") if n.strip()}
    unknown = sorted(names - installed)
    if unknown:
        warnings.warn(
            f"MSAGENT_LOAD_PLUGINS names {', '.join(map(repr, unknown))}, which no installed "
            f"package provides; installed entry points: {', '.join(sorted(installed)) or 'none'}",
            PluginWarning, stacklevel=5)
    return names & installed


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

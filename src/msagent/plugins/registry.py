"""Plugin discovery (pluggy + the ``msagent`` entry-point group) and the registries.

Plugins load once, lazily, never at ``import msagent``: the entry points are imported on the
first list/load call, and each kind's hook is called the first time that kind is listed or
loaded. ``MSAGENT_LOAD_PLUGINS`` (comma-separated entry-point names; empty for none) limits
which installed plugins load; the built-in plugin always loads.

A plugin that raises, in its entry point or in one of its hooks, is reported as a
:class:`~msagent.errors.PluginError` naming the plugin and the hook, as a
:class:`~msagent.errors.PluginWarning` when listing, and does not hide the other plugins.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pluggy

from msagent.errors import DuplicateRegistration, PluginError, PluginNotFound, PluginWarning
from msagent.plugins import hookspecs

KINDS = ("segmenter", "policy", "reward", "trajectory_generator")
#: What users call each kind (the segmenter kind is a *backbone* everywhere users see it).
LABELS = {"segmenter": "backbone", "policy": "policy", "reward": "reward",
          "trajectory_generator": "trajectory generator"}
_ALIASES = {"backbone": "segmenter"}
_HOOKS = {
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
BUILTIN_PLUGIN = "msagent.plugins.builtin"
# The checkout msagent runs from, when it is a clone: its plugins/ folder sits next to src/.
_SOURCE_ROOT = Path(__file__).resolve().parents[3]


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
        kind = _kind(kind)
        with self._lock:
            if kind not in self._by_kind:
                self._by_kind[kind] = self._collect(kind)
        return self._by_kind[kind]

    def failures(self, kind: str) -> list[Failure]:
        """The plugins that raised while providing ``kind``: broken entry points and hooks."""
        kind = _kind(kind)
        self.registrations(kind)
        return [*getattr(self.pm, "failures", ()), *self._failures.get(kind, ())]

    def _collect(self, kind: str) -> dict[str, Registration]:
        found: dict[str, Registration] = {}
        self._failures[kind] = []
        for impl in getattr(self.pm.hook, _HOOKS[kind]).get_hookimpls():
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
        kind = _kind(kind)
        registrations = self.registrations(kind)
        if name in registrations:
            return registrations[name]
        failures = self.failures(kind)
        broken = _failed_provider(kind, name, failures)
        if broken is not None:
            raise PluginError(f"{LABELS[kind]} {name!r} is provided by plugin {broken.plugin!r}, "
                              f"which is broken: {broken.error}") from broken.error.__cause__
        raise PluginNotFound(_not_found_message(kind, name, registrations, self.pm, failures))

    def load(self, kind: str, name: str, **options: Any) -> Any:
        """Build ``name`` with ``options``; the instance is checked against the kind's base."""
        kind = _kind(kind)
        registration = self.get(kind, name)
        instance = registration.factory(**options)
        base = _base_class(kind)
        if not isinstance(instance, base):
            raise PluginError(
                f"{LABELS[kind]} {name!r} from plugin {registration.plugin!r} built a "
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


def _kind(kind: str) -> str:
    kind = _ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}; kinds are {', '.join(KINDS)}")
    return kind


def _make_register(kind: str, found: dict, mine: dict, refusals: list, plugin: str,
                   package: str, version: str) -> Callable[..., None]:
    base = _base_class(kind)
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
    hook = _HOOKS[kind]
    error = PluginError(
        f"plugin {plugin!r} (package {package}) raised {type(exc).__name__} in its {hook} hook: "
        f"{exc}; its {LABELS[kind]}s are not available. Fix or reinstall {package}, or leave it "
        "out with MSAGENT_LOAD_PLUGINS")
    error.__cause__ = exc
    return Failure(plugin, package, hook, error, names)


def _failed_provider(kind: str, name: str, failures: list[Failure]) -> Failure | None:
    provider = KNOWN_PROVIDERS.get((kind, name))
    for failure in failures:
        if name in failure.names or failure.package == provider:
            return failure
        if failure.hook is None and failure.plugin == name:
            return failure
    return None


def _first_doc_line(factory: Callable[..., Any]) -> str:
    if isinstance(factory, LazyFactory):  # its docstring is LazyFactory's, not the plugin's
        return ""
    return (factory.__doc__ or "").strip().split("\n")[0]


def _not_found_message(kind: str, name: str, registrations: dict[str, Registration],
                       pm: pluggy.PluginManager, failures: list[Failure]) -> str:
    available = ", ".join(sorted(registrations)) or "none"
    message = f"no {LABELS[kind]} named {name!r} is installed; available: {available}."
    provider = KNOWN_PROVIDERS.get((kind, name))
    if provider:
        message += " " + _install_hint(name, provider, pm)
    for failure in failures:
        message += (f" Plugin {failure.plugin!r} (package {failure.package}) failed to load and "
                    "may provide it: " + str(failure.error).split(";")[0] + ".")
    if os.environ.get("MSAGENT_LOAD_PLUGINS") is not None and "MSAGENT_LOAD_PLUGINS=" not in message:
        message += " Note: MSAGENT_LOAD_PLUGINS limits which plugins load."
    return message


def _install_hint(name: str, provider: str, pm: pluggy.PluginManager) -> str:
    left_out = sorted(ep for ep in getattr(pm, "left_out", ())
                      if getattr(pm, "installed", {}).get(ep) == provider)
    if left_out:
        return (f"{name!r} is provided by the package {provider}, which is installed but left out "
                f"by MSAGENT_LOAD_PLUGINS={os.environ.get('MSAGENT_LOAD_PLUGINS', '')!r}; add its "
                f"entry point {left_out[0]!r} to it.")
    hint = f"{name!r} is provided by the package {provider}: pip install {provider}"
    folder = _SOURCE_ROOT / "plugins" / provider
    if (folder / "pyproject.toml").is_file():  # running from a clone of the repository
        where = f"./plugins/{provider}" if Path.cwd() == _SOURCE_ROOT else str(folder)
        hint += f" (from this clone: pip install {where})"
    return hint + "."


def _base_class(kind: str) -> type:
    module, attr = _BASES[kind]
    return getattr(importlib.import_module(module), attr)


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

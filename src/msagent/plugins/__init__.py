"""How things are found by name: the hook specifications, the plugin kinds (:mod:`.kinds`),
the registry over entry points (:mod:`.registry`), lazy factories (:mod:`.factories`), the
not-found messages (:mod:`.messages`) and name resolution for the public API (:mod:`.loading`)."""

from msagent.plugins.factories import LazyFactory, factory_class, lazy
from msagent.plugins.kinds import KINDS, LABELS, Failure, Registration
from msagent.plugins.messages import KNOWN_PROVIDERS
from msagent.plugins.registry import (
    BUILTIN_PLUGIN,
    PluginManager,
    Registry,
    get_registry,
    make_plugin_manager,
    set_registry,
)

__all__ = ["BUILTIN_PLUGIN", "KINDS", "KNOWN_PROVIDERS", "LABELS", "Failure", "LazyFactory",
           "PluginManager", "Registration", "Registry", "factory_class", "get_registry", "lazy",
           "make_plugin_manager", "set_registry"]

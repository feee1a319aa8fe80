"""How things are found by name: the hook specifications, the registry over entry points,
lazy factories, and name resolution for the public API (:mod:`.loading`)."""

from msagent.plugins.registry import (
    BUILTIN_PLUGIN,
    KINDS,
    KNOWN_PROVIDERS,
    LABELS,
    Failure,
    LazyFactory,
    PluginManager,
    Registration,
    Registry,
    factory_class,
    get_registry,
    lazy,
    make_plugin_manager,
    set_registry,
)

__all__ = ["BUILTIN_PLUGIN", "KINDS", "KNOWN_PROVIDERS", "LABELS", "Failure", "LazyFactory",
           "PluginManager", "Registration", "Registry", "factory_class", "get_registry", "lazy",
           "make_plugin_manager", "set_registry"]

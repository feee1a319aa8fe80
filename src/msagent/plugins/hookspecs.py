"""Hook specifications: the only contract a plugin implements (docs/writing-a-plugin.md).

Each hook receives a ``register`` callback. Call ``register(name, factory, description="")``
once per thing the plugin provides. ``factory`` is a class (subclassing the kind's base
class) or any callable returning an instance; it is called lazily, only when the name is
loaded, so listing plugins imports no torch. ``register`` raises
:class:`msagent.errors.DuplicateRegistration` when another plugin already registered the
name, and :class:`msagent.errors.PluginError` for an empty name, a factory that is not
callable or a class of the wrong base; these propagate. Any other exception a hook raises
is reported as a :class:`~msagent.errors.PluginError` naming the plugin and the hook (a
:class:`~msagent.errors.PluginWarning` when listing), what that hook registered is dropped,
and the other plugins still load.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("msagent")
hookimpl = pluggy.HookimplMarker("msagent")


@hookspec
def msagent_register_segmenters(register):
    """Register backbones: promptable segmenters (subclasses of :class:`msagent.Segmenter`).

    Called once, the first time a backbone is listed or loaded
    (``msagent.list_backbones()``, ``msagent.load_backbone(name)``, ``--backbone``).

    :param register: ``register(name, factory, description="")``; ``factory(**options)``
        returns a :class:`msagent.Segmenter`.
    """


@hookspec
def msagent_register_policies(register):
    """Register policies (subclasses of :class:`msagent.Policy`).

    Called once, the first time a policy is listed or loaded.

    :param register: ``register(name, factory, description="")``; ``factory(**options)``
        returns a :class:`msagent.Policy`.
    """


@hookspec
def msagent_register_rewards(register):
    """Register trajectory rewards (subclasses of :class:`msagent.Reward`).

    Called once, the first time a reward is listed or loaded.

    :param register: ``register(name, factory, description="")``; ``factory(**options)``
        returns a :class:`msagent.Reward`.
    """


@hookspec
def msagent_register_trajectory_generators(register):
    """Register expert trajectory generators (subclasses of :class:`msagent.TrajectoryGenerator`).

    Called once, the first time a trajectory generator is listed or loaded.

    :param register: ``register(name, factory, description="")``; ``factory(**options)``
        returns a :class:`msagent.TrajectoryGenerator`.
    """

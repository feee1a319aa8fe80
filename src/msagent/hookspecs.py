"""Hook specifications: the only contract a plugin implements.

Each hook receives a ``register`` callback. Call ``register(name, factory, description="")``
once per thing the plugin provides. ``factory`` is a class (subclassing the kind's base
class) or any callable returning an instance; it is called lazily, only when the name is
loaded, so listing plugins imports no torch. ``register`` raises
:class:`msagent.errors.DuplicateRegistration` when another plugin already registered the
name, and :class:`msagent.errors.PluginError` for a class of the wrong base.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("msagent")
hookimpl = pluggy.HookimplMarker("msagent")


@hookspec
def msagent_register_segmenters(register):
    """Register segmentation backbones (subclasses of :class:`msagent.Segmenter`).

    Called once, the first time a segmenter is listed or loaded.

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

    Called once, the first time a generator is listed or loaded.

    :param register: ``register(name, factory, description="")``; ``factory(**options)``
        returns a :class:`msagent.TrajectoryGenerator`.
    """

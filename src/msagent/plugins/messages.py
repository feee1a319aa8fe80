"""What a missing name's error says: what is available, which package provides the name
(:data:`KNOWN_PROVIDERS`) and how to install it (from this clone when msagent runs from
one), which broken plugin may provide it, and whether ``MSAGENT_LOAD_PLUGINS`` left it out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from msagent.plugins.kinds import LABELS, Failure, Registration

if TYPE_CHECKING:
    import pluggy

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
# The checkout msagent runs from, when it is a clone: its plugins/ folder sits next to src/.
_SOURCE_ROOT = Path(__file__).resolve().parents[3]


def failed_provider(kind: str, name: str, failures: list[Failure]) -> Failure | None:
    """The broken plugin that would have provided ``name``, if one did."""
    provider = KNOWN_PROVIDERS.get((kind, name))
    for failure in failures:
        if name in failure.names or failure.package == provider:
            return failure
        if failure.hook is None and failure.plugin == name:
            return failure
    return None


def not_found_message(kind: str, name: str, registrations: dict[str, Registration],
                      pm: pluggy.PluginManager, failures: list[Failure]) -> str:
    """Why ``name`` is not found, for :class:`~msagent.errors.PluginNotFound`."""
    available = ", ".join(sorted(registrations)) or "none"
    message = f"no {LABELS[kind]} named {name!r} is installed; available: {available}."
    provider = KNOWN_PROVIDERS.get((kind, name))
    if provider:
        message += " " + install_hint(name, provider, pm)
    for failure in failures:
        message += (f" Plugin {failure.plugin!r} (package {failure.package}) failed to load and "
                    "may provide it: " + str(failure.error).split(";")[0] + ".")
    if os.environ.get("MSAGENT_LOAD_PLUGINS") is not None and "MSAGENT_LOAD_PLUGINS=" not in message:
        message += " Note: MSAGENT_LOAD_PLUGINS limits which plugins load."
    return message


def install_hint(name: str, provider: str, pm: pluggy.PluginManager) -> str:
    """How to get ``provider``: add its entry point to ``MSAGENT_LOAD_PLUGINS`` when it is
    installed but left out, else ``pip install`` (from this clone's plugins/ folder in a clone)."""
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

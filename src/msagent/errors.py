"""One exception hierarchy for everything msagent raises on purpose.

Every message says what was wrong and what to do about it.
"""

from __future__ import annotations


class MsAgentError(Exception):
    """Base class of all msagent errors."""


class PluginError(MsAgentError):
    """A plugin is broken: bad registration, duplicate name, wrong base class, or it raised
    in its entry point or a hook (the message names the plugin and the hook)."""


class DuplicateRegistration(PluginError):
    """Two plugins registered the same name for the same kind."""


class PluginWarning(UserWarning):
    """A plugin failed to load or a plugin setting names nothing; the others still load."""


class PluginNotFound(MsAgentError, LookupError):
    """No installed plugin provides the requested name.

    A ``LookupError`` subclass (not ``KeyError``, whose ``str()`` quotes the message).
    """


class WeightsNotFound(MsAgentError, FileNotFoundError):
    """Model weights could not be resolved from a path, an environment variable or the HF cache."""


class WeightsMismatch(MsAgentError):
    """Weights were found but are not the expected file (checksum, keys or shapes differ)."""


class InvalidInput(MsAgentError, ValueError):
    """User input that cannot be used as given."""


class InvalidImage(InvalidInput):
    """An image that is unreadable, empty, non-finite, of the wrong shape or too large."""


class InvalidMask(InvalidInput):
    """A mask (ground truth) that is empty, of the wrong size or not binary-convertible."""


class InvalidTarget(InvalidInput):
    """A target description that is empty or not text."""


class PolicyOutputError(MsAgentError, ValueError):
    """A policy's text has no valid tool call (no call, bad JSON, unknown tool, bad arguments)."""


class PolicyError(MsAgentError):
    """A policy failed to answer at all (API error, timeout, missing model)."""


class SegmenterError(MsAgentError):
    """A segmenter failed or was misused (e.g. decode before encode, wrong prompt shapes)."""


class OutputError(MsAgentError, OSError):
    """An output could not be written (disk full, read-only folder, no permission); the
    message names the path and the remedy. An ``OSError`` too, with its ``errno``."""

    def __str__(self) -> str:  # the message, not OSError's "[Errno N] strerror: filename"
        return str(self.args[0]) if self.args else super().__str__()


class SegmentationFailed(MsAgentError):
    """An episode ended without any mask (the policy failed, never made a valid tool call, or
    stopped first). ``trajectory`` holds every reply and error; ``stop_reason`` says why."""

    def __init__(self, message: str, trajectory: object = None) -> None:
        super().__init__(message)
        self.trajectory = trajectory

    @property
    def stop_reason(self) -> str:
        return getattr(self.trajectory, "stop_reason", "")

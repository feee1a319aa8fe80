"""The one window rule for volumes: which (width, level) maps a volume to 8-bit display.

:func:`choose_window` is what ``msagent segment`` on a volume, the server's volume uploads and
the NIfTI dataset reader all call: a window the user gave (a :data:`CT_WINDOWS` preset or
"W/L"; "auto" or None means none), else a CT series' stored DICOM window, else the volume's
0.5th–99.5th percentiles. MR and other modalities never use a stored window (their
WindowWidth/WindowCenter are scanner display hints, not tissue windows).
"""

from __future__ import annotations

import attrs

from msagent.io.dicom import default_window
from msagent.io.volume import Volume, parse_window, percentile_window


@attrs.frozen
class Window:
    """A chosen window and where it came from: ``source`` is "given" (a preset or W/L),
    "dicom" (the CT series' stored window) or "percentile"."""

    width: float
    level: float
    source: str

    @property
    def pair(self) -> tuple[float, float]:
        """(width, level), as :func:`~msagent.io.apply_window` takes them."""
        return self.width, self.level


def choose_window(volume: Volume, window: str | tuple[float, float] | None = None) -> Window:
    """The window for ``volume``: ``window`` when given, else the stored CT window, else the
    volume's percentiles (the same mapping for every slice)."""
    if window is not None and not (isinstance(window, str) and window in ("auto", "")):
        width, level = parse_window(window)
        return Window(float(width), float(level), "given")
    stored = default_window(volume) if volume.modality == "CT" else None
    if stored is not None:
        return Window(float(stored[0]), float(stored[1]), "dicom")
    width, level = percentile_window(volume.data)
    return Window(float(width), float(level), "percentile")


__all__ = ["Window", "choose_window"]

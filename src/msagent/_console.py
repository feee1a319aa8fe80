"""What a person at a terminal sees: status lines while they wait (weights loading, an image
encoding) and one line per turn (what ``msagent segment`` and the demo print).

Shown on stderr only when stderr is a terminal (and ``$MSAGENT_QUIET`` is unset); silent in
pipes, logs, notebooks' captured output and tests. Long jobs over many cases use tqdm bars
instead (``msagent eval``, ``generate``, ``export``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from msagent.types import Step, Trajectory


def wanted(enabled: bool | None = None, stream: IO[str] | None = None) -> bool:
    """``enabled`` when given, else whether ``stream`` (stderr) is a terminal and
    ``$MSAGENT_QUIET`` is unset."""
    if enabled is not None:
        return bool(enabled)
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("MSAGENT_QUIET")


class Status:
    """``with status.step("loading backbone medsam2"):`` writes the text, then ``done in
    3.2 s`` (or ``failed``) on the same line; :meth:`line` writes one line."""

    def __init__(self, enabled: bool | None = None, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = wanted(enabled, self.stream)

    def line(self, text: str) -> None:
        if self.enabled:
            self.stream.write(f"{text}\n")
            self.stream.flush()

    @contextmanager
    def step(self, text: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self.stream.write(f"{text} … ")
        self.stream.flush()
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            self.stream.write("failed\n")
            self.stream.flush()
            raise
        self.stream.write(f"done in {time.perf_counter() - start:.1f} s\n")
        self.stream.flush()


def live() -> bool:
    """Both streams on the terminal with status shown: the turns were already shown live,
    so a command prints only its summary line to stdout."""
    return wanted() and bool(getattr(sys.stdout, "isatty", None) and sys.stdout.isatty())


def turn_text(step: Step) -> str:
    """One line for one reply: its tool call, IoU/Dice or score, and error."""
    kind = step.action.kind if step.action else "invalid"
    line = f"turn {step.index + 1}: {kind:<12}"
    if step.action is not None and step.action.arguments:
        line += " " + json.dumps(dict(step.action.arguments))
    if step.iou is not None:
        line += f"  IoU {step.iou:.3f}  Dice {step.dice:.3f}"
    elif step.score is not None:
        line += f"  score {step.score:.3f}"
    if step.error:
        line += f"  ({step.error})"
    return line


def turn_lines(trajectory: Trajectory) -> list[str]:
    """One line per reply (:func:`turn_text`), then how it stopped."""
    lines = [turn_text(step) for step in trajectory.steps]
    lines.append(f"stopped: {trajectory.stop_reason}; {trajectory.turns} mask-producing call(s)")
    return lines


__all__ = ["Status", "live", "turn_lines", "turn_text", "wanted"]

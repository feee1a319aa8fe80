"""A trajectory as text, one line per turn: what ``msagent segment`` and the demo print."""

from __future__ import annotations

import json

from msagent.types import Step, Trajectory


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

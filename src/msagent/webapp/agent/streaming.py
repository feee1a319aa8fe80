"""Steps as the JSON turns the page streams (``Agent.run(on_step=...)`` hands each one on)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from msagent import protocol
from msagent.types import BBox, Point, Prompts, Step, encode_mask


def prompt_json(prompt: BBox | Point | None) -> dict[str, Any] | None:
    if isinstance(prompt, BBox):
        return {"box": {"x1": prompt.x1, "y1": prompt.y1, "x2": prompt.x2, "y2": prompt.y2}}
    if isinstance(prompt, Point):
        return {"point": {"x": prompt.x, "y": prompt.y, "label": prompt.label}}
    return None


def prompts_json(prompts: Prompts) -> dict[str, Any]:
    return {"box": None if prompts.box is None else cast(dict[str, Any], prompt_json(prompts.box))["box"],
            "points": [cast(dict[str, Any], prompt_json(p))["point"] for p in prompts.points]}


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


class TurnEncoder:
    """Step → JSON turn: the action, the pixel prompt it added and the prompts in force (as the
    episode core recorded them on the step), the mask, score and IoU/Dice."""

    def encode(self, step: Step) -> dict[str, Any]:
        action = step.action
        return {
            "type": "turn", "index": step.index, "raw_text": step.raw_text,
            "rationale": protocol.rationale(step.raw_text),
            "action": None if action is None else {"kind": action.kind,
                                                   "arguments": dict(action.arguments)},
            "error": step.error, "executed": step.executed,
            "prompt": prompt_json(step.prompt) if step.executed else None,
            "prompts": prompts_json(step.prompts) if step.executed and step.prompts else None,
            "mask": None if step.mask is None else encode_mask(step.mask),
            "area": None if step.mask is None else int(np.count_nonzero(step.mask)),
            "score": _finite(step.score), "iou": _finite(step.iou), "dice": _finite(step.dice),
            "usage": {k: v for k, v in step.usage.items() if isinstance(v, (int, float, str))},
        }



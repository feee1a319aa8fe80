"""The released checkpoint's conversation strings, kept as data.

Source: the upstream RL stage (``RL-verl/recipe/medsam_agent/medsam_dataset.py`` and
``medsam_iterative_agent_loop.py``), the format the released checkpoint saw last. The tool
schemas are embedded in the system prompt as one ``json.dumps`` line each; they are not
passed through a chat template's ``tools=``. ``tests/core/test_protocol.py`` pins the rendered
strings by SHA-256.
"""

from __future__ import annotations

import json

TOOL_SCHEMAS: list[dict] = [
    {"type": "function", "function": {
        "name": "add_bbox",
        "description": "Add a bounding box to initialize or refine the segmentation.",
        "parameters": {"type": "object", "properties": {"bbox_2d": {
            "type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4,
            "description": "2D bounding box in [x1, y1, x2, y2] format"}},
            "required": ["bbox_2d"]}}},
    {"type": "function", "function": {
        "name": "add_point",
        "description": "Add a point to refine the mask (positive to include areas, negative to "
                       "exclude areas).",
        "parameters": {"type": "object", "properties": {
            "point_2d": {"type": "array", "items": {"type": "integer"}, "minItems": 2,
                         "maxItems": 2, "description": "2D coordinate point in [x, y] format, "
                                                       "with x and y in range [0, 999]"},
            "point_type": {"type": "string", "enum": ["positive", "negative"],
                           "description": "Type of point: 'positive' to expand mask, "
                                          "'negative' to refine mask"}},
            "required": ["point_2d", "point_type"]}}},
    {"type": "function", "function": {
        "name": "stop_action",
        "description": "Stop the refinement process when the mask accurately covers the target "
                       "object.",
        "parameters": {"type": "object", "properties": {}, "required": []}}},
]

SYSTEM_PROMPT = (
    "You are a professional segmentation annotator specializing in mask creation and refinement. "
    "Your core task is to segment the USER-SPECIFIED TARGET REGION from the provided image. "
    "No preliminary mask is available\u2014you must first create an initial mask using the tool, "
    "then iteratively refine it to achieve pixel-level accuracy. "
    "The mask will be displayed as a semi-transparent green overlay; your goal is to ensure it "
    "exactly covers the entire target region and excludes all non-target areas (e.g., background, "
    "adjacent objects).\n\n"
    "# Tools\n\n"
    "You must call one function to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n"
    + "\n".join(json.dumps(tool) for tool in TOOL_SCHEMAS) + "\n"
    "</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    "<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>\n\n"
    "Only use the provided functions to complete your task. Do not invent or assume any other "
    "functions. Carefully consider the current mask state before each action."
)

#: First user message text, after the image. ``{target}`` is the target description.
FIRST_USER_TEXT = ("The target to be segmented is: {target}.\n"
                   "Now, please analyze the original image, then decide your first action.")

#: The first user message when the episode refines an existing mask (msagent's prompt variant:
#: the released checkpoint never saw it). The image shows that mask's overlay.
FIRST_USER_TEXT_REFINE = ("The target to be segmented is: {target}.\n"
                          "The image shows an existing segmentation of it as a green overlay. "
                          "Now, please analyze the image and the overlay, then decide your first "
                          "action to correct the mask. If it is already accurate, you can call "
                          "'stop_action' to finish.")

#: User message text after each executed action, after the overlay image.
FOLLOW_UP_TEXT = ("Here is the updated mask after your previous action.\n"
                  "Based on this, what is your next action? "
                  "If the mask is now accurate, you can call 'stop_action' to finish.")

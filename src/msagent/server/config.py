"""Limits and tuning of the segmentation server (one frozen value, built by the CLI or tests)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from msagent.io import DEFAULT_MAX_PIXELS
from msagent.io.limits import DEFAULT_SERVER_MAX_VOXELS

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@attrs.frozen
class ServerConfig:
    """What ``msagent serve`` enforces.

    ``api_key``: when set, every API route (all but ``/health``, the OpenAPI pages and the
    static UI) needs ``Authorization: Bearer <api_key>``.
    ``max_sessions``: live sessions at once (idle ones are expired first, then 429).
    ``idle_timeout_s``: a session untouched this long is deleted.
    ``max_upload_bytes``: the largest request body (an image inline in JSON is base64, so
    about 3/4 of this); ``max_pixels``: the largest decoded image (width × height);
    ``max_voxels``: the largest uploaded volume, checked from its headers before decoding.
    ``request_timeout_s``: the longest an encode or decode may take before 503.
    ``batch_window_ms``: how long a decode waits for others on the same image so they run
    as one batch (0 disables micro-batching; None: 2 ms when the backbone runs on CUDA, off on
    CPU, where a batch is no cheaper than its decodes); ``max_batch``: the largest batch.
    ``max_images``/``max_image_bytes``: uploaded images kept by content hash (least recently
    used go first; a session keeps working after its image is dropped).
    ``max_points``: clicks in force in one session (more are refused with 422: each decode
    grows with them).
    ``policy_options``: the operator's options per policy name (endpoints, keys, models,
    devices); an API client may add only what the policy declares in ``client_options``.
    ``open_server``: the operator's explicit choice to serve a non-loopback address without an
    API key (``msagent serve --open``); refused otherwise.

    Volume sessions (the web app's 3-D sessions, :mod:`msagent.volume.session`):
    ``max_volume_sessions`` in all and ``volume_sessions_per_client`` per client (a client's
    new session past its quota closes its own least recently used idle one; past the total:
    429), ``volume_sessions_per_minute`` new sessions per client (429 past it); they expire
    after ``idle_timeout_s`` too. ``max_propagations``: propagations running at once (429 past
    it); ``propagation_timeout_s``: a propagation stops between slices at this age (503, the
    session as before it). ``volume_embeddings_in_memory``: slice embeddings in memory per
    session; ``max_spill_bytes``: bytes of spilled embeddings on disk, all sessions together
    (each session at most its share, ``max_spill_bytes / max_volume_sessions``; past them an
    embedding is forgotten and encoded again if needed). ``max_volumes``: uploaded volumes in
    memory, those that sessions hold included (429 past it when every one is held).
    """

    api_key: str | None = None
    max_sessions: int = attrs.field(default=256, validator=attrs.validators.ge(1))
    idle_timeout_s: float = attrs.field(default=3600.0, validator=attrs.validators.gt(0))
    max_upload_bytes: int = attrs.field(default=64 * 2**20, validator=attrs.validators.ge(1024))
    max_pixels: int = attrs.field(default=DEFAULT_MAX_PIXELS, validator=attrs.validators.ge(1))
    max_voxels: int = attrs.field(default=DEFAULT_SERVER_MAX_VOXELS, validator=attrs.validators.ge(1))
    request_timeout_s: float = attrs.field(default=120.0, validator=attrs.validators.gt(0))
    batch_window_ms: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
    max_batch: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    max_images: int = attrs.field(default=512, validator=attrs.validators.ge(1))
    max_image_bytes: int = attrs.field(default=4 * 2**30, validator=attrs.validators.ge(1))
    max_points: int = attrs.field(default=256, validator=attrs.validators.ge(1))
    encode_workers: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    decode_workers: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    policy_options: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, converter=lambda m: {k: dict(v) for k, v in dict(m).items()})
    max_volume_sessions: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    volume_sessions_per_client: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    volume_sessions_per_minute: float = attrs.field(default=12.0, validator=attrs.validators.gt(0))
    max_propagations: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    propagation_timeout_s: float = attrs.field(default=600.0, validator=attrs.validators.gt(0))
    volume_embeddings_in_memory: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    max_spill_bytes: int = attrs.field(default=4 * 2**30, validator=attrs.validators.ge(0))
    max_volumes: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    open_server: bool = False
    compat: bool = True  # also serve upstream MedSAM-Agent's /session/* and /predict routes
    static_dir: str | None = None  # the web app's page; default msagent/webapp/static, at /ui

    def batch_window_s(self, device: str) -> float:
        """The micro-batching window in seconds for a backbone on ``device`` (0: off)."""
        if self.max_batch <= 1:
            return 0.0
        if self.batch_window_ms is None:
            return 0.002 if str(device).startswith("cuda") else 0.0
        return self.batch_window_ms / 1000

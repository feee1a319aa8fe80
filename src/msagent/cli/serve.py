"""``msagent serve --backbone NAME``: the segmentation session server (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import logging
import os

log = logging.getLogger("msagent.serve")
ENV_API_KEY = "MSAGENT_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", help="registered backbone (default $MSAGENT_BACKBONE)")
    parser.add_argument("--backbone-option", action="append", default=[], metavar="KEY=VALUE",
                        help="option for the backbone (repeatable), e.g. device=cuda")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default loopback; 0.0.0.0 for all interfaces)")
    parser.add_argument("--port", type=int, default=8265)
    parser.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' (default ${ENV_API_KEY})")
    parser.add_argument("--open", action="store_true",
                        help="serve a non-loopback --host without an API key: anyone who can reach "
                        "the port may use the server (refused without this flag)")
    parser.add_argument("--policy-option", action="append", default=[], metavar="POLICY:KEY=VALUE",
                        help="the operator's option for a policy the web page runs (repeatable), "
                        "e.g. gpt:model=gpt-4o or gpt:base_url=http://127.0.0.1:30000/v1; API "
                        "clients may set only the options a policy declares safe")
    parser.add_argument("--max-sessions", type=int, default=256)
    parser.add_argument("--idle-timeout", type=float, default=3600.0, metavar="SECONDS",
                        help="delete sessions idle this long (default 3600)")
    parser.add_argument("--max-upload-mb", type=float, default=64.0, help="largest request body")
    parser.add_argument("--max-pixels", type=int, help="largest image, width × height "
                        "(default $MSAGENT_MAX_PIXELS or 64 megapixels)")
    parser.add_argument("--max-voxels", type=int, help="largest uploaded volume in voxels, "
                        "checked from its headers (default $MSAGENT_MAX_VOXELS or 2**27 = 134,217,728)")
    parser.add_argument("--request-timeout", type=float, default=120.0, metavar="SECONDS",
                        help="longest encode or decode before answering 503")
    parser.add_argument("--batch-window-ms", type=float,
                        help="wait this long to batch decodes on one image (0: no batching; "
                        "default 2 on CUDA, off on CPU)")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-points", type=int, default=256,
                        help="clicks in force in one session or decode (more: 422)")
    parser.add_argument("--cache-size", type=int, default=64,
                        help="image embeddings kept by the backbone's shared cache")
    parser.add_argument("--decode-workers", type=int, default=4)
    parser.add_argument("--encode-workers", type=int, default=2)
    volumes = parser.add_argument_group("volume sessions (the web app's 3-D sessions)")
    volumes.add_argument("--max-volume-sessions", type=int, default=4,
                         help="volume sessions in all (default 4); past it a new one gets 429")
    volumes.add_argument("--volume-sessions-per-client", type=int, default=2,
                         help="volume sessions per client (default 2): a client's new session "
                         "past it closes that client's least recently used idle one")
    volumes.add_argument("--volume-sessions-per-minute", type=float, default=12.0,
                         help="new volume sessions a client may start a minute (default 12; "
                         "more: 429)")
    volumes.add_argument("--max-propagations", type=int, default=1,
                         help="propagations running at once (default 1; more: 429)")
    volumes.add_argument("--propagation-timeout", type=float, default=600.0, metavar="SECONDS",
                         help="a propagation stops between slices after this long (default "
                         "600; 503, the session as before it)")
    volumes.add_argument("--volume-embeddings-in-memory", type=int, default=32,
                         help="slice embeddings each volume session keeps in memory (default "
                         "32; older ones spill to disk)")
    volumes.add_argument("--max-spill-mb", type=float, default=4096.0,
                         help="disk for spilled slice embeddings, all sessions together "
                         "(default 4096; each session at most its share)")
    volumes.add_argument("--max-volumes", type=int, default=4,
                         help="uploaded volumes in memory, those sessions hold included "
                         "(default 4)")
    parser.add_argument("--no-compat", action="store_true",
                        help="do not serve upstream MedSAM-Agent's /session/* and /predict routes")
    parser.add_argument("--web", action=argparse.BooleanOptionalAction, default=None,
                        help="also serve the web page's app (agent runs, volumes, the page at "
                        "/ui); default: on for a loopback --host, off otherwise")
    parser.add_argument("--static-dir", help="files to serve at /ui (default: the bundled page)")


def build_config(args: argparse.Namespace):
    """The server's limits from the command line; a bad value is one line, not a traceback."""
    from msagent.errors import InvalidInput

    if not 0 < args.port < 65536:
        raise InvalidInput(f"--port {args.port}: give a port from 1 to 65535")
    try:
        return _config(args)
    except (ValueError, TypeError) as exc:  # our checks and attrs' validators
        raise InvalidInput(f"invalid server option: {exc.args[0] if exc.args else exc}") from None


def _config(args: argparse.Namespace):
    import math

    from msagent.io import max_pixels_limit
    from msagent.io.limits import DEFAULT_SERVER_MAX_VOXELS, max_voxels_limit
    from msagent.server import ServerConfig

    for name in ("idle_timeout", "request_timeout", "max_upload_mb", "propagation_timeout",
                 "volume_sessions_per_minute"):
        value = getattr(args, name)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    return ServerConfig(
        api_key=args.api_key or os.environ.get(ENV_API_KEY) or None,
        max_sessions=args.max_sessions, idle_timeout_s=args.idle_timeout,
        max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=max_pixels_limit(args.max_pixels),
        max_voxels=max_voxels_limit(args.max_voxels, DEFAULT_SERVER_MAX_VOXELS),
        request_timeout_s=args.request_timeout, batch_window_ms=args.batch_window_ms,
        max_batch=args.max_batch, max_points=args.max_points, encode_workers=args.encode_workers,
        decode_workers=args.decode_workers, compat=not args.no_compat, static_dir=args.static_dir,
        max_volume_sessions=args.max_volume_sessions,
        volume_sessions_per_client=args.volume_sessions_per_client,
        volume_sessions_per_minute=args.volume_sessions_per_minute,
        max_propagations=args.max_propagations, propagation_timeout_s=args.propagation_timeout,
        volume_embeddings_in_memory=args.volume_embeddings_in_memory,
        max_spill_bytes=int(_non_negative(args.max_spill_mb, "--max-spill-mb") * 2**20),
        max_volumes=args.max_volumes,
        policy_options=policy_options(args.policy_option), open_server=args.open)


def _non_negative(value: float, flag: str) -> float:
    import math

    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{flag} must be a number >= 0, got {value}")
    return value


def policy_options(pairs: list[str]) -> dict[str, dict]:
    """``POLICY:KEY=VALUE`` pairs as ``{policy: {key: value}}``."""
    from msagent.errors import InvalidInput
    from msagent.options import parse_options

    grouped: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, rest = pair.partition(":")
        if not sep or not name or "=" not in rest:
            raise InvalidInput(f"--policy-option {pair!r} must look like POLICY:KEY=VALUE, "
                               "e.g. gpt:model=gpt-4o")
        grouped.setdefault(name, []).append(rest)
    return {name: parse_options(rest) for name, rest in grouped.items()}


def check_exposure(host: str, config) -> None:
    """Refuse a non-loopback address without an API key unless the operator said ``--open``."""
    from msagent.errors import InvalidInput
    from msagent.server.config import LOOPBACK_HOSTS

    if host in LOOPBACK_HOSTS or config.api_key:
        return
    if not config.open_server:
        raise InvalidInput(
            f"refusing to serve {host} without an API key: anyone who can reach the port could "
            f"use the server. Set --api-key (or ${ENV_API_KEY}), bind 127.0.0.1, or pass --open "
            "to serve it open on purpose")
    log.warning("serving %s without an API key (--open): anyone who can reach this port can "
                "use the server", host)


def load_backbone(name: str | None, options: dict, cache_size: int):
    from msagent._console import Status
    from msagent.errors import InvalidInput
    from msagent.plugins import loading as api

    name = name or os.environ.get("MSAGENT_BACKBONE")
    if not name:
        raise InvalidInput(f"which backbone? --backbone NAME (installed: "
                           f"{', '.join(api.list_backbones())})")
    with Status().step(f"loading backbone {name}"):
        try:
            return api.load_backbone(name, **{"cache_size": cache_size, **options})
        except TypeError as exc:
            if "cache_size" not in str(exc):
                raise
            log.warning("backbone %s takes no cache_size option; using its default cache", name)
            return api.load_backbone(name, **options)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        from msagent.errors import MsAgentError

        raise MsAgentError("msagent serve needs the server extra: "
                           "pip install '.[server]' in a msagent clone") \
            from None
    from msagent.options import parse_options
    from msagent.server import create_app
    from msagent.server.config import LOOPBACK_HOSTS

    config = build_config(args)
    check_exposure(args.host, config)  # before loading the backbone
    segmenter = load_backbone(args.backbone, parse_options(args.backbone_option), args.cache_size)
    web = args.web if args.web is not None else args.host in LOOPBACK_HOSTS
    app = create_app(segmenter, config)
    if web:
        from msagent.webapp import install

        install(app)
    log.info("serving backbone %s on http://%s:%d (OpenAPI at /docs%s)", segmenter.name, args.host,
             args.port, "; the web page at /ui/" if web else "; no web page: --web adds it")
    # SIGTERM/SIGINT: uvicorn waits for running requests at most this long (a running
    # propagation is then cancelled between slices), runs the app's shutdown (which closes
    # every volume session and removes its spill folder), then re-raises the signal
    uvicorn.run(app, host=args.host, port=args.port, log_level="info",
                timeout_keep_alive=30, timeout_graceful_shutdown=10)
    return 0

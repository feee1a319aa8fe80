"""The ``msagent`` command line.

Each subcommand lives in its own module of this package with ``add_arguments(parser)`` and
``run(args) -> int``; modules import heavy dependencies inside ``run`` only, so
``msagent --help`` and ``msagent plugins`` stay fast and torch-free.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

from msagent.errors import MsAgentError

#: subcommand → (module in this package, one-line help)
COMMANDS = {
    "plugins": ("plugins", "list installed backbones, policies, rewards and generators"),
    "segment": ("segment", "segment a target in an image (or a volume, slice by slice)"),
    "generate": ("generate", "generate expert trajectories from datasets"),
    "export": ("export", "export trajectories to SFT/RL training formats"),
    "stats": ("stats", "statistics of a trajectory set"),
    "eval": ("evaluate", "evaluate backbones and policies on datasets"),
    "serve": ("serve", "run the segmentation session server"),
}


def _available() -> dict[str, tuple[str, str]]:
    return {name: spec for name, spec in COMMANDS.items()
            if importlib.util.find_spec(f"{__name__}.{spec[0]}") is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msagent",
                                     description="Agentic interactive medical image segmentation.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in _available().items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(f"{__name__}.{module}")
        mod.add_arguments(command)
        command.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(level=max(level, logging.DEBUG),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except MsAgentError as exc:
        print(f"msagent: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file-system error outside the writers that already explain it
        from msagent.io.atomic import remedy_for

        where = f"{exc.filename}: " if exc.filename else ""
        print(f"msagent: error: {where}{exc.strerror or exc}; {remedy_for(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("msagent: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

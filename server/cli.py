"""The ``eeict`` command: serve, process, inspect."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from processing.gsi import config as gsi_config_command
from processing.gsi import replay as gsi_replay_command
from server import __version__
from server.config import ConfigError, add_arguments, from_args

DESCRIPTION = """\
EEICT Stream: turns CS2 match data into seekable recordings and streams them to WebSocket
clients as msgpack frames (live streams, replay sessions, range fetch, and the old /demodata
JSON protocol).

  eeict serve                       serve the built-in generated match on :8080
  eeict process demos/*.dem --out recordings
  eeict serve --recordings recordings --live NAME --loop
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eeict", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"eeict-stream {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the WebSocket/HTTP server",
        description="Run the server. Every option can also be set by the EEICT_* variable shown.",
    )
    add_arguments(serve)

    process = commands.add_parser(
        "process",
        help="turn CS2 demos into recordings",
        description="Parse CS2 .dem files into .eeict recordings. A bad file is reported and "
        "the others are still processed; the exit status is 1 if any failed.",
    )
    process.add_argument("demos", nargs="+", type=Path, metavar="DEMO")
    process.add_argument(
        "--out", type=Path, default=Path("recordings"), help="default: %(default)s"
    )
    process.add_argument("--force", action="store_true", help="overwrite existing recordings")
    process.add_argument(
        "--shard", metavar="INDEX/COUNT", default=os.environ.get("EEICT_SHARD"),
        help="[EEICT_SHARD] process only this share of the demos (e.g. 0/4), as each pod of an "
        "Indexed Job does; a demo's share follows from its name, so the shares never overlap",
    )  # fmt: skip

    gsi_config = commands.add_parser(
        "gsi-config",
        help="print the cfg file that makes CS2 post its game state here",
        description="Print a gamestate_integration_<name>.cfg for a spectating CS2 client: it "
        "posts the match to this server's POST /gsi/<match> (docs/gsi.md).",
    )
    gsi_config_command.add_arguments(gsi_config)
    gsi_replay = commands.add_parser(
        "gsi-replay",
        help="post a GSI capture to a server, as the game would",
        description="Post a capture (one payload a line, .txt or .zip) to a GSI endpoint one "
        "request at a time, at the capture's pace or faster: for tests, demos and load tests.",
    )
    gsi_replay_command.add_arguments(gsi_replay)

    inspect = commands.add_parser("inspect", help="show a recording's metadata")
    inspect.add_argument("recording", type=Path)
    inspect.add_argument("--json", action="store_true", help="print the metadata as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Files we write (recordings, the cache) stay group-writable: on OpenShift every pod runs
    # as an arbitrary UID in group 0, and the next pod or Job must be able to replace them.
    os.umask(os.umask(0) & ~0o020)
    if args.command == "process":
        from processing.commands import Shard, process

        try:
            shard = None if args.shard is None else Shard.parse(args.shard)
        except ValueError as exc:
            print(f"error: --shard {exc}", file=sys.stderr)
            return 2
        return process(args.demos, args.out, args.force, shard)
    if args.command == "gsi-config":
        return gsi_config_command.run(args)
    if args.command == "gsi-replay":
        return gsi_replay_command.run(args)
    if args.command == "inspect":
        from processing.commands import inspect

        return inspect(args.recording, args.json)
    return serve(args)


def serve(args: argparse.Namespace) -> int:
    from server.app import App

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        config = from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        from uvloop import run
    except ImportError:  # uvloop does not build on Windows
        run = asyncio.run
    run(App(config).run_until_signal())
    return 0


if __name__ == "__main__":
    sys.exit(main())
